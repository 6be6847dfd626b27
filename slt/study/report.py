"""The study's report: tables of E1 and E2 over seeds, verdicts, plots, summary.json."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from slt import storage
from slt.study import seeds
from slt.study.design import E1_GROUPS, E1_TASKS, E2_TASKS
from slt.study.design import label as _label
from slt.tasks.fingerspelling import mixtures as fm


def _overlap_table(overlap: Mapping[str, Mapping[int, Mapping]], arms: Sequence[str]) -> str:
    lines = [
        "| arm | held-out words | n (all seeds) | chrF | exact % |",
        "|---|---|---|---|---|",
    ]
    for arm in arms:
        for part in ("in_mt_train", "not_in_mt_train"):
            per_seed_chrf, per_seed_exact, n = [], [], 0
            for by_task in overlap.get(arm, {}).values():
                cells = [t[part] for t in by_task.values() if t[part]["num_examples"]]
                if not cells:
                    continue
                weights = [c["num_examples"] for c in cells]
                n += sum(weights)
                per_seed_chrf.append(
                    sum(c["chrf"] * w for c, w in zip(cells, weights)) / sum(weights)
                )
                per_seed_exact.append(
                    sum(c["exact_match"] * w for c, w in zip(cells, weights)) / sum(weights)
                )
            if not per_seed_chrf:
                continue
            label = "pair in MT train" if part == "in_mt_train" else "pair not in MT train"
            lines.append(
                f"| {arm} | {label} | {n} | "
                f"{seeds.cell(seeds.spread(per_seed_chrf))} | "
                f"{seeds.cell(seeds.spread(per_seed_exact), 100.0)} |"
            )
    return "\n".join(lines) + "\n"


def _verdict(runs, better: str, worse: str, tasks: Sequence[str], metric: str) -> str:
    b = seeds.group_spread(runs, better, tasks, metric)
    w = seeds.group_spread(runs, worse, tasks, metric)
    if b is None or w is None:
        return "not evaluated on these tasks"
    if b["min"] > w["max"]:
        return f"{better} above {worse} in every seed (ranges do not overlap)"
    if b["mean"] > w["mean"]:
        return f"{better} above {worse} on average, but the seed ranges overlap"
    return f"{better} not above {worse}"


def write(
    output_dir: str,
    runs: Mapping[str, Mapping[int, Mapping[str, Mapping[str, Any]]]],
    overlap: Mapping[str, Mapping[int, Mapping]],
    info: Mapping[str, Any],
    e1_arms: Sequence[str],
    e2_arms: Sequence[str],
    reference_language_accuracy: Mapping[str, float] | None = None,
) -> str:
    """Writes report.md, e1.png, e2.png and summary.json; returns the report's text.

    `reference_language_accuracy` (E1 task -> share) adds a column to the E1 table."""
    text = [
        "# Study report",
        "",
        f"- command: `{info['command']}`",
        f"- commit: `{info['commit']}`; date {info['date']}; machine: {info['machine']}",
        f"- steps per run {info['train_steps']}, seeds {list(info['seeds'])}; "
        f"wall time {info['wall_s'] / 60:.1f} min in all",
        "- cells: mean [min, max] over seeds",
    ]
    if info.get("missing_runs"):
        text.append(f"- not finished, left out: {', '.join(info['missing_runs'])}")
    text.append("")
    summary: dict[str, Any] = {"info": dict(info), "e1": {}, "e2": {}}
    e1_arms = [a for a in e1_arms if a in runs]
    e2_arms = [a for a in e2_arms if a in runs]
    if e1_arms:
        labels = {t: _label(t) for t in E1_TASKS}
        text += [
            "## E1: zero-shot SLT through MT data",
            "",
            seeds.group_table(runs, e1_arms, E1_GROUPS),
            seeds.comparison_table(
                runs, e1_arms, E1_TASKS, labels, metrics=("chrf", "exact_match")
            ),
            seeds.comparison_table(
                runs,
                e1_arms,
                E1_TASKS,
                labels,
                reference_language_accuracy,
                metrics=("language_accuracy", "script_accuracy", "empty_rate"),
            ),
        ]
        if len(e1_arms) >= 2:
            z = E1_GROUPS["Z (zero-shot)"]
            for metric in ("chrf", "language_accuracy", "script_accuracy"):
                verdict = _verdict(runs, e1_arms[1], e1_arms[0], z, metric)
                summary["e1"][f"verdict_{metric}"] = verdict
                text.append(f"- Z directions, {metric}: {verdict}.")
            text.append("")
        if overlap:
            text += [
                "Zero-shot directions split by whether the held-out word's pair is in the "
                "MT training split (default CLDR split):",
                "",
                _overlap_table(overlap, e1_arms),
            ]
        seeds.plot_comparison(
            runs,
            e1_arms,
            E1_TASKS,
            labels,
            storage.join(output_dir, "e1.png"),
            "E1",
            ("chrf", "language_accuracy", "script_accuracy"),
        )
        text += ["![E1](e1.png)", ""]
        summary["e1"]["groups"] = {
            arm: {
                g: {k: seeds.group_spread(runs, arm, ts, k) for k, _, _ in seeds.METRICS}
                for g, ts in E1_GROUPS.items()
            }
            for arm in e1_arms
        }
        summary["e1"]["mt_overlap"] = overlap
        summary["e1"]["reference_language_accuracy"] = dict(reference_language_accuracy or {})
    if e2_arms:
        labels = {t: "{}>{}".format(*t.split("_")[-2:]) for t in E2_TASKS}
        tasks = [t for t in E2_TASKS if any(t in m for a in e2_arms for m in runs[a].values())]
        text += [
            "## E2: more sign languages",
            "",
            seeds.comparison_table(runs, e2_arms, tasks, labels),
        ]
        ase = [fm.word_name("ase")]
        if len(e2_arms) >= 2 and all(ase[0] in m for a in e2_arms for m in runs[a].values()):
            verdict = _verdict(runs, e2_arms[1], e2_arms[0], ase, "chrf")
            summary["e2"]["verdict_ase_chrf"] = verdict
            text += [f"- ASL test words, chrF: {verdict}.", ""]
        seeds.plot_comparison(
            runs, e2_arms, tasks, labels, storage.join(output_dir, "e2.png"), "E2", ("chrf",)
        )
        text += ["![E2](e2.png)", ""]
    summary["runs"] = runs
    report = "\n".join(text)
    storage.write_text(storage.join(output_dir, "report.md"), report)
    storage.write_text(
        storage.join(output_dir, "summary.json"),
        json.dumps(summary, indent=2, ensure_ascii=False, default=str),
    )
    return report
