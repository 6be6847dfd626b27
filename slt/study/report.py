"""The study's report: the E1 bar, verdicts by a criterion fixed before the runs, tables
of E1 and E2 over seeds, paired per-seed comparisons, Table 10, plots, summary.json."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from slt import storage
from slt.study import analysis, seeds
from slt.study.design import E1_GROUPS, E1_TASKS, E2_TASKS
from slt.study.design import label as _label
from slt.tasks.fingerspelling import mixtures as fm

log = logging.getLogger(__name__)

# The criterion, stated before the runs; docs/results.md quotes CRITERION.
ASL_EN = fm.word_name("ase")  # ASL -> English: E1's bar and E2's measure
E1_BAR_CHRF = 85.0  # below it the E1 arms have not learned to read, so E1 says nothing
Z_GROUP = "Z (zero-shot)"
E1_CLAIM_METRICS = ("language_accuracy", "chrf")  # Z-group means, strictly above
E2_CHRF_TOLERANCE = 1.0  # chrF points of ASL -> English E2 may lose
MIN_PAIRED_SEEDS = 3
HEADLINE_ARMS = {"E1": "e1_b", "E2": "e2_all_signs"}  # equal sign (ASL) examples
CRITERION = (
    f"E1 counts only if every run of every E1 arm reaches ASL -> English (`{ASL_EN}`) "
    f"test chrF >= {E1_BAR_CHRF:g}; if any run is below, every E1 verdict is undecided. "
    "E1 (zero-shot SLT through MT) is reproduced for an arm iff in every seed its Z-group "
    "mean language accuracy and its Z-group mean chrF are both strictly above those of "
    "the baseline (the first E1 arm) in the same seed; otherwise not reproduced. "
    "E2 (more sign languages help ASL) is reproduced for an arm iff in every seed its "
    "ASL -> English chrF is at least the baseline's (the first E2 arm) minus "
    f"{E2_CHRF_TOLERANCE:g} chrF point; otherwise not reproduced. Seeds are paired by "
    f"number and only seeds both arms have count; with fewer than {MIN_PAIRED_SEEDS} the "
    f"verdict is undecided. Headlines: {HEADLINE_ARMS['E1']} (E1) and "
    f"{HEADLINE_ARMS['E2']} (E2) against their baselines."
)
# A loss of exactly the tolerance passes: chrF 7.3 - 8.3 is -1.0000000000000009 in floats.
_FLOAT_SLACK = 1e-9
PAIRED_METRICS = ("chrf", "language_accuracy", "script_accuracy", "empty_rate")
SUMMARY_METRICS = ("chrf", "exact_match", "language_accuracy", "empty_rate", "script_accuracy")
_SCALE = {k: scale for k, _, scale in seeds.METRICS}
_TITLE = {k: title for k, title, _ in seeds.METRICS}


def _e2_label(task: str) -> str:
    return "{}>{}".format(*task.split("_")[-2:])


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [_row(header), "|---" * len(header) + "|"] + [_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def comparison_label(
    steps: Mapping[str, int], arm: str, baseline: str, examples: str = "sign examples"
) -> str:
    """What a comparison holds equal, read from the arms' steps: `equal steps`, or
    `equal sign examples (arm: x2.0 the steps)` for an arm trained longer to see as
    many sign examples as the baseline while part of each batch is other data."""
    a, b = steps.get(arm), steps.get(baseline)
    if a is None or b is None:
        return "steps unknown"
    if a == b:
        return "equal steps"
    return f"equal {examples} ({arm}: x{a / b:.1f} the steps)"


def with_exact_match(output_dir: str, runs: seeds.Runs) -> dict[str, dict[int, dict]]:
    """A copy of `runs` whose `exact_match` is `analysis.exact_match` of each run's test
    predictions (`<arm>/seed_<seed>/eval`), up to surrounding whitespace; a task without
    its predictions file has none, so every exact match has one definition."""
    out: dict[str, dict[int, dict]] = {}
    for arm, by_seed in runs.items():
        for seed, by_task in by_seed.items():
            copied = {t: dict(m) for t, m in by_task.items() if isinstance(m, Mapping)}
            for m in copied.values():
                m.pop("exact_match", None)
            eval_dir = storage.join(output_dir, arm, f"seed_{seed}", "eval")
            for task, share in analysis.exact_match(eval_dir, copied).items():
                copied[task]["exact_match"] = share
            out.setdefault(arm, {})[seed] = copied
    return out


def run_entries(
    runs: seeds.Runs, steps: Mapping[str, int], e1_arms: Sequence[str], e2_arms: Sequence[str]
) -> list[dict[str, Any]]:
    """summary.json's `runs`: one entry per finished run, E1 arms first, seeds in order."""
    others = sorted(a for a in runs if a not in e1_arms and a not in e2_arms)
    entries = []
    for arm in [*e1_arms, *e2_arms, *others]:
        experiment = "E1" if arm in e1_arms else "E2" if arm in e2_arms else None
        # Script accuracy is an E1 measure (`analysis.script_accuracy`).
        keys = SUMMARY_METRICS if experiment == "E1" else SUMMARY_METRICS[:-1]
        for seed in sorted(runs.get(arm, {})):
            by_task = runs[arm][seed]
            metrics = {
                task: {k: by_task[task][k] for k in keys if by_task[task].get(k) is not None}
                for task in sorted(by_task)
            }
            entries.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "steps": steps.get(arm),
                    "experiment": experiment,
                    "metrics": metrics,
                }
            )
    return entries


def paired_rows(
    runs: seeds.Runs,
    arms: Sequence[str],
    groups: Mapping[str, Sequence[str]],
    steps: Mapping[str, int],
    experiment: str,
    examples: str,
) -> list[dict[str, Any]]:
    """Per arm after the first (the baseline), group and shared seed: arm minus
    baseline of each `PAIRED_METRICS` (rates as shares), None where either lacks it."""
    baseline, rows = arms[0], []
    for arm in arms[1:]:
        comparison = comparison_label(steps, arm, baseline, examples)
        for group, tasks in groups.items():
            for seed in seeds.paired_seeds(runs, arm, baseline):
                diff = {
                    m: seeds.paired_difference(runs, arm, baseline, seed, tasks, m)
                    for m in PAIRED_METRICS
                }
                if any(v is not None for v in diff.values()):
                    rows.append(
                        {
                            "experiment": experiment,
                            "arm": arm,
                            "baseline": baseline,
                            "comparison": comparison,
                            "group": group,
                            "seed": seed,
                            "difference": diff,
                        }
                    )
    return rows


def _signed(value: float | None, scale: float) -> str:
    # Two decimals: E2's tolerance is decided at 0.01 chrF (-1.00 passes, -1.01 fails).
    return "-" if value is None else f"{scale * value:+.2f}"


def _paired_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: a row per seed, then the mean [min, max] of each comparison and group."""
    header = ["arm - baseline", "holds equal", "group", "seed"] + [
        f"{_TITLE[m]}{' pts' if _SCALE[m] != 1.0 else ''}" for m in PAIRED_METRICS
    ]
    out, keys = [], list(dict.fromkeys((r["arm"], r["group"]) for r in rows))
    for arm, group in keys:
        mine = [r for r in rows if r["arm"] == arm and r["group"] == group]
        lead = [f"{arm} - {mine[0]['baseline']}", mine[0]["comparison"], group]
        for r in mine:
            diffs = [_signed(r["difference"][m], _SCALE[m]) for m in PAIRED_METRICS]
            out.append([*lead, str(r["seed"]), *diffs])
        spreads = []
        for m in PAIRED_METRICS:
            values = [r["difference"][m] for r in mine if r["difference"][m] is not None]
            spreads.append(seeds.cell(seeds.spread(values) if values else None, _SCALE[m]))
        out.append([*lead, "mean [min, max]", *spreads])
    return _table(header, out)


def table10(overlap: seeds.Overlap, arms: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The paper's Table 10 here: per E1 arm, per Z direction and for the Z group, each
    metric of the zero-shot words split by MT overlap (`seeds.overlap_spread`)."""
    z, out = E1_GROUPS[Z_GROUP], {}
    for arm in arms:
        if not overlap.get(arm):
            continue
        tasks = [t for t in z if any(t in by_task for by_task in overlap[arm].values())]
        if tasks:
            directions = {t: [t] for t in tasks} | {Z_GROUP: list(z)}
            out[arm] = {d: seeds.overlap_spread(overlap, arm, ts) for d, ts in directions.items()}
    return out


def _table10_markdown(t10: Mapping[str, Mapping[str, Any]]) -> str:
    parts = seeds.OVERLAP_PARTS
    header = ["arm", "direction", "words in / not"] + [
        f"{_TITLE[m]} {p}" for m in seeds.OVERLAP_METRICS for p in ("in", "not")
    ]
    rows = []
    for arm, by_direction in t10.items():
        for direction, split in by_direction.items():
            n = [split[p].get("num_examples") for p in parts]
            cells = [arm, _label(direction), " / ".join(f"{s['mean']:g}" if s else "0" for s in n)]
            cells += [
                seeds.cell(split[p].get(m), _SCALE[m]) for m in seeds.OVERLAP_METRICS for p in parts
            ]
            rows.append(cells)
    return _table(header, rows)


def e1_bar(runs: seeds.Runs, arms: Sequence[str]) -> dict[str, Any]:
    """ASL -> English test chrF of every run of the E1 `arms`, and whether all reach
    `E1_BAR_CHRF`; `below` names the runs that do not (a run without it is below)."""
    entries = [
        {"arm": a, "seed": s, "chrf": runs[a][s].get(ASL_EN, {}).get("chrf")}
        for a in arms
        for s in sorted(runs.get(a, {}))
    ]
    below = [
        f"{e['arm']}/seed_{e['seed']} " + ("missing" if e["chrf"] is None else f"{e['chrf']:.1f}")
        for e in entries
        if e["chrf"] is None or e["chrf"] < E1_BAR_CHRF
    ]
    return {
        "task": ASL_EN,
        "min_chrf": E1_BAR_CHRF,
        "met": bool(entries) and not below,
        "below": below,
        "runs": entries,
    }


def _bar_table(runs: seeds.Runs, arms: Sequence[str], steps: Mapping[str, int]) -> str:
    """Markdown: a row per E1 arm, its ASL -> English chrF per seed, whether all pass."""
    all_seeds = sorted({s for a in arms for s in runs[a]})
    header = ["arm", "steps", *(f"seed {s}" for s in all_seeds), f"all >= {E1_BAR_CHRF:g}"]
    rows = []
    for arm in arms:
        chrf = {s: m.get(ASL_EN, {}).get("chrf") for s, m in runs[arm].items()}
        met = all(v is not None and v >= E1_BAR_CHRF for v in chrf.values())
        cells = ["-" if chrf.get(s) is None else f"{chrf[s]:.1f}" for s in all_seeds]
        rows.append([arm, str(steps.get(arm, "-")), *cells, "yes" if met else "no"])
    return _table(header, rows)


def _decide(passed: Mapping[int, bool]) -> str:
    if len(passed) < MIN_PAIRED_SEEDS:
        return f"undecided (only {len(passed)} seeds)"
    return "reproduced" if all(passed.values()) else "not reproduced"


def _verdict(
    experiment: str,
    arm: str,
    baseline: str,
    comparison: str,
    passed: Mapping[int, bool],
    verdict: str,
) -> dict[str, Any]:
    return {
        "experiment": experiment,
        "arm": arm,
        "baseline": baseline,
        "comparison": comparison,
        "headline": arm == HEADLINE_ARMS[experiment],
        "verdict": verdict,
        "seeds": [{"seed": s, "passed": passed[s]} for s in sorted(passed)],
    }


def e1_verdicts(
    runs: seeds.Runs, arms: Sequence[str], steps: Mapping[str, int], bar: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The E1 claim for each arm with runs after the first (the baseline), by
    `CRITERION`; a seed passes when both `E1_CLAIM_METRICS` Z-group differences are > 0."""
    baseline, z, out = arms[0], E1_GROUPS[Z_GROUP], []
    for arm in [a for a in arms[1:] if runs.get(a)]:
        passed = {}
        for seed in seeds.paired_seeds(runs, arm, baseline):
            diffs = [
                seeds.paired_difference(runs, arm, baseline, seed, z, m) for m in E1_CLAIM_METRICS
            ]
            if None not in diffs:
                passed[seed] = all(d > 0 for d in diffs)
        if bar["met"]:
            verdict = _decide(passed)
        else:
            verdict = f"undecided (bar not met: {', '.join(bar['below'])})"
        comparison = comparison_label(steps, arm, baseline, "sign examples")
        out.append(_verdict("E1", arm, baseline, comparison, passed, verdict))
    return out


def e2_verdicts(
    runs: seeds.Runs, arms: Sequence[str], steps: Mapping[str, int]
) -> list[dict[str, Any]]:
    """The E2 claim for each arm with runs after the first (the baseline), by
    `CRITERION`: a seed passes when ASL -> English chrF lost at most `E2_CHRF_TOLERANCE`."""
    baseline, out = arms[0], []
    for arm in [a for a in arms[1:] if runs.get(a)]:
        passed = {}
        for seed in seeds.paired_seeds(runs, arm, baseline):
            diff = seeds.paired_difference(runs, arm, baseline, seed, [ASL_EN], "chrf")
            if diff is not None:
                passed[seed] = diff >= -E2_CHRF_TOLERANCE - _FLOAT_SLACK
        comparison = comparison_label(steps, arm, baseline, "ASL examples")
        out.append(_verdict("E2", arm, baseline, comparison, passed, _decide(passed)))
    return out


def _verdict_lines(verdicts: Sequence[Mapping[str, Any]]) -> list[str]:
    """One Markdown item per verdict, each experiment's headline first and in bold."""
    lines = []
    for v in sorted(verdicts, key=lambda v: (v["experiment"], not v["headline"])):
        kind = f"{v['experiment']} headline" if v["headline"] else v["experiment"]
        text = f"{kind}, {v['arm']} vs {v['baseline']} ({v['comparison']}): {v['verdict']}"
        paired = ", ".join(str(s["seed"]) for s in v["seeds"]) or "none"
        failed = ", ".join(str(s["seed"]) for s in v["seeds"] if not s["passed"])
        lines.append(
            f"- {f'**{text}**' if v['headline'] else text}; paired seeds {paired}"
            + (f"; criterion failed in seeds {failed}" if failed else "")
            + "."
        )
    return lines


def _header(info: Mapping[str, Any]) -> list[str]:
    text = [
        "# Study report",
        "",
        f"- command: `{info.get('command', '-')}`",
        f"- commit: `{info.get('commit', '-')}`; date {info.get('date', '-')}; "
        f"machine: {info.get('machine', '-')}",
        f"- steps per arm {info.get('train_steps')}, seeds {list(info.get('seeds', []))}; "
        f"wall time {info.get('wall_s', 0.0) / 60:.1f} min in all",
        "- cells: mean [min, max] over seeds; paired cells: arm minus baseline in one seed "
        "(pts: percentage points)",
    ]
    if info.get("missing_runs"):
        text.append(f"- not finished, left out: {', '.join(info['missing_runs'])}")
    return [*text, ""]


def _steps_of(info: Mapping[str, Any], runs: seeds.Runs) -> dict[str, int]:
    steps = info.get("train_steps") or {}
    return dict(steps) if isinstance(steps, Mapping) else dict.fromkeys(runs, int(steps))


def _e1_section(
    output_dir: str,
    runs: seeds.Runs,
    arms: Sequence[str],
    references: Mapping[str, float] | None,
) -> list[str]:
    labels = {t: _label(t) for t in E1_TASKS}
    direction_metrics = ("language_accuracy", "script_accuracy", "empty_rate")
    seeds.plot_comparison(
        runs,
        arms,
        E1_TASKS,
        labels,
        storage.join(output_dir, "e1.png"),
        "E1",
        ("chrf", "language_accuracy", "script_accuracy"),
    )
    return [
        "## E1: zero-shot SLT through MT data",
        "",
        seeds.group_table(runs, arms, E1_GROUPS),
        seeds.comparison_table(runs, arms, E1_TASKS, labels, metrics=("chrf", "exact_match")),
        seeds.comparison_table(runs, arms, E1_TASKS, labels, references, metrics=direction_metrics),
        "![E1](e1.png)",
        "",
    ]


def _e2_tasks(runs: seeds.Runs, arms: Sequence[str]) -> list[str]:
    return [t for t in E2_TASKS if any(t in m for a in arms for m in runs[a].values())]


def _e2_section(output_dir: str, runs: seeds.Runs, arms: Sequence[str]) -> list[str]:
    tasks = _e2_tasks(runs, arms)
    labels = {t: _e2_label(t) for t in tasks}
    seeds.plot_comparison(
        runs, arms, tasks, labels, storage.join(output_dir, "e2.png"), "E2", ("chrf",)
    )
    return [
        "## E2: more sign languages",
        "",
        seeds.comparison_table(runs, arms, tasks, labels),
        "![E2](e2.png)",
        "",
    ]


def _spreads(runs: seeds.Runs, arms: Sequence[str], groups: Mapping[str, Sequence[str]]) -> dict:
    return {
        arm: {
            g: {k: seeds.group_spread(runs, arm, ts, k) for k, _, _ in seeds.METRICS}
            for g, ts in groups.items()
        }
        for arm in arms
    }


def write(
    output_dir: str,
    runs: seeds.Runs,
    overlap: seeds.Overlap,
    info: Mapping[str, Any],
    e1_arms: Sequence[str],
    e2_arms: Sequence[str],
    reference_language_accuracy: Mapping[str, float] | None = None,
) -> str:
    """Writes report.md, e1.png, e2.png and summary.json; returns the report's text.

    The first arm of `e1_arms` and of `e2_arms` is the baseline the others are compared
    with; arms without runs are left out. `exact_match` is read from each run's test
    predictions (`with_exact_match`). `reference_language_accuracy` (E1 task -> share)
    adds a column to the E1 table."""
    runs = with_exact_match(output_dir, runs)
    steps = _steps_of(info, runs)
    e1 = [a for a in e1_arms if runs.get(a)]
    e2 = [a for a in e2_arms if runs.get(a)]
    bar = e1_bar(runs, e1)
    verdicts = {
        "E1": e1_verdicts(runs, list(e1_arms), steps, bar) if e1 else [],
        "E2": e2_verdicts(runs, list(e2_arms), steps) if e2 else [],
    }
    e2_groups = {_e2_label(t): [t] for t in _e2_tasks(runs, e2)}
    paired = {
        "E1": paired_rows(runs, list(e1_arms), E1_GROUPS, steps, "E1", "sign examples")
        if e1
        else [],
        "E2": paired_rows(runs, list(e2_arms), e2_groups, steps, "E2", "ASL examples")
        if e2
        else [],
    }
    t10 = table10(overlap, e1)
    text = _header(info)
    if e1:
        text += [
            "## The bar: ASL -> English test chrF of every E1 run",
            "",
            _bar_table(runs, e1, steps),
        ]
    text += ["## Verdicts", "", f"Criterion (`slt.study.report.CRITERION`): {CRITERION}", ""]
    text += _verdict_lines(verdicts["E1"] + verdicts["E2"]) or ["- no comparison has runs"]
    text.append("")
    if e1:
        text += _e1_section(output_dir, runs, e1, reference_language_accuracy)
    if e2:
        text += _e2_section(output_dir, runs, e2)
    for experiment in ("E1", "E2"):
        if paired[experiment]:
            text += [
                f"## Paired comparisons per seed, {experiment}",
                "",
                _paired_table(paired[experiment]),
            ]
    if t10:
        text += [
            "## Table 10: zero-shot directions by MT overlap",
            "",
            "Held-out words whose (English, language) pair is in the MT training split "
            "(in: pair in MT train) and the others (not: pair not in MT train); the Z row "
            "averages the directions per seed.",
            "",
            _table10_markdown(t10),
        ]
    for v in verdicts["E1"] + verdicts["E2"]:
        log.info("%s %s vs %s: %s", v["experiment"], v["arm"], v["baseline"], v["verdict"])
    summary = {
        "info": dict(info),
        "criterion": {
            "text": CRITERION,
            "asl_en_task": ASL_EN,
            "e1_bar_chrf": E1_BAR_CHRF,
            "e1_claim_metrics": list(E1_CLAIM_METRICS),
            "e2_chrf_tolerance": E2_CHRF_TOLERANCE,
            "min_paired_seeds": MIN_PAIRED_SEEDS,
            "headline_arms": dict(HEADLINE_ARMS),
        },
        "bar": bar,
        "verdicts": verdicts,
        "runs": run_entries(runs, steps, list(e1_arms), list(e2_arms)),
        "paired": paired,
        "table10": t10,
        "e1": {
            "groups": _spreads(runs, e1, E1_GROUPS),
            "mt_overlap": overlap,
            "reference_language_accuracy": dict(reference_language_accuracy or {}),
        },
        "e2": {"tasks": _spreads(runs, e2, {_e2_label(t): [t] for t in _e2_tasks(runs, e2)})},
    }
    report = "\n".join(text)
    storage.write_text(storage.join(output_dir, "report.md"), report)
    storage.write_text(
        storage.join(output_dir, "summary.json"),
        json.dumps(summary, indent=2, ensure_ascii=False, default=str),
    )
    return report
