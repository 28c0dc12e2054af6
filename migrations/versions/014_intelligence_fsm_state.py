"""Create intelligence.fsm_state (seed 003): one row per (fsm_type, entity_id).

Current state of every intelligence FSM (INGESTION, PATTERN_LEARNING, QUALITY_ASSESSMENT)
with its action lease. The updated_at trigger function is shared with
intelligence.workflow_executions (step 016). transition_event_id is the sink's: with
transition_timestamp it orders transitions by (event time, event id).


Revision ID: 014
Revises: 013
"""

from alembic import op

revision = "014"
down_revision = "013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA intelligence")
    op.execute(
        """
        CREATE TABLE intelligence.fsm_state (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            fsm_type VARCHAR(50) NOT NULL,
            entity_id VARCHAR(255) NOT NULL,
            current_state VARCHAR(50) NOT NULL,
            previous_state VARCHAR(50),
            transition_timestamp TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
            metadata JSONB,
            lease_id VARCHAR(255),
            lease_epoch INTEGER,
            lease_expires_at TIMESTAMP WITH TIME ZONE,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
            updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
            transition_event_id UUID,
            CONSTRAINT uq_fsm_entity UNIQUE (fsm_type, entity_id)
        )
        """
    )
    indexes = {
        "idx_fsm_state_fsm_entity": "(fsm_type, entity_id)",
        "idx_fsm_state_current_state": "(current_state)",
        "idx_fsm_state_type_state": "(fsm_type, current_state)",
        "idx_fsm_state_lease": "(lease_id, lease_epoch) WHERE lease_id IS NOT NULL",
        "idx_fsm_state_lease_expiry": ("(lease_expires_at) WHERE lease_expires_at IS NOT NULL"),
        "idx_fsm_state_transition_time": "(transition_timestamp)",
        "idx_fsm_state_metadata": "USING GIN (metadata)",
    }
    for name, definition in indexes.items():
        op.execute(f"CREATE INDEX {name} ON intelligence.fsm_state {definition}")
    op.execute(
        """
        CREATE FUNCTION intelligence.update_fsm_state_updated_at() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := NOW();
            RETURN NEW;
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER trigger_fsm_state_updated_at
            BEFORE UPDATE ON intelligence.fsm_state
            FOR EACH ROW EXECUTE FUNCTION intelligence.update_fsm_state_updated_at()
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE intelligence.fsm_state")
    op.execute("DROP FUNCTION intelligence.update_fsm_state_updated_at()")
    op.execute("DROP SCHEMA intelligence")
