r"""Run a study: train every arm for every seed, evaluate, and write one report.

  python -m slt.experiment --gin_file=experiments/study.gin --gin.OUTPUT_DIR=\"runs/study\"

An arm is a gin file of `slt.train` (experiments/e1_a_slt_aug.gin, ...). Each run
trains with `train.seed` = the seed and `train.train_steps` = `study.train_steps` in
OUTPUT_DIR/<arm>/seed_<seed> (a run whose eval/metrics.json exists is kept, so an
interrupted study resumes), then evaluates on the arm's eval tasks (test split). The
runs are one after another, in this process. OUTPUT_DIR then holds:

  report.md            tables of E1 (zero-shot SLT through MT) and E2 (more sign
                       languages): mean [min, max] over seeds, per direction and group
  e1.png, e2.png       chrF and language accuracy per direction, arms side by side
  summary.json         every number of report.md, and each run's wall time
  metrics/<arm>.seed_<seed>.json   the metrics JSON of every run

docs/results.md reports the study and how to read it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from slt import gin_utils

gin_utils.quiet_tensorflow()
gin_utils.add_cpu_xla_flags()

import gin  # noqa: E402

from slt import storage  # noqa: E402
from slt import train as train_lib  # noqa: E402
from slt.evaluation import metrics as metrics_lib  # noqa: E402
from slt.evaluation import study_report  # noqa: E402
from slt.tasks.fingerspelling import mixtures as fm  # noqa: E402
from slt.tasks.fingerspelling import sources as fs_sources  # noqa: E402
from slt.tasks.study import mixtures as em  # noqa: E402

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


def _label(task: str) -> str:
    """A direction's short name: `en`, `cs (S)`, `ar (Z)`, or the sign language."""
    if task.startswith("fingerspelling_aug_slt_ase_"):
        language = task.rsplit("_", 1)[1]
        return f"{language} ({'S' if language in em.E1_SEEN else 'Z'})"
    if task.startswith("fingerspelling_word_slt_"):
        sign, spoken = task.split("_")[-2:]
        return spoken if sign == "ase" else f"{sign}>{spoken}"  # E1: ASL -> English
    return task


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=gin_utils.REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_argv(
    arm_file: str, run_dir: str, seed: int, train_steps: int, bindings: Sequence[str]
) -> list[str]:
    """The `slt.train` flags of one run of an arm."""
    return [
        f"--gin_file={arm_file}",
        f'--gin.MODEL_DIR="{run_dir}"',
        f"--gin.train.seed={seed}",
        f"--gin.train.train_steps={train_steps}",
        f"--gin.slt.OptimizerConfig.decay_steps={train_steps}",
        f"--gin.slt.OptimizerConfig.warmup_steps={max(1, train_steps // 10)}",
        *(f"--gin_bindings={b}" for b in bindings),
    ]


def run_arm_seed(
    arm_file: str, run_dir: str, seed: int, train_steps: int, bindings: Sequence[str]
) -> dict[str, dict]:
    """Trains and evaluates one arm for one seed in this process: the arm's gin file
    replaces whatever config was parsed before."""
    gin.clear_config()
    argv = train_argv(arm_file, run_dir, seed, train_steps, bindings)
    gin_utils.parse_gin_args(argv, train_lib.train)
    return train_lib.train()


# One run per process uses about one core on CPU (the tiny model's ops are too small
# for XLA's thread pool), so a study on N cores can run N of them side by side.
def _log_path(run_dir: str) -> str:
    """Where a run's process writes its output: `<run_dir>/train.log` on disk; for a
    run directory in a bucket, a local file that is uploaded when the run ends."""
    if storage.is_remote(run_dir):
        return storage.join(tempfile.gettempdir(), f"slt-study-{uuid.uuid4().hex}.log")
    storage.makedirs(run_dir)
    return storage.join(run_dir, "train.log")


def _start_run_process(argv: Sequence[str], run_dir: str) -> tuple[subprocess.Popen, Any, str]:
    log_path = _log_path(run_dir)
    # The log stays open while the process runs; run_in_processes closes it.
    # local: a child process writes its output to a local file (see _log_path)
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "slt.train", *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=os.getcwd(),
    )
    return process, log, log_path


def run_in_processes(
    jobs: Sequence[tuple[str, str, list[str]]], parallel_runs: int, poll_s: float = 5.0
) -> dict[str, float]:
    """Runs `slt.train` once per job (`(label, run_dir, argv)`), at most `parallel_runs`
    at a time; each run's output goes to `<run_dir>/train.log`. Returns each label's
    wall time; a failed run raises with its log's tail."""
    pending = list(jobs)
    running: dict[str, tuple[subprocess.Popen, Any, str, str, float]] = {}
    wall: dict[str, float] = {}
    while pending or running:
        while pending and len(running) < parallel_runs:
            label, run_dir, argv = pending.pop(0)
            print(f"{label}: training in {run_dir} (log: {run_dir}/train.log)", flush=True)
            process, log, log_path = _start_run_process(argv, run_dir)
            running[label] = (process, log, log_path, run_dir, time.monotonic())
        time.sleep(poll_s)
        for label in list(running):
            process, log, log_path, run_dir, start = running[label]
            if process.poll() is None:
                continue
            log.close()
            del running[label]
            tail = "".join(storage.read_text(log_path).splitlines(keepends=True)[-20:])
            if log_path != storage.join(run_dir, "train.log"):
                storage.copy_file(log_path, storage.join(run_dir, "train.log"))
                storage.remove(log_path)
            if process.returncode != 0:
                for p, other_log, _, _, _ in running.values():
                    p.terminate()
                    p.wait()
                    other_log.close()
                raise RuntimeError(
                    f"{label}: slt.train exited with {process.returncode}; the end of "
                    f"{run_dir}/train.log:\n{tail}"
                )
            wall[label] = time.monotonic() - start
            print(f"{label}: done in {wall[label] / 60:.1f} min", flush=True)
    return wall


def _check_kept_run(run_dir: str, train_steps: int) -> None:
    """A finished run is reused only if it trained for `train_steps`."""
    path = storage.join(run_dir, "train", "metrics.jsonl")
    last = None
    if storage.isfile(path):
        for line in storage.read_text(path).splitlines():
            if line.strip():
                last = json.loads(line).get("step", last)
    if last != train_steps:
        raise ValueError(
            f"{run_dir} holds a finished run of {last} steps (from {path}), not "
            f"study.train_steps={train_steps}: use another OUTPUT_DIR or remove {run_dir}."
        )


def _read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]


def script(text: str) -> str | None:
    """The Unicode script most of `text`'s letters are in (LATIN, CYRILLIC, GREEK,
    ARABIC, ...); None without letters."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            if name:
                counts[name.split()[0]] = counts.get(name.split()[0], 0) + 1
    return max(counts, key=counts.get) if counts else None


def script_accuracy(eval_dir: str, split: str = "test") -> dict[str, float]:
    """Per E1 direction, the share of predictions written in their reference's script:
    a coarse language check that holds on single words, where the language identifier
    is weak (it separates Latin from Cyrillic, Greek and Arabic only)."""
    out = {}
    for task in E1_TASKS:
        path = storage.join(eval_dir, f"{task}.{split}.predictions.jsonl")
        if storage.isfile(path):
            rows = _read_jsonl(path)
            if rows:
                hits = sum(script(r["prediction"]) == script(r["target"]) for r in rows)
                out[task] = hits / len(rows)
    return out


def reference_language_accuracy(eval_dir: str, split: str = "test") -> dict[str, float]:
    """Per E1 direction, the language accuracy of the references themselves: how often
    the identifier places the correct single words in their language (the ceiling of
    a model's language accuracy here)."""
    out = {}
    for task in E1_TASKS:
        path = storage.join(eval_dir, f"{task}.{split}.predictions.jsonl")
        if storage.isfile(path):
            rows = _read_jsonl(path)
            language = "en" if task == fm.word_name("ase") else task.rsplit("_", 1)[1]
            targets = [r["target"] for r in rows]
            out[task] = metrics_lib.language_accuracy(targets, [language] * len(targets))
    return out


def mt_overlap_breakdown(eval_dir: str, split: str = "test") -> dict[str, dict[str, Any]]:
    """For each zero-shot direction: chrF and exact match of the held-out words whose
    (English, target) pair is in the MT training split, and of the others."""
    out = {}
    for language in em.E1_ZERO_SHOT:
        task = fm.aug_name(language)
        path = storage.join(eval_dir, f"{task}.{split}.predictions.jsonl")
        if not storage.isfile(path):
            continue
        rows = _read_jsonl(path)
        train_pairs = {(r[1], r[2]) for r in fs_sources.cldr_pairs("en", language)["train"]}
        parts: dict[str, list] = {"in_mt_train": [], "not_in_mt_train": []}
        for row in rows:
            word = row["id"].split("/")[1]  # ids are <sign>/<word>/<variant>
            known = (word, row["target"]) in train_pairs
            parts["in_mt_train" if known else "not_in_mt_train"].append(row)
        out[task] = {}
        for part, part_rows in parts.items():
            if not part_rows:
                out[task][part] = {"num_examples": 0}
                continue
            m = metrics_lib.translation_metrics(
                [r["prediction"] for r in part_rows], [r["target"] for r in part_rows]
            )
            out[task][part] = {
                "num_examples": len(part_rows),
                "chrf": m["chrf"],
                "exact_match": m["exact_match"],
            }
    return out


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
                f"{study_report.cell(study_report.spread(per_seed_chrf))} | "
                f"{study_report.cell(study_report.spread(per_seed_exact), 100.0)} |"
            )
    return "\n".join(lines) + "\n"


def _verdict(runs, better: str, worse: str, tasks: Sequence[str], metric: str) -> str:
    b = study_report.group_spread(runs, better, tasks, metric)
    w = study_report.group_spread(runs, worse, tasks, metric)
    if b is None or w is None:
        return "not evaluated on these tasks"
    if b["min"] > w["max"]:
        return f"{better} above {worse} in every seed (ranges do not overlap)"
    if b["mean"] > w["mean"]:
        return f"{better} above {worse} on average, but the seed ranges overlap"
    return f"{better} not above {worse}"


def write_study_report(
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
            study_report.group_table(runs, e1_arms, E1_GROUPS),
            study_report.comparison_table(
                runs, e1_arms, E1_TASKS, labels, metrics=("chrf", "exact_match")
            ),
            study_report.comparison_table(
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
        study_report.plot_comparison(
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
                g: {
                    k: study_report.group_spread(runs, arm, ts, k)
                    for k, _, _ in study_report.METRICS
                }
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
            study_report.comparison_table(runs, e2_arms, tasks, labels),
        ]
        ase = [fm.word_name("ase")]
        if len(e2_arms) >= 2 and all(ase[0] in m for a in e2_arms for m in runs[a].values()):
            verdict = _verdict(runs, e2_arms[1], e2_arms[0], ase, "chrf")
            summary["e2"]["verdict_ase_chrf"] = verdict
            text += [f"- ASL test words, chrF: {verdict}.", ""]
        study_report.plot_comparison(
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


@gin.configurable(denylist=[])
def study(
    *,
    output_dir: str = gin.REQUIRED,
    arms: Mapping[str, str] = gin.REQUIRED,
    seeds: Sequence[int] = (0, 1),
    train_steps: int | Mapping[str, int] = 1000,
    bindings: Sequence[str] = (),
    e1_arms: Sequence[str] = ("e1_a", "e1_b"),
    e2_arms: Sequence[str] = ("e2_ase", "e2_all_signs"),
    report_only: bool = False,
    parallel_runs: int = 1,
) -> str:
    """Trains and evaluates every arm (`{name: gin file}`) for every seed, in order,
    and writes the report; returns its text.

    `bindings` (gin text) apply to every run after its arm file. `e1_arms` are the E1
    arms in the order (without MT, with MT, ...): the second is compared with the
    first; `e2_arms` likewise (ASL only, all lexicons). `report_only` trains nothing:
    the report covers the finished runs and lists the missing ones. `train_steps` is
    one number for every arm or `{arm: steps}` (the arms of one experiment should
    match). `parallel_runs` > 1 trains that many runs at once, each in its own
    `slt.train` process (one per core on a CPU machine); 1 trains them one after
    another in this process. The numbers do not depend on it.
    """
    if parallel_runs < 1:
        raise ValueError(f"study.parallel_runs={parallel_runs}: give 1 or more.")
    for name, arm_file in arms.items():
        if gin_utils.find_gin_file(arm_file) is None:
            raise FileNotFoundError(
                f"study.arms[{name!r}] = {arm_file!r}: no such gin file (give a path "
                "relative to the working directory, or a config of the project such as "
                "experiments/e1_a_slt_aug.gin)."
            )
    if not seeds:
        raise ValueError("study.seeds is empty; give at least one seed, e.g. [0, 1].")
    steps_of = (
        dict(train_steps)
        if isinstance(train_steps, Mapping)
        else dict.fromkeys(arms, int(train_steps))
    )
    if set(arms) - set(steps_of):
        raise ValueError(
            f"study.train_steps names no steps for arms {sorted(set(arms) - set(steps_of))}."
        )
    output_dir = storage.absolute(output_dir)
    storage.makedirs(storage.join(output_dir, "metrics"))
    command = " ".join(["python -m slt.experiment", *sys.argv[1:]])
    start = time.monotonic()
    runs: dict[str, dict[int, dict]] = {}
    overlap: dict[str, dict[int, dict]] = {}
    wall: dict[str, float] = {}
    references: dict[str, float] = {}
    missing: list[str] = []
    # Seed-major: every arm's first seed is done before any arm's second.
    order = [(seed, name) for seed in seeds for name in arms]
    to_train = []
    for seed, name in order:
        run_dir = storage.join(output_dir, name, f"seed_{seed}")
        if storage.isfile(storage.join(run_dir, "eval", "metrics.json")):
            _check_kept_run(run_dir, steps_of[name])
            print(f"{name} seed {seed}: kept {run_dir}/eval/metrics.json", flush=True)
        elif not report_only:
            to_train.append((seed, name, run_dir))
    if parallel_runs > 1 and to_train:
        jobs = [
            (
                f"{name}/seed_{seed}",
                run_dir,
                train_argv(arms[name], run_dir, seed, steps_of[name], bindings),
            )
            for seed, name, run_dir in to_train
        ]
        for label, seconds in run_in_processes(jobs, parallel_runs).items():
            storage.write_text(storage.join(output_dir, label, "wall_s.json"), json.dumps(seconds))
    else:
        for seed, name, run_dir in to_train:
            print(f"{name} seed {seed}: training {arms[name]} in {run_dir}", flush=True)
            run_start = time.monotonic()
            run_arm_seed(arms[name], run_dir, seed, steps_of[name], bindings)
            storage.write_text(
                storage.join(run_dir, "wall_s.json"), json.dumps(time.monotonic() - run_start)
            )
    for seed, name in order:
        run_dir = storage.join(output_dir, name, f"seed_{seed}")
        metrics_path = storage.join(run_dir, "eval", "metrics.json")
        if not storage.isfile(metrics_path):
            print(f"{name} seed {seed}: not finished, left out of the report", flush=True)
            missing.append(f"{name}/seed_{seed}")
            continue
        wall_path = storage.join(run_dir, "wall_s.json")
        if storage.isfile(wall_path):
            wall[f"{name}/seed_{seed}"] = json.loads(storage.read_text(wall_path))
        runs.setdefault(name, {})[seed] = json.loads(storage.read_text(metrics_path))
        storage.copy_file(
            metrics_path, storage.join(output_dir, "metrics", f"{name}.seed_{seed}.json")
        )
        if name in e1_arms:
            eval_dir = storage.join(run_dir, "eval")
            for task, value in script_accuracy(eval_dir).items():
                runs[name][seed][task]["script_accuracy"] = value
            overlap.setdefault(name, {})[seed] = mt_overlap_breakdown(eval_dir)
            references = references or reference_language_accuracy(eval_dir)
    info = {
        "command": command,
        "commit": _commit(),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "train_steps": steps_of,
        "seeds": list(seeds),
        "arms": dict(arms),
        "wall_s": time.monotonic() - start,  # of this invocation (kept runs not redone)
        "parallel_runs": parallel_runs,
        "run_wall_s": wall,
        "missing_runs": missing,
    }
    report = write_study_report(output_dir, runs, overlap, info, e1_arms, e2_arms, references)
    print(f"wrote {output_dir}/report.md, e1.png, e2.png and summary.json", flush=True)
    return report


def main(argv: Sequence[str]) -> None:
    gin_utils.parse_gin_args(argv, study)
    study()


if __name__ == "__main__":
    main(sys.argv[1:])
