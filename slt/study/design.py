"""The directions of the study's two experiments and how the report groups them."""

from __future__ import annotations

from slt.tasks.fingerspelling import mixtures as fm
from slt.tasks.study import mixtures as em

E1_TASKS = (
    [fm.word_name("ase")]
    + [fm.aug_name(x) for x in em.E1_SEEN]
    + [fm.aug_name(x) for x in em.E1_ZERO_SHOT]
)


E1_GROUPS = {
    "en": [fm.word_name("ase")],
    "S (augmented SLT)": [fm.aug_name(x) for x in em.E1_SEEN],
    "Z (zero-shot)": [fm.aug_name(x) for x in em.E1_ZERO_SHOT],
}


E2_TASKS = [fm.word_name(s) for s in fm.SIGN_TO_SPOKEN]


def label(task: str) -> str:
    """A direction's short name: `en`, `cs (S)`, `ar (Z)`, or the sign language."""
    if task.startswith("fingerspelling_aug_slt_ase_"):
        language = task.rsplit("_", 1)[1]
        return f"{language} ({'S' if language in em.E1_SEEN else 'Z'})"
    if task.startswith("fingerspelling_word_slt_"):
        sign, spoken = task.split("_")[-2:]
        return spoken if sign == "ase" else f"{sign}>{spoken}"  # E1: ASL -> English
    return task
