r"""Run a study: train every arm for every seed, evaluate, and write one report.

  python -m slt.experiment --gin_file=experiments/study.gin --gin.OUTPUT_DIR=\"runs/study\"

With `study.pretrain` (a gin file of `slt.train`), one text-pretraining run is trained
first in OUTPUT_DIR/pretrain, and every run starts from its checkpoint. An arm is a gin
file of `slt.train` (experiments/e1_a_slt_aug.gin, ...). Each run trains with
`train.seed` = the seed and `train.train_steps` = `study.train_steps` in
OUTPUT_DIR/<arm>/seed_<seed> (a run whose eval/metrics.json exists is kept, so an
interrupted study resumes), then evaluates on the arm's eval tasks (test split). An arm
of `study.equal_steps_arms` is not trained: it is its source arm evaluated at the
steps of its experiment's first arm. OUTPUT_DIR then holds:

  report.md            the ASL -> English bar, the verdicts, tables of E1 (zero-shot
                       SLT through MT) and E2 (more sign languages): mean [min, max]
                       over seeds, per direction and group; paired seeds; Table 10
  e1.png, e2.png       chrF and language accuracy per direction, arms side by side
  summary.json         every run with its metrics, every number of report.md, and
                       each run's wall time
  metrics/<arm>.seed_<seed>.json   the metrics JSON of every run
  pretrain/            the text pretraining (done.json once finished)
  <arm>/seed_<seed>/   each run; an equal-steps arm's holds its source's evaluation
                       at those steps (source.json says which)

docs/results.md reports the study and how to read it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from slt import gin_utils

gin_utils.quiet_tensorflow()
gin_utils.add_cpu_xla_flags()

import gin  # noqa: E402

from slt import storage  # noqa: E402
from slt import train as train_lib  # noqa: E402
from slt.study import analysis  # noqa: E402
from slt.study import report as study_report  # noqa: E402
from slt.study import runs as study_runs  # noqa: E402


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


def run_arm_seed(
    arm_file: str, run_dir: str, seed: int, train_steps: int, bindings: Sequence[str]
) -> dict[str, dict]:
    """Trains and evaluates one arm for one seed in this process: the arm's gin file
    replaces whatever config was parsed before."""
    gin.clear_config()
    argv = study_runs.train_argv(arm_file, run_dir, seed, train_steps, bindings)
    gin_utils.parse_gin_args(argv, train_lib.train)
    return train_lib.train()


def _pretrain(pretrain_file: str, output_dir: str, bindings: Sequence[str]) -> str:
    """Trains the study's text-pretrained start once (its gin file names its steps);
    returns its run directory. A finished one is kept if it was trained from the same
    gin file and bindings."""
    run_dir = storage.join(output_dir, "pretrain")
    done = storage.join(run_dir, "done.json")
    recipe = {"pretrain": pretrain_file, "bindings": list(bindings)}
    if storage.isfile(done):
        kept = json.loads(storage.read_text(done))
        if {k: kept.get(k) for k in recipe} != recipe:
            raise ValueError(
                f"{run_dir} holds a pretraining of {kept.get('pretrain')!r} with bindings "
                f"{kept.get('bindings')}, not study.pretrain={pretrain_file!r} with "
                f"study.pretrain_bindings={list(bindings)}: use another OUTPUT_DIR or "
                f"remove {run_dir} (the runs in OUTPUT_DIR started from it too)."
            )
        print(f"pretraining: kept {run_dir}", flush=True)
        return run_dir
    print(f"pretraining: {pretrain_file} in {run_dir} (log: {run_dir}/train.log)", flush=True)
    start = time.monotonic()
    argv = [
        f"--gin_file={pretrain_file}",
        f'--gin.MODEL_DIR="{run_dir}"',
        *(f"--gin_bindings={b}" for b in bindings),
    ]
    study_runs.run_in_processes([("pretrain", run_dir, argv)], 1)
    storage.write_text(
        done,
        json.dumps(
            {
                **recipe,
                "steps": study_runs.last_step(run_dir),
                "wall_s": time.monotonic() - start,
            }
        ),
    )
    return run_dir


def _derive_equal_steps_run(source_dir: str, run_dir: str, step: int) -> bool:
    """Copies the source run's evaluation at `step` (`eval/step_<step>/`) as this
    run's `eval/`, replacing whatever was there; False while the source is not
    finished. A finished source without that evaluation is an error: its state at
    `step` cannot be evaluated any more."""
    source_eval = storage.join(source_dir, "eval", f"step_{step}")
    derived_eval = storage.join(run_dir, "eval")
    if storage.isdir(derived_eval):
        storage.rmtree(derived_eval)  # never report an earlier derivation
    if not storage.isfile(storage.join(source_eval, "metrics.json")):
        if storage.isfile(storage.join(source_dir, "eval", "metrics.json")):
            raise ValueError(
                f"{source_dir} is finished but has no evaluation at step {step} "
                f"({source_eval}/metrics.json), which {run_dir} is: it was trained without "
                f"slt.EvalConfig.period = {step}. Remove {source_dir} and run the study "
                "again."
            )
        return False
    names = [n for n in storage.listdir(source_eval) if n != "metrics.json"]
    for name in [*names, "metrics.json"]:  # metrics.json last: it marks a whole copy
        path = storage.join(source_eval, name)
        if storage.isfile(path):
            storage.copy_file(path, storage.join(derived_eval, name))
    storage.write_text(
        storage.join(run_dir, "source.json"), json.dumps({"run": source_dir, "step": step})
    )
    return True


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
    pretrain: str | None = None,
    pretrain_bindings: Sequence[str] = (),
    equal_steps_arms: Mapping[str, str] | None = None,
) -> str:
    """Trains and evaluates every arm (`{name: gin file}`) for every seed, in order,
    and writes the report; returns its text.

    `bindings` (gin text) apply to every run after its arm file. `e1_arms` are the E1
    arms, the baseline (without MT) first: every other is compared with it; `e2_arms`
    likewise (ASL only first). `report_only` trains nothing: the report covers the
    finished runs and lists the missing ones. `train_steps` is one number for every arm
    or `{arm: steps}` (study.gin gives the B arms twice A's steps: equal sign examples).
    `parallel_runs` > 1 trains that many runs at once, each in its own `slt.train`
    process (one per core on a CPU machine); 1 trains them one after another in this
    process. The numbers do not depend on it.

    `pretrain` (a gin file, with `pretrain_bindings` after it) is trained once, first,
    in its own process, and every run starts from it.
    `equal_steps_arms` `{name: source arm}` are arms measured without training: the
    source arm is also evaluated (test split) at the steps of its experiment's first
    arm, and that evaluation is the named arm's (the schedule must not depend on the
    run's length, as experiments/base.gin's rsqrt does not).
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
    if pretrain is not None and gin_utils.find_gin_file(pretrain) is None:
        raise FileNotFoundError(f"study.pretrain = {pretrain!r}: no such gin file.")
    equal_steps_arms = dict(equal_steps_arms or {})
    for name, source in equal_steps_arms.items():
        if source not in arms or source not in (*e1_arms, *e2_arms):
            raise ValueError(
                f"study.equal_steps_arms[{name!r}] = {source!r}: give an arm of study.arms "
                "that is also in study.e1_arms or study.e2_arms."
            )
    if len(set(equal_steps_arms.values())) < len(equal_steps_arms):
        raise ValueError(
            f"study.equal_steps_arms = {equal_steps_arms}: each source arm can give one "
            "equal-steps arm."
        )
    steps_of = (
        dict(train_steps)
        if isinstance(train_steps, Mapping)
        else dict.fromkeys(arms, int(train_steps))
    )
    if set(arms) - set(steps_of):
        raise ValueError(
            f"study.train_steps names no steps for arms {sorted(set(arms) - set(steps_of))}."
        )
    # An equal-steps arm is evaluated at the steps of the first arm of its experiment.
    for name, source in equal_steps_arms.items():
        first = next(iter(e1_arms if source in e1_arms else e2_arms), source)
        steps_of[name] = steps_of[first]
        if not steps_of[name] < steps_of[source]:
            raise ValueError(
                f"study.equal_steps_arms[{name!r}]: {source} trains {steps_of[source]} "
                f"steps, not more than the {steps_of[name]} of {first}."
            )
    output_dir = storage.absolute(output_dir)
    storage.makedirs(storage.join(output_dir, "metrics"))
    command = " ".join(["python -m slt.experiment", *sys.argv[1:]])
    commit = _commit()  # the code the runs are trained with, not a later one
    start = time.monotonic()
    if pretrain is not None and not report_only:
        pretrain_dir = _pretrain(pretrain, output_dir, pretrain_bindings)
        bindings = [f'slt.CheckpointConfig.initial_path = "{pretrain_dir}"', *bindings]
    eval_steps = {s: steps_of[n] for n, s in equal_steps_arms.items()}

    def bindings_of(name: str) -> list[str]:
        if name not in eval_steps:
            return list(bindings)
        return [
            *bindings,
            f"slt.EvalConfig.period = {eval_steps[name]}",
            'slt.EvalConfig.periodic_split = "test"',
        ]

    runs: dict[str, dict[int, dict]] = {}
    overlap: dict[str, dict[int, dict]] = {}
    wall: dict[str, float] = {}
    references: dict[str, float] = {}
    missing: list[str] = []
    # Seed-major: every arm's first seed is done before any arm's second.
    order = [(seed, name) for seed in seeds for name in arms]
    all_arms = [*arms, *equal_steps_arms]
    to_train = []
    for seed, name in order:
        run_dir = storage.join(output_dir, name, f"seed_{seed}")
        if storage.isfile(storage.join(run_dir, "eval", "metrics.json")):
            study_runs.check_kept_run(run_dir, steps_of[name])
            print(f"{name} seed {seed}: kept {run_dir}/eval/metrics.json", flush=True)
        elif not report_only:
            to_train.append((seed, name, run_dir))
    if parallel_runs > 1 and to_train:
        jobs = [
            (
                f"{name}/seed_{seed}",
                run_dir,
                study_runs.train_argv(arms[name], run_dir, seed, steps_of[name], bindings_of(name)),
            )
            for seed, name, run_dir in to_train
        ]
        for label, seconds in study_runs.run_in_processes(jobs, parallel_runs).items():
            storage.write_text(storage.join(output_dir, label, "wall_s.json"), json.dumps(seconds))
    else:
        for seed, name, run_dir in to_train:
            print(f"{name} seed {seed}: training {arms[name]} in {run_dir}", flush=True)
            run_start = time.monotonic()
            run_arm_seed(arms[name], run_dir, seed, steps_of[name], bindings_of(name))
            storage.write_text(
                storage.join(run_dir, "wall_s.json"), json.dumps(time.monotonic() - run_start)
            )
    for seed in seeds:
        for name, source in equal_steps_arms.items():
            _derive_equal_steps_run(
                storage.join(output_dir, source, f"seed_{seed}"),
                storage.join(output_dir, name, f"seed_{seed}"),
                steps_of[name],
            )
    for seed, name in [(seed, name) for seed in seeds for name in all_arms]:
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
            for task, value in analysis.script_accuracy(eval_dir).items():
                runs[name][seed][task]["script_accuracy"] = value
            overlap.setdefault(name, {})[seed] = analysis.mt_overlap_breakdown(eval_dir)
            references = references or analysis.reference_language_accuracy(eval_dir)
    info = {
        "command": command,
        "commit": commit,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "train_steps": steps_of,
        "seeds": list(seeds),
        "arms": dict(arms),
        "equal_steps_arms": equal_steps_arms,
        "pretrain": pretrain,
        "wall_s": time.monotonic() - start,  # of this invocation (kept runs not redone)
        "parallel_runs": parallel_runs,
        "run_wall_s": wall,
        "missing_runs": missing,
    }
    report = study_report.write(output_dir, runs, overlap, info, e1_arms, e2_arms, references)
    print(f"wrote {output_dir}/report.md, e1.png, e2.png and summary.json", flush=True)
    return report


def main(argv: Sequence[str]) -> None:
    gin_utils.parse_gin_args(argv, study)
    study()


if __name__ == "__main__":
    gin_utils.run_job(main)
