"""Seeds of the study's arms (`slt.experiment`) summarised: mean and range over seeds
per task and metric, per-group averages, a Markdown report and PNG plots.

Everything here takes plain data: `runs` is `{arm: {seed: {task: metrics}}}`, the
metrics dicts of `MODEL_DIR/eval/metrics.json`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from slt import storage

# (key, column title, scale): rates are shown as percentages.
METRICS = (
    ("chrf", "chrF", 1.0),
    ("exact_match", "exact %", 100.0),
    ("language_accuracy", "lang. acc. %", 100.0),
    ("empty_rate", "empty %", 100.0),
    # Only where computed (`slt.experiment.script_accuracy`, the E1 directions).
    ("script_accuracy", "script acc. %", 100.0),
)
Runs = Mapping[str, Mapping[int, Mapping[str, Mapping[str, Any]]]]


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, min and max of a metric over seeds, and the values themselves."""
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def task_spread(runs: Runs, arm: str, task: str, metric: str) -> dict[str, Any] | None:
    """`spread` of one metric of one task over the seeds of `arm`; None when missing."""
    values = [
        m[task][metric] for m in runs[arm].values() if m.get(task, {}).get(metric) is not None
    ]
    return spread(values) if values else None


def run_group_mean(
    metrics: Mapping[str, Mapping[str, Any]], tasks: Sequence[str], metric: str
) -> float | None:
    """The mean of `metric` over those of `tasks` one run has; None when it has none."""
    values = [
        float(metrics[t][metric]) for t in tasks if metrics.get(t, {}).get(metric) is not None
    ]
    return statistics.fmean(values) if values else None


def group_spread(runs: Runs, arm: str, tasks: Sequence[str], metric: str) -> dict[str, Any] | None:
    """Per seed the mean of `metric` over those of `tasks` it has, then `spread` over
    the seeds; None when no seed has any."""
    per_seed = [run_group_mean(m, tasks, metric) for m in runs[arm].values()]
    per_seed = [v for v in per_seed if v is not None]
    return spread(per_seed) if per_seed else None


def paired_seeds(runs: Runs, arm: str, baseline: str) -> list[int]:
    """The seeds both arms have runs of: the pairs of a paired comparison."""
    return sorted(set(runs.get(arm, {})) & set(runs.get(baseline, {})))


def paired_difference(
    runs: Runs, arm: str, baseline: str, seed: int, tasks: Sequence[str], metric: str
) -> float | None:
    """`arm` minus `baseline` in one seed: each run's mean of `metric` over the `tasks`
    that both runs have it for (a direction only one of them was evaluated on would
    shift the difference); None when they share none."""
    a, b = runs[arm][seed], runs[baseline][seed]
    shared = [
        t
        for t in tasks
        if a.get(t, {}).get(metric) is not None and b.get(t, {}).get(metric) is not None
    ]
    if not shared:
        return None
    return run_group_mean(a, shared, metric) - run_group_mean(b, shared, metric)


# The zero-shot words split by MT overlap (`slt.study.analysis.mt_overlap_breakdown`):
# the word's (English, language) pair is in the MT training split, or it is not.
OVERLAP_PARTS = ("in_mt_train", "not_in_mt_train")
OVERLAP_METRICS = ("language_accuracy", "script_accuracy", "empty_rate", "chrf")
# {arm: {seed: {task: {part: {"num_examples", metric: value}}}}}
Overlap = Mapping[str, Mapping[int, Mapping[str, Mapping[str, Mapping[str, Any]]]]]


def _overlap_seed(
    by_task: Mapping[str, Mapping[str, Mapping[str, Any]]], tasks: Sequence[str], part: str
) -> dict[str, float]:
    """One seed's words of `part` over `tasks`: their number, and each metric averaged
    over the tasks that have such words (as the group tables average directions)."""
    cells = [
        by_task[t][part] for t in tasks if by_task.get(t, {}).get(part, {}).get("num_examples")
    ]
    out = {"num_examples": float(sum(c["num_examples"] for c in cells))}
    for metric in OVERLAP_METRICS:
        values = [float(c[metric]) for c in cells if c.get(metric) is not None]
        if values:
            out[metric] = statistics.fmean(values)
    return out


def overlap_spread(
    overlap: Overlap, arm: str, tasks: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """{part: {"num_examples" or metric: `spread` over seeds}} of the zero-shot words
    of `tasks` (one direction, or a group averaged per seed first)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for part in OVERLAP_PARTS:
        per_seed = [_overlap_seed(by_task, tasks, part) for by_task in overlap[arm].values()]
        per_seed = [s for s in per_seed if s["num_examples"]]
        keys = ("num_examples", *OVERLAP_METRICS)
        out[part] = {
            k: spread([s[k] for s in per_seed if k in s])
            for k in keys
            if any(k in s for s in per_seed)
        }
    return out


def cell(s: Mapping[str, Any] | None, scale: float = 1.0) -> str:
    """`mean [min, max]` on the metric's display scale."""
    if s is None:
        return "-"
    return f"{scale * s['mean']:.1f} [{scale * s['min']:.1f}, {scale * s['max']:.1f}]"


def present_metrics(
    runs: Runs, arms: Sequence[str], keys: Sequence[str] | None = None
) -> list[tuple[str, str, float]]:
    """The `METRICS` (of `keys`, default all) that some run of `arms` has."""
    return [
        (k, t, s)
        for k, t, s in METRICS
        if (keys is None or k in keys)
        and any(k in tm for a in arms for m in runs[a].values() for tm in m.values())
    ]


def comparison_table(
    runs: Runs,
    arms: Sequence[str],
    tasks: Sequence[str],
    labels: Mapping[str, str],
    reference_language_accuracy: Mapping[str, float] | None = None,
    metrics: Sequence[str] | None = None,
) -> str:
    """Markdown: one row per task and metric column per arm, `mean [min, max]`, for the
    `metrics` keys (default all) the runs have; with `reference_language_accuracy`
    (task -> share) a last column of it, in %."""
    columns = present_metrics(runs, arms, metrics)
    header = ["direction"] + [f"{title} {arm}" for _, title, _ in columns for arm in arms]
    if reference_language_accuracy is not None:
        header.append("lang. acc. of references %")
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for task in tasks:
        cells = [labels.get(task, task)]
        for key, _, scale in columns:
            cells += [cell(task_spread(runs, arm, task, key), scale) for arm in arms]
        if reference_language_accuracy is not None:
            value = reference_language_accuracy.get(task)
            cells.append("-" if value is None else f"{100 * value:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def group_table(runs: Runs, arms: Sequence[str], groups: Mapping[str, Sequence[str]]) -> str:
    """Markdown: per arm and group of tasks, each metric averaged over the group's
    tasks per seed, then `mean [min, max]` over seeds."""
    columns = present_metrics(runs, arms)
    header = ["arm", "group", "tasks"] + [title for _, title, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for arm in arms:
        for group, tasks in groups.items():
            present = [t for t in tasks if any(t in m for m in runs[arm].values())]
            cells = [arm, group, str(len(present))]
            cells += [cell(group_spread(runs, arm, tasks, k), scale) for k, _, scale in columns]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(
    runs: Runs,
    arms: Sequence[str],
    tasks: Sequence[str],
    labels: Mapping[str, str],
    path: str,
    title: str,
    metrics: Sequence[str] = ("chrf", "language_accuracy"),
) -> None:
    """One panel per metric; per task a bar per arm at the seeds' mean, the whisker
    spanning their min and max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    titles = {k: (t, s) for k, t, s in METRICS}
    # Wide enough for a readable bar per arm and task (four E1 arms over 15 directions).
    width_in = max(7.0, 0.2 * len(tasks) * max(len(arms), 2) + 3)
    fig, axes = plt.subplots(len(metrics), 1, figsize=(width_in, 3.2 * len(metrics)))
    axes = np.atleast_1d(axes)
    x = np.arange(len(tasks))
    width = 0.8 / max(len(arms), 1)
    for ax, key in zip(axes, metrics):
        name, scale = titles[key]
        for i, arm in enumerate(arms):
            stats = [task_spread(runs, arm, t, key) for t in tasks]
            mean = np.asarray([scale * s["mean"] if s else np.nan for s in stats])
            # Clipped at 0: the mean of equal values can round past their min or max.
            low = np.asarray(
                [max(0.0, scale * (s["mean"] - s["min"])) if s else 0.0 for s in stats]
            )
            high = np.asarray(
                [max(0.0, scale * (s["max"] - s["mean"])) if s else 0.0 for s in stats]
            )
            ax.bar(
                x + (i - (len(arms) - 1) / 2) * width,
                mean,
                width,
                yerr=np.stack([low, high]),
                capsize=2,
                label=arm,
            )
        ax.set_ylabel(name)
        ax.set_ylim(0, 100)
        ax.set_xticks(x, [labels.get(t, t) for t in tasks], fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        # Above the panel, in one row: inside it would cover bars near 100.
        ax.legend(fontsize=7, ncol=max(len(arms), 1), loc="lower right", bbox_to_anchor=(1, 1))
    fig.suptitle(f"{title} (bars: mean over seeds; whiskers: min-max)", fontsize=10)
    fig.tight_layout()
    # matplotlib writes local files only; local_output uploads a gs:// plot whole.
    with storage.local_output(path) as local:
        fig.savefig(local, dpi=100, format="png")
    plt.close(fig)
