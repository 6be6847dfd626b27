"""Re-running `slt.train` with the same MODEL_DIR resumes: a run killed with SIGKILL and
run again ends with the parameters and per-step losses of a run never interrupted.

The tiny model on the demo's words (`fingerspelling_word_slt_ase_en`), 8 steps, a
checkpoint (with the input iterator state) every 2 steps. The killed run is a real
process; the resumed and the uninterrupted runs are the same job's `main` in this
process, to save two start-ups.
(tests/test_resume.py, marked slow, covers SIGTERM, replay and several processes.)
"""

import json
import logging
import os
import signal
import subprocess
import time

import gin
import numpy as np
from helpers import alarming_lines, train_command
from tiny_train_flags import TINY_TRAIN_FLAGS

from slt import train as train_lib  # sets XLA flags before JAX starts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8
EXTRA = [
    # The demo's words with a small clip buffer: the first batch comes in a second, not
    # after 2,048 clips are composed (paid again by each of the three runs).
    '--gin.train.mixture_or_task_name="fingerspelling_word_slt_ase_en"',
    f"--gin.slt.OptimizerConfig.decay_steps={STEPS}",
    "--gin.slt.CheckpointConfig.period=2",
    "--gin.slt.InputConfig.save_state=True",
    "--gin.slt.EvalConfig.final=False",
]


def _losses(model_dir):
    """{step: loss} of train/metrics.jsonl; a step run twice keeps its last record."""
    with open(os.path.join(model_dir, "train", "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.endswith("\n")]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _committed_steps(model_dir):
    directory = os.path.join(model_dir, "checkpoints")
    return (
        sorted(int(s) for s in os.listdir(directory) if s.isdigit())
        if os.path.isdir(directory)
        else []
    )


def _main(model_dir, capsys):
    """`python -m slt.train` of the tiny model in this process; returns its stdout."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        train_lib.main(
            [
                *TINY_TRAIN_FLAGS,
                f'--gin.MODEL_DIR="{model_dir}"',
                f"--gin.train.train_steps={STEPS}",
                *EXTRA,
            ]
        )
    finally:
        gin.clear_config()
        root.handlers[:] = handlers
        root.setLevel(level)
    return capsys.readouterr().out


def _params(model_dir):
    import orbax.checkpoint as ocp

    path = os.path.join(model_dir, "checkpoints", str(STEPS), "state")
    reader = ocp.PyTreeCheckpointer()
    tree = reader.metadata(path).item_metadata.tree
    import jax

    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))["params"]


def test_killed_run_resumes_to_the_result_of_an_uninterrupted_one(tmp_path, capsys):
    import jax

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        train_command(killed, STEPS, *EXTRA),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    try:
        # Killed once step 4's checkpoint and input state are saved and step 5 has run.
        while time.monotonic() < deadline and process.poll() is None:
            saved = (killed / "input_state" / "step_4" / "shard_0-of-1").is_dir()
            if saved and 4 in _committed_steps(killed) and max(_losses(killed), default=0) >= 5:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, output[-3000:]
    # A quiet start: no TensorFlow CUDA probe, no libtpu host probe, nothing alarming.
    assert not alarming_lines(output), output[-3000:]
    last = _committed_steps(killed)[-1]
    assert 4 <= last < STEPS, (last, output[-3000:])

    output = _main(killed, capsys)
    assert f"resuming from checkpoint step {last}" in output
    # The iterator state saved with that checkpoint is what the input restarts from
    # (tests/test_training.py checks that a restore recomputes no earlier batch).
    if os.path.isdir(killed / "input_state" / f"step_{last}" / "shard_0-of-1"):
        assert (
            f"input: restored the iterator state of input shards [0] of 1 at batch {last}" in output
        )
        assert "input: replaying" not in output, output

    straight = tmp_path / "straight"
    _main(straight, capsys)
    resumed_losses = _losses(killed)
    assert sorted(resumed_losses) == list(range(1, STEPS + 1))
    assert resumed_losses == _losses(straight)
    jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(killed))
