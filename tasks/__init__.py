"""seqio task and mixture registries. Importing this package registers them all."""
from tasks import fingerspelling_tasks  # noqa: F401  (registers on import)
