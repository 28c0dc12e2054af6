"""Create intelligence.workflow_executions (seed 003) with its triggers and functions.

This is the intelligence orchestrator's own table (text workflow ids, status RUNNING /
COMPLETED / FAILED / PAUSED), distinct from the bridge's public.workflow_executions.
duration_ms is computed from started_at and completed_at whenever completed_at is first
known, on insert as well as update: the sink may see a workflow's completion before (or
together with) its start. state_event_at / state_event_id are the sink's ordering pair.


Revision ID: 016
Revises: 015
"""

from alembic import op

revision = "016"
down_revision = "015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE intelligence.workflow_executions (
            workflow_id VARCHAR(255) PRIMARY KEY,
            operation_type VARCHAR(50) NOT NULL,
            entity_id VARCHAR(255) NOT NULL,
            status VARCHAR(50) NOT NULL DEFAULT 'RUNNING',
            current_step VARCHAR(100),
            completed_steps JSONB DEFAULT '[]'::jsonb,
            failed_step VARCHAR(100),
            started_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
            completed_at TIMESTAMP WITH TIME ZONE,
            duration_ms DOUBLE PRECISION,
            correlation_id VARCHAR(255) NOT NULL,
            input_payload JSONB,
            output_results JSONB,
            error_message TEXT,
            retry_count INTEGER DEFAULT 0,
            metadata JSONB,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
            updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
            state_event_at TIMESTAMP WITH TIME ZONE,
            state_event_id UUID
        )
        """
    )
    indexes = {
        "idx_workflow_exec_entity": "(entity_id, started_at DESC)",
        "idx_workflow_exec_status": "(status, started_at DESC)",
        "idx_workflow_exec_operation": "(operation_type, started_at DESC)",
        "idx_workflow_exec_correlation": "(correlation_id)",
        "idx_workflow_exec_time": "(started_at DESC)",
        "idx_workflow_exec_stuck": "(status, updated_at) WHERE status = 'RUNNING'",
        "idx_workflow_exec_metadata": "USING GIN (metadata)",
        "idx_workflow_exec_completed_steps": "USING GIN (completed_steps)",
    }
    for name, definition in indexes.items():
        op.execute(f"CREATE INDEX {name} ON intelligence.workflow_executions {definition}")
    op.execute(
        """
        CREATE TRIGGER trigger_workflow_exec_updated_at
            BEFORE UPDATE ON intelligence.workflow_executions
            FOR EACH ROW EXECUTE FUNCTION intelligence.update_fsm_state_updated_at()
        """
    )
    op.execute(
        """
        CREATE FUNCTION intelligence.calculate_workflow_duration() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.completed_at IS NOT NULL AND NEW.started_at IS NOT NULL
               AND (TG_OP = 'INSERT'
                    OR OLD.completed_at IS DISTINCT FROM NEW.completed_at
                    OR OLD.started_at IS DISTINCT FROM NEW.started_at) THEN
                NEW.duration_ms :=
                    EXTRACT(EPOCH FROM (NEW.completed_at - NEW.started_at)) * 1000;
            END IF;
            RETURN NEW;
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER trigger_calculate_duration
            BEFORE INSERT OR UPDATE ON intelligence.workflow_executions
            FOR EACH ROW EXECUTE FUNCTION intelligence.calculate_workflow_duration()
        """
    )
    op.execute(
        """
        CREATE FUNCTION intelligence.cleanup_completed_workflows(
            retention_days INTEGER DEFAULT 30
        ) RETURNS INTEGER LANGUAGE plpgsql AS $$
        DECLARE
            deleted_count INTEGER;
        BEGIN
            DELETE FROM intelligence.workflow_executions
            WHERE status IN ('COMPLETED', 'FAILED')
              AND completed_at < NOW() - make_interval(days => retention_days);
            GET DIAGNOSTICS deleted_count = ROW_COUNT;
            RETURN deleted_count;
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION intelligence.find_stuck_workflows(timeout_hours INTEGER DEFAULT 24)
        RETURNS TABLE (
            workflow_id VARCHAR(255),
            operation_type VARCHAR(50),
            current_step VARCHAR(100),
            stuck_duration_hours DOUBLE PRECISION
        ) LANGUAGE plpgsql STABLE AS $$
        BEGIN
            RETURN QUERY
            SELECT we.workflow_id,
                   we.operation_type,
                   we.current_step,
                   (EXTRACT(EPOCH FROM (NOW() - we.updated_at)) / 3600)::double precision
            FROM intelligence.workflow_executions AS we
            WHERE we.status = 'RUNNING'
              AND we.updated_at < NOW() - make_interval(hours => timeout_hours)
            ORDER BY we.updated_at ASC;
        END;
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION intelligence.find_stuck_workflows(INTEGER)")
    op.execute("DROP FUNCTION intelligence.cleanup_completed_workflows(INTEGER)")
    op.execute("DROP TABLE intelligence.workflow_executions")
    op.execute("DROP FUNCTION intelligence.calculate_workflow_duration()")
