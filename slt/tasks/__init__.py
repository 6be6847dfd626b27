"""seqio task and mixture registries. Importing this package registers them all."""

from __future__ import annotations

import seqio

from slt.data import landmarks
from slt.tasks.fingerspelling import mixtures as fingerspelling_mixtures  # noqa: F401  (registers)
from slt.tasks.fingerspelling import tasks as fingerspelling_tasks  # noqa: F401  (registers)
from slt.tasks.paper import mixtures as paper_mixtures  # noqa: F401  (registers)
from slt.tasks.paper import tasks as paper_tasks  # noqa: F401  (registers)
from slt.tasks.study import mixtures as experiment_mixtures  # noqa: F401  (registers)
from slt.tasks.study import pretraining as experiment_pretraining  # noqa: F401  (registers)

# Landmark preprocessing of every registered task that reads landmark frames, so a
# checkpoint can record it and translation can repeat it.
LANDMARK_CONFIGS = paper_tasks.LANDMARK_CONFIGS


def landmark_config(mixture_or_task_name: str) -> landmarks.LandmarkConfig:
    """The preprocessing shared by all tasks of a mixture (an error if they differ)."""
    names = [t.name for t in seqio.get_subtasks(seqio.get_mixture_or_task(mixture_or_task_name))]
    configs = {LANDMARK_CONFIGS[n]() for n in names if n in LANDMARK_CONFIGS}
    if len(configs) > 1:
        raise ValueError(
            f"{mixture_or_task_name} mixes tasks with different landmark "
            f"preprocessing ({configs}); a model needs one."
        )
    return configs.pop() if configs else landmarks.LandmarkConfig()
