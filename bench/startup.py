"""What a job process costs before it trains: the corpus cache against computing the
corpus statistics, and `--help`.

Runs, in turns (each turn runs every variant once, so a change of load hits all alike),
each variant in a new process:
  - help:    `python -m slt.train --help`;
  - cold:    what every job on the demo corpus does first: import `tasks` (registers every
             task) and get the landmark preprocessing of the demo task (`slt.train` records
             it in the checkpoint; its datasets use it), with an empty corpus cache
             (SLT_CACHE_DIR in a fresh temporary directory), so the process computes the
             feature statistics of 19 lexicons and writes them;
  - warm:    the same, reading the entry the cold process of the same turn wrote;
  - before:  (with --before COMMIT) the same with the code of COMMIT from `git archive`;
  - train_cold, train_warm: (with --train) a whole 2-step tiny training job (the flags of
             tests/tiny_train_flags.py, no evaluation), as most subprocess tests start it.
Prints each variant's wall-clock and CPU seconds (user + system of the process) per turn,
their medians and the per-turn ratios cold / warm (> 1: the cache saves time), then a
JSON line with the same.

  nice -n 15 python bench/startup.py [--repeats 3] [--before 2cc381e] [--train]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "bench"))

import paired  # noqa: E402
from tiny_train_flags import TINY_TRAIN_FLAGS  # noqa: E402

TRAIN_FLAGS = [
    *TINY_TRAIN_FLAGS,
    "--gin.train.train_steps=2",
    "--gin.slt.EvalConfig.final=False",
]


def _run(args: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one process (it must exit 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


# What a job on the demo corpus does first (slt.train: `tasks.landmark_config` of its
# task, recorded in the checkpoint): register every task, get the demo task's config.
STARTUP = "from slt import tasks; tasks.landmark_config('fingerspelling_slt_ase_en')"


def _train(model_dir: str) -> list[str]:
    return [sys.executable, "-m", "slt.train", *TRAIN_FLAGS, f'--gin.MODEL_DIR="{model_dir}"']


def _checkout(commit: str, directory: str) -> None:
    archive = subprocess.run(
        ["git", "-C", REPO, "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)


def _ratios(times: dict[str, list[tuple[float, float]]], slow: str, fast: str) -> dict:
    return {
        f"{slow}_over_{fast}_{what}": paired.ratio_summary(
            [t[i] for t in times[slow]], [t[i] for t in times[fast]], 2
        )
        for i, what in ((0, "wall"), (1, "cpu"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="turns (default 3)")
    parser.add_argument(
        "--before", default=None, help="also time the start-up of this commit's code"
    )
    parser.add_argument("--train", action="store_true", help="also time 2-step training jobs")
    args = parser.parse_args()

    base_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    variants = ["help", "cold", "warm"]
    variants += ["before"] if args.before else []
    variants += ["train_cold", "train_warm"] if args.train else []
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="slt-startup-") as scratch:
        before_dir = os.path.join(scratch, "before")
        if args.before:
            os.makedirs(before_dir)
            _checkout(args.before, before_dir)
        for turn in range(args.repeats):
            caches = {
                kind: dict(base_env, SLT_CACHE_DIR=os.path.join(scratch, f"{kind}{turn}"))
                for kind in ("startup", "train")
            }
            startup = [sys.executable, "-c", STARTUP]
            commands = {
                "help": ([sys.executable, "-m", "slt.train", "--help"], base_env, REPO),
                "cold": (startup, caches["startup"], REPO),
                "warm": (startup, caches["startup"], REPO),
                # Its own slt and tasks come first on the path; it has no cache to read.
                "before": (startup, dict(base_env, PYTHONPATH=before_dir), before_dir),
                "train_cold": (_train(os.path.join(scratch, f"tc{turn}")), caches["train"], REPO),
                "train_warm": (_train(os.path.join(scratch, f"tw{turn}")), caches["train"], REPO),
            }
            for name in variants:
                times[name].append(_run(*commands[name]))
            done = ", ".join(
                f"{k} {v[-1][0]:.1f} s ({v[-1][1]:.1f} s CPU)" for k, v in times.items()
            )
            print(f"turn {turn + 1}: {done}", flush=True)
    summary = {
        name: {
            "median_wall_s": round(statistics.median(t[0] for t in values), 1),
            "median_cpu_s": round(statistics.median(t[1] for t in values), 1),
            "wall_s": [round(t[0], 1) for t in values],
            "cpu_s": [round(t[1], 1) for t in values],
        }
        for name, values in times.items()
    }
    ratios = _ratios(times, "cold", "warm")
    if args.before:
        ratios |= _ratios(times, "before", "warm")
    if args.train:
        ratios |= _ratios(times, "train_cold", "train_warm")
    for name, s in summary.items():
        print(f"{name}: median {s['median_wall_s']} s wall, {s['median_cpu_s']} s CPU")
    print(json.dumps({"load_average": os.getloadavg(), "times": summary, "ratios": ratios}))


if __name__ == "__main__":
    main()
