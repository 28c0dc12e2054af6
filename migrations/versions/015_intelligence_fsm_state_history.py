"""Create intelligence.fsm_state_history (seed 003) and the trigger that fills it.

trigger_record_fsm_history records a row whenever fsm_state is inserted or its
current_state changes, reading the action from metadata->>'last_action' and the
correlation id from metadata->>'correlation_id' of the new row. duration_ms is the time
spent in the previous state, from the transition timestamps (event times, so real).
partition_key is the day of the transition, not of the write, so a backfill files old
transitions under their own day.


Revision ID: 015
Revises: 014
"""

from alembic import op

revision = "015"
down_revision = "014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE intelligence.fsm_state_history (
            id BIGSERIAL PRIMARY KEY,
            fsm_type VARCHAR(50) NOT NULL,
            entity_id VARCHAR(255) NOT NULL,
            from_state VARCHAR(50),
            to_state VARCHAR(50) NOT NULL,
            action VARCHAR(50) NOT NULL,
            transitioned_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
            duration_ms DOUBLE PRECISION,
            correlation_id VARCHAR(255),
            metadata JSONB,
            success BOOLEAN NOT NULL DEFAULT TRUE,
            error_message TEXT,
            partition_key DATE NOT NULL DEFAULT CURRENT_DATE
        )
        """
    )
    indexes = {
        "idx_fsm_history_entity": "(fsm_type, entity_id, transitioned_at DESC)",
        "idx_fsm_history_correlation": "(correlation_id)",
        "idx_fsm_history_time": "(transitioned_at DESC)",
        "idx_fsm_history_failures": "(fsm_type, success) WHERE success = FALSE",
        "idx_fsm_history_partition": "(partition_key)",
        "idx_fsm_history_metadata": "USING GIN (metadata)",
    }
    for name, definition in indexes.items():
        op.execute(f"CREATE INDEX {name} ON intelligence.fsm_state_history {definition}")
    op.execute(
        """
        CREATE FUNCTION intelligence.record_fsm_state_history() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' OR OLD.current_state IS DISTINCT FROM NEW.current_state THEN
                INSERT INTO intelligence.fsm_state_history (
                    fsm_type, entity_id, from_state, to_state, action,
                    transitioned_at, duration_ms, correlation_id, metadata, success,
                    partition_key
                ) VALUES (
                    NEW.fsm_type,
                    NEW.entity_id,
                    CASE WHEN TG_OP = 'UPDATE' THEN OLD.current_state
                         ELSE NEW.previous_state END,
                    NEW.current_state,
                    COALESCE(NEW.metadata->>'last_action', 'UNKNOWN'),
                    NEW.transition_timestamp,
                    CASE WHEN TG_OP = 'UPDATE' THEN
                        EXTRACT(EPOCH FROM (NEW.transition_timestamp
                                            - OLD.transition_timestamp)) * 1000
                    END,
                    NEW.metadata->>'correlation_id',
                    NEW.metadata,
                    TRUE,
                    (NEW.transition_timestamp AT TIME ZONE 'UTC')::date
                );
            END IF;
            RETURN NEW;
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER trigger_record_fsm_history
            AFTER INSERT OR UPDATE ON intelligence.fsm_state
            FOR EACH ROW EXECUTE FUNCTION intelligence.record_fsm_state_history()
        """
    )
    op.execute(
        """
        CREATE FUNCTION intelligence.cleanup_old_fsm_history(retention_days INTEGER DEFAULT 90)
        RETURNS INTEGER LANGUAGE plpgsql AS $$
        DECLARE
            deleted_count INTEGER;
        BEGIN
            DELETE FROM intelligence.fsm_state_history
            WHERE transitioned_at < NOW() - make_interval(days => retention_days);
            GET DIAGNOSTICS deleted_count = ROW_COUNT;
            RETURN deleted_count;
        END;
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION intelligence.cleanup_old_fsm_history(INTEGER)")
    op.execute("DROP TRIGGER trigger_record_fsm_history ON intelligence.fsm_state")
    op.execute("DROP FUNCTION intelligence.record_fsm_state_history()")
    op.execute("DROP TABLE intelligence.fsm_state_history")
