from helpdesk_shared.chassis.migrations import run_alembic_env
from metrics_service.models import metadata

run_alembic_env(metadata)
