"""What watches a training run from around the jitted step (no gin; `slt.train` wires it).

- `PreemptionWatcher`: SIGTERM (preemption) asks the loop to save and stop.
- `check_finite`: the NaN/Inf guard.
- `StepWatchdog`: exits with a clear message when no step finishes in time (a
  peer process died and a collective would wait forever).
- `TrainLog`: every step's metrics to JSONL, TensorBoard summaries and the progress
  line (step/s, examples/s, tokens/s, ETA) that the job prints.

The input stream and its checkpointed position are in `slt.training.input_state`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from slt import storage

log = logging.getLogger(__name__)


class PreemptionWatcher:
    """Turns SIGTERM into a request to save and stop at the next step boundary.

    One process: a Python signal handler. Several processes: JAX's preemption sync
    point (the coordination service agrees on one step for every host).
    """

    def __init__(self, multi_process: bool = False):
        self.multi_process = multi_process
        self.signalled = False
        self._previous = None
        if not multi_process and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        del signum, frame
        self.signalled = True

    def should_stop(self, step: int) -> bool:
        if self.multi_process:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.signalled

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def __enter__(self) -> PreemptionWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became NaN or Inf."""


def check_finite(
    step: int, metrics: Mapping[str, float], last_checkpoint: int | None, checkpoint_dir: str
) -> None:
    """Raises `NonFiniteLossError` (with what to do) on a NaN/Inf loss or gradient."""
    bad = {
        k: metrics[k]
        for k in ("loss", "grad_norm")
        if k in metrics and not math.isfinite(float(metrics[k]))
    }
    if not bad:
        return
    kept = (
        f"the last good checkpoint is step {last_checkpoint} in {checkpoint_dir}; "
        "a restart resumes from it"
        if last_checkpoint is not None
        else "no checkpoint was saved yet"
    )
    raise NonFiniteLossError(
        f"non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} at step {step}: "
        f"training stopped without saving this state; {kept}. Lower the learning rate "
        "(gin: slt.OptimizerConfig.learning_rate), add warmup or gradient clipping "
        "(slt.OptimizerConfig.gradient_clip_norm), or check the data of this step."
    )


class PeerProcessError(RuntimeError):
    """A collective failed in a multi-process job (a peer process died)."""


class StepWatchdog:
    """Exits the process (status 3) if no step finishes for `timeout_s` seconds.

    Armed after the first step (compilation can be slow); `timeout_s <= 0` turns it
    off. Meant for multi-process jobs, where a dead peer leaves the others waiting in
    a collective forever. The reason goes to the log (stderr) just before the exit.
    """

    def __init__(self, timeout_s: float, describe: Callable[[], str] = lambda: ""):
        self.timeout_s = timeout_s
        self._describe = describe
        self._last = None
        self._step = 0
        self._stop = threading.Event()
        if timeout_s > 0:
            threading.Thread(target=self._run, daemon=True, name="step-watchdog").start()

    def step_done(self, step: int) -> None:
        self._step, self._last = step, time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout_s / 4)):
            if self._last is not None and time.monotonic() - self._last > self.timeout_s:
                log.error(
                    "no train step finished in %.0f s (last finished step %d). %s Exiting.",
                    self.timeout_s,
                    self._step,
                    self._describe(),
                )
                logging.shutdown()  # flush the handlers: os._exit skips that
                os._exit(3)

    def close(self) -> None:
        self._stop.set()

    def __enter__(self) -> StepWatchdog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _JsonlLog:
    """`train/metrics.jsonl`, one JSON record per line, written at each `flush`.

    Opening drops the records past `start_step` (a killed run logged steps it never
    saved) and a last line cut off mid-write. Locally new lines are appended; a cloud
    object cannot be appended to, so there the log is kept whole and rewritten.
    """

    def __init__(self, path: str, start_step: int):
        self.path = path
        lines = storage.read_text(path).splitlines(keepends=True) if storage.exists(path) else []
        kept = [
            line
            for line in lines
            if line.strip() and line.endswith("\n") and json.loads(line)["step"] <= start_step
        ]
        if len(kept) != len(lines):
            storage.write_text(path, "".join(kept))
        self._remote = storage.is_remote(path)
        self._text = "".join(kept)
        self._pending: list[str] = []

    def write(self, line: str) -> None:
        self._pending.append(line)

    def flush(self) -> None:
        if not self._pending:
            return
        new, self._pending = "".join(self._pending), []
        if self._remote:
            self._text += new
            storage.write_text(self.path, self._text)
        else:
            storage.append_text(self.path, new)


class TrainLog:
    """Every step's metrics to `train/metrics.jsonl` (full float precision); every
    `log_period` steps a progress line and TensorBoard summaries (`train/` events,
    written by process 0 only)."""

    def __init__(
        self,
        model_dir: str,
        train_steps: int,
        start_step: int,
        batch_size: int,
        log_period: int,
        write: bool = True,
        tensorboard: bool = True,
    ):
        self._dir = storage.join(model_dir, "train")
        self._write = write
        self._log = None
        self._summary = None
        self._staging = None
        if write:
            storage.makedirs(self._dir)
            self._log = _JsonlLog(storage.join(self._dir, "metrics.jsonl"), start_step)
            if tensorboard:
                from clu import metric_writers

                # TensorBoard writes through TensorFlow's own file system: on cloud
                # storage its events go to a local directory copied at each flush.
                events_dir = self._dir
                if storage.is_remote(self._dir):
                    self._staging = storage.staging_dir("train-events")
                    events_dir = self._staging.name
                self._summary = metric_writers.create_default_writer(events_dir, asynchronous=False)
        self._train_steps, self._batch_size, self._log_period = train_steps, batch_size, log_period
        self._last_step, self._last_time = start_step, time.time()
        self._tokens = 0.0

    def _flush_summaries(self) -> None:
        self._summary.flush()
        if self._staging:
            storage.upload_dir(self._staging.name, self._dir)

    def write(self, step: int, step_metrics: Mapping[str, Any]) -> str | None:
        """Records one step; every `log_period` steps (and at the last) also writes the
        summaries and returns the progress line for the job to print (process 0)."""
        record = {"step": step, **{k: float(v) for k, v in step_metrics.items()}}
        self._tokens += record.get("num_tokens", 0.0)
        if self._log:
            self._log.write(json.dumps(record) + "\n")
        if step % self._log_period and step != self._train_steps:
            return None
        if self._log:
            self._log.flush()
        now = time.time()
        elapsed = max(now - self._last_time, 1e-9)
        steps_per_s = (step - self._last_step) / elapsed
        rates = {
            "steps_per_second": steps_per_s,
            "examples_per_second": steps_per_s * self._batch_size,
            "target_tokens_per_second": self._tokens / elapsed,
        }
        self._last_step, self._last_time, self._tokens = step, now, 0.0
        if self._summary:
            self._summary.write_scalars(
                step, {**{k: v for k, v in record.items() if k != "step"}, **rates}
            )
            self._flush_summaries()
        if not self._write:
            return None
        eta = (self._train_steps - step) / max(steps_per_s, 1e-9)
        return (
            f"step {step}/{self._train_steps} loss {record['loss']:.4f} "
            f"token_acc {record.get('accuracy', float('nan')):.3f} "
            + (f"ctc {record['encoder_ctc']:.3f} " if "encoder_ctc" in record else "")
            + f"{steps_per_s:.2f} step/s {rates['examples_per_second']:.0f} ex/s "
            f"{rates['target_tokens_per_second']:.0f} tok/s eta {eta / 60:.1f} min"
        )

    def write_eval(self, step: int, results: Mapping[str, Mapping[str, Any]]) -> None:
        scalars = {
            f"eval/{task}/{k}": float(v)
            for task, m in results.items()
            for k, v in m.items()
            if isinstance(v, (int, float))
        }
        if self._log:
            self._log.write(json.dumps({"step": step, **scalars}) + "\n")
            self._log.flush()
        if self._summary:
            self._summary.write_scalars(step, scalars)
            self._flush_summaries()

    def close(self) -> None:
        if self._log:
            self._log.flush()
        if self._summary:
            self._summary.close()
            if self._staging:
                storage.upload_dir(self._staging.name, self._dir)
                self._staging.cleanup()

    def __enter__(self) -> TrainLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
