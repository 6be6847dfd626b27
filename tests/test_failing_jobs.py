"""A job that fails after its input pipeline started ends at once, with status 1.

At a normal interpreter exit, a tf.data iterator still held by the error's traceback is
destroyed after Python has stopped its threads, and its destructor waits for them
forever: a failed `slt.eval` hung until it was killed. `gin_utils.run_job` ends the
process instead. Here a tiny training run saves step 2 and then diverges (a learning
rate of 1e30), and an evaluation of that checkpoint asks for beam search with the CTC
weight of greedy decoding; each must exit within seconds of its error.
"""

import subprocess
import sys
import threading
import time

import pytest
from helpers import alarming_lines
from tiny_train_flags import TINY_TRAIN_FLAGS

# From the error line to the end of the process: flushing and exiting take well under a
# second; the bound leaves room for a loaded machine.
EXIT_BOUND_S = 20
# Start-up, compilation and the steps before the error, on 2 busy cores.
START_BOUND_S = 300


def _run_until_error(command: list[str], error_text: str) -> tuple[int, str, float]:
    """Runs `command`; returns its status, output and the seconds from the first output
    line containing `error_text` to the end of the process (fails if it never exits)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if error_text in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not seen.wait(START_BOUND_S):
            pytest.fail(f"no {error_text!r} within {START_BOUND_S} s:\n{''.join(lines)}")
        errored = time.monotonic()
        try:
            status = process.wait(EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_BOUND_S} s after its error:\n{''.join(lines[-30:])}")
        elapsed = time.monotonic() - errored
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(10)
    return status, "".join(lines), elapsed


def test_failed_train_and_eval_end_within_seconds(tmp_path):
    model_dir = tmp_path / "run"
    status, output, elapsed = _run_until_error(
        [
            sys.executable,
            "-m",
            "slt.train",
            *TINY_TRAIN_FLAGS,
            f'--gin.MODEL_DIR="{model_dir}"',
            "--gin.train.train_steps=20",
            "--gin.slt.CheckpointConfig.period=2",
            "--gin.slt.OptimizerConfig.learning_rate=1e30",
            # The demo's words with a small clip buffer: the first batch comes sooner.
            '--gin.train.mixture_or_task_name="fingerspelling_word_slt_ase_en"',
        ],
        "non-finite loss",
    )
    assert status == 1, output
    assert elapsed < EXIT_BOUND_S
    assert "ERROR: non-finite loss" in output
    assert len(alarming_lines(output)) == 1 and "In call to configurable" not in output, output
    assert (model_dir / "checkpoints" / "2").is_dir(), output

    status, output, elapsed = _run_until_error(
        [
            sys.executable,
            "-m",
            "slt.eval",
            "--gin_file=runs/eval.gin",
            f'--gin.CHECKPOINT="{model_dir}"',
            "--gin.evaluate.show_progress=False",
            '--gin.evaluate.decode_options={"decode_method": "beam", "num_beams": 4}',
        ],
        "ctc_weight",
    )
    assert status == 1, output
    assert elapsed < EXIT_BOUND_S
    # A user error is one line that says what to change, not a traceback.
    assert "Traceback" not in output, output
    assert (
        "ERROR: DecodingConfig.ctc_weight=0.7 works with method='greedy' only (got 'beam'); "
        "set ctc_weight=0.0 with it" in output
    ), output
    assert "In call to configurable" not in output
    # Nothing else looks like an error: no CUDA or TPU probe lines at the start.
    assert len(alarming_lines(output)) == 1, output
