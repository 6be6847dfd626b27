"""What a job process costs before it trains: the corpus cache against computing the
corpus statistics, and `--help`.

Runs, in turns (each turn runs every variant once, so a change of load hits all alike):
  - `python -m slt.train --help`;
  - a 2-step tiny training job on the demo task (the flags of tests/tiny_train_flags.py,
    no evaluation), which is what most subprocess tests start:
      cold:   an empty corpus cache (SLT_CACHE_DIR in a fresh temporary directory), so the
              job computes the feature statistics of 19 lexicons and writes them;
      warm:   the cache the cold job of the same turn wrote;
      before: (with --before COMMIT) the code of COMMIT, from `git archive`, which has no
              cache.
Prints each variant's wall-clock and CPU seconds (user + system of the process) per turn,
their medians, and the per-turn ratios cold / warm (> 1: the cache saves time), then a
JSON line with the same.

  nice -n 15 python bench/startup.py [--repeats 3] [--before 2cc381e]
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


def _train(model_dir: str) -> list[str]:
    return [sys.executable, "-m", "slt.train", *TRAIN_FLAGS, f'--gin.MODEL_DIR="{model_dir}"']


def _checkout(commit: str, directory: str) -> None:
    archive = subprocess.run(
        ["git", "-C", REPO, "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="turns (default 3)")
    parser.add_argument(
        "--before", default=None, help="also time the code of this commit (no corpus cache)"
    )
    args = parser.parse_args()

    base_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    times: dict[str, list[tuple[float, float]]] = {"help": [], "cold": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="slt-startup-") as scratch:
        before_dir = None
        if args.before:
            before_dir = os.path.join(scratch, "before")
            os.makedirs(before_dir)
            _checkout(args.before, before_dir)
            times["before"] = []
        for turn in range(args.repeats):
            cache = dict(base_env, SLT_CACHE_DIR=os.path.join(scratch, f"cache{turn}"))
            times["help"].append(
                _run([sys.executable, "-m", "slt.train", "--help"], base_env, REPO)
            )
            for variant in ("cold", "warm"):
                run_dir = os.path.join(scratch, f"{variant}{turn}")
                times[variant].append(_run(_train(run_dir), cache, REPO))
            if before_dir:
                env = dict(cache, PYTHONPATH=before_dir)  # its slt and tasks come first
                run_dir = os.path.join(scratch, f"before{turn}")
                times["before"].append(_run(_train(run_dir), env, before_dir))
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
    ratios = {
        "cold_over_warm_wall": paired.ratio_summary(
            [t[0] for t in times["cold"]], [t[0] for t in times["warm"]], 2
        ),
        "cold_over_warm_cpu": paired.ratio_summary(
            [t[1] for t in times["cold"]], [t[1] for t in times["warm"]], 2
        ),
    }
    if "before" in times:
        ratios["before_over_warm_cpu"] = paired.ratio_summary(
            [t[1] for t in times["before"]], [t[1] for t in times["warm"]], 2
        )
    for name, s in summary.items():
        print(f"{name}: median {s['median_wall_s']} s wall, {s['median_cpu_s']} s CPU")
    print(json.dumps({"load_average": os.getloadavg(), "times": summary, "ratios": ratios}))


if __name__ == "__main__":
    main()
