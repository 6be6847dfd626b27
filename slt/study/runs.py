"""The study's runs: `slt.train` once per arm and seed, several processes at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

from slt import storage


def train_argv(
    arm_file: str, run_dir: str, seed: int, train_steps: int, bindings: Sequence[str]
) -> list[str]:
    """The `slt.train` flags of one run of an arm."""
    return [
        f"--gin_file={arm_file}",
        f'--gin.MODEL_DIR="{run_dir}"',
        f"--gin.train.seed={seed}",
        f"--gin.train.train_steps={train_steps}",
        *(f"--gin_bindings={b}" for b in bindings),
    ]


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


def last_step(run_dir: str) -> int | None:
    """The last step a run logged (`train/metrics.jsonl`), None before any."""
    path = storage.join(run_dir, "train", "metrics.jsonl")
    last = None
    if storage.isfile(path):
        for line in storage.read_text(path).splitlines():
            if line.strip():
                last = json.loads(line).get("step", last)
    return last


def check_kept_run(run_dir: str, train_steps: int) -> None:
    """A finished run is reused only if it trained for `train_steps`."""
    last = last_step(run_dir)
    path = storage.join(run_dir, "train", "metrics.jsonl")
    if last != train_steps:
        raise ValueError(
            f"{run_dir} holds a finished run of {last} steps (from {path}), not "
            f"study.train_steps={train_steps}: use another OUTPUT_DIR or remove {run_dir}."
        )
