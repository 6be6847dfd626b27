"""Mixing rates and data roots of the registered mixtures, set at run time.

Mixtures are registered at import with rate *functions*; seqio calls them when a
dataset is built, so the settings below (bound by gin through
`slt.mixture_settings`, see `slt/gin_utils.py`) apply to mixtures registered before.

Rates. Each task of a mixture is in a group: `mt` (text-only) or `sign` (SLT,
alignment, augmented SLT). MT examples make up `p_mt` of a mixture that has both
groups (the paper's default 0.5). Within a group, task i gets a share proportional to
`(rate_i * size_i) ** (1 / temperature)`: `rate_i` is `task_rates[name]` (default
1.0) and `size_i` the task's number of training examples with `size_weighted` (the
default) when every task of the group can tell it, 1 when none can (no data yet), and an
error naming the tasks when only some can. Temperature 1 samples in
proportion to size; a large temperature samples the tasks uniformly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence

import seqio

from slt import storage

log = logging.getLogger(__name__)

GROUPS = ("sign", "mt")
TFDS_PREFIX = "tfds:"  # a dataset root read as a TFDS builder directory


@dataclasses.dataclass
class MixtureSettings:
    data_root: str = dataclasses.field(
        default_factory=lambda: os.environ.get("SLT_DATA_DIR", "data")
    )
    # dataset name -> its directory (overrides <data_root>/<name>); a TFDS builder
    # directory as "tfds:<path>".
    dataset_roots: dict[str, str] = dataclasses.field(default_factory=dict)
    # dataset name -> translations file for augmented SLT / multilingual evaluation.
    translations_files: dict[str, str] = dataclasses.field(default_factory=dict)
    p_mt: float = 0.5
    task_rates: dict[str, float] = dataclasses.field(default_factory=dict)
    temperature: float = 1.0
    size_weighted: bool = True


SETTINGS = MixtureSettings()


def configure(
    data_root: str | None = None,
    dataset_roots: Mapping[str, str] | None = None,
    translations_files: Mapping[str, str] | None = None,
    p_mt: float | None = None,
    task_rates: Mapping[str, float] | None = None,
    temperature: float | None = None,
    size_weighted: bool | None = None,
) -> MixtureSettings:
    """Updates the process-wide settings (None leaves a field as it is)."""
    global SETTINGS
    given = {
        "data_root": data_root,
        "dataset_roots": dict(dataset_roots) if dataset_roots else None,
        "translations_files": dict(translations_files) if translations_files else None,
        "p_mt": p_mt,
        "task_rates": dict(task_rates) if task_rates else None,
        "temperature": temperature,
        "size_weighted": size_weighted,
    }
    updates = {k: v for k, v in given.items() if v is not None}
    if "p_mt" in updates and not 0.0 <= updates["p_mt"] <= 1.0:
        raise ValueError(f"p_mt must be in [0, 1], got {updates['p_mt']}.")
    if "temperature" in updates and not updates["temperature"] > 0:
        raise ValueError(f"temperature must be > 0, got {updates['temperature']}.")
    SETTINGS = dataclasses.replace(SETTINGS, **updates)
    return SETTINGS


def dataset_root(name: str) -> str:
    """Where dataset `name` is read from: `dataset_roots[name]` or `<data_root>/<name>`."""
    root = SETTINGS.dataset_roots.get(name) or storage.join(SETTINGS.data_root, name)
    if root.startswith(TFDS_PREFIX):  # a TFDS builder directory: make its path absolute
        return TFDS_PREFIX + storage.absolute(root[len(TFDS_PREFIX) :])
    return storage.absolute(root)


def _size(task: seqio.Task) -> int | None:
    source = getattr(task.source, "source", None)
    if source is None:
        return None
    try:
        return source.num_examples("train")
    except Exception as e:  # noqa: BLE001 - a size is only a hint; missing data fails later
        log.info("no size for %s (%s); it gets rate 1", task.name, e)
        return None


def group_shares(
    members: Sequence[str],
    settings: MixtureSettings | None = None,
    sizes: Mapping[str, int | None] | None = None,
) -> dict[str, float]:
    """Task -> share of its group (summing to 1), from rates, sizes and temperature.

    With `size_weighted`, either every task of the group has a size in `sizes`, or none
    has (then each counts 1); a group where only some do is a ValueError naming them."""
    settings = settings or SETTINGS
    sizes = dict(sizes or {})
    unsized = [m for m in members if not sizes.get(m)]
    if settings.size_weighted and sizes and unsized and len(unsized) < len(members):
        # Uniform rates for the whole group because of one task would quietly change
        # every task's share.
        raise ValueError(
            f"size-weighted mixing rates need the training size of every task of the "
            f"group {list(members)}; {unsized} cannot tell theirs (no prepared data where "
            "they look, or a source without sizes). Prepare their data (docs/tasks.md, "
            "'Pointing mixtures at data'), or set slt.mixture_settings.size_weighted = "
            "False for rates from task_rates alone."
        )
    use_sizes = settings.size_weighted and not unsized
    weights = {
        m: (settings.task_rates.get(m, 1.0) * (sizes[m] if use_sizes else 1.0))
        ** (1.0 / settings.temperature)
        for m in members
    }
    total = sum(weights.values())
    if not total > 0:
        raise ValueError(f"the rates of {list(members)} sum to 0; check task_rates.")
    return {m: w / total for m, w in weights.items()}


def mixture_rates(
    groups: Mapping[str, Sequence[str]],
    settings: MixtureSettings | None = None,
    sizes: Mapping[str, int | None] | None = None,
) -> dict[str, float]:
    """Task -> its rate in a mixture of `groups` ({"sign": [...], "mt": [...]})."""
    settings = settings or SETTINGS
    present = [g for g in GROUPS if groups.get(g)]
    weight = {"sign": 1.0 - settings.p_mt, "mt": settings.p_mt}
    rates = {}
    for group in present:
        share = group_shares(groups[group], settings, sizes)
        group_weight = weight[group] if len(present) > 1 else 1.0
        rates.update({m: group_weight * s for m, s in share.items()})
    return rates


def register_mixture(name: str, groups: Mapping[str, Sequence[str]]) -> None:
    """Registers `name` over the tasks of `groups`, with rates read at run time."""
    members = [m for g in GROUPS for m in groups.get(g, ())]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"{name}: unknown groups {sorted(unknown)}; use {GROUPS}.")
    cache: dict[tuple, dict[str, int | None]] = {}

    def rate(task: seqio.Task) -> float:
        sizes = {}
        if SETTINGS.size_weighted:  # sizes depend on where the data is
            key = (SETTINGS.data_root, tuple(sorted(SETTINGS.dataset_roots.items())))
            if key not in cache:
                cache[key] = {m: _size(seqio.get_mixture_or_task(m)) for m in members}
            sizes = cache[key]
        return mixture_rates(groups, SETTINGS, sizes)[task.name]

    seqio.MixtureRegistry.add(name, [(m, rate) for m in members])


def current_rates(mixture_name: str) -> dict[str, float]:
    """Task -> rate of a registered mixture under the current settings."""
    mixture = seqio.get_mixture_or_task(mixture_name)
    return {t.name: mixture.get_rate(t) for t in mixture.tasks}
