"""Exact resume and multi-host training of `python -m slt.train`, in subprocesses.

Slow (several full job starts each): run with `python -m pytest -m slow tests`.

- A run stopped by SIGTERM (exit 0, saved), resumed, killed by SIGKILL at a random
  step, and resumed again ends bit-identical to an uninterrupted run, restoring the
  saved input iterator state; replaying the input instead (the default) too.
- Input states saved by 2 processes restore on 1 process reading both input shards.
- 2 processes x 4 CPU devices end with the params of 1 process x 8 devices.
- Killing one of 2 processes makes the other exit non-zero within a bounded time.
"""

import json
import os
import random
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
from helpers import train_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow
NO_EVAL = "--gin.slt.EvalConfig.final=False"  # these tests check training only


def _env(devices=1, **extra):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    env.update(extra)
    return env


def _run(cmd, env=None, timeout=900):
    result = subprocess.run(
        cmd, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _logged_steps(model_dir):
    path = os.path.join(model_dir, "train", "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def _start_and_signal(cmd, model_dir, at_step, sig, timeout=900):
    """Starts a run, sends `sig` once step `at_step` is logged; returns (rc, stdout)."""
    process = subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        steps = [r["step"] for r in _logged_steps(model_dir) if "loss" in r]
        if steps and steps[-1] >= at_step:
            process.send_signal(sig)
            break
        time.sleep(0.2)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def _final_params(model_dir, step):
    """The saved params as numpy arrays (no mesh needed)."""
    import jax
    import orbax.checkpoint as ocp

    path = os.path.join(model_dir, "checkpoints", str(step), "state")
    reader = ocp.PyTreeCheckpointer()
    tree = reader.metadata(path).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return state["params"]


def jax_tree_equal(a, b):
    import jax

    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_sigterm_then_sigkill_then_resume_is_bit_identical(tmp_path):
    steps = 24
    rng = random.Random(int(time.time()))
    sigterm_at, sigkill_at = rng.randint(3, 9), rng.randint(13, 20)
    print("SIGTERM after step", sigterm_at, "SIGKILL after step", sigkill_at)
    periodic = ["--gin.slt.CheckpointConfig.period=4"]
    straight = tmp_path / "straight"
    _run(train_command(straight, steps, NO_EVAL, *periodic))
    # The interrupted run saves the input iterator state with its checkpoints (off by
    # default) and restores it; the `replayed` run below replays instead.
    periodic.append("--gin.slt.InputConfig.save_state=True")

    interrupted = tmp_path / "interrupted"
    rc, output = _start_and_signal(
        train_command(interrupted, steps, NO_EVAL, *periodic),
        interrupted,
        sigterm_at,
        signal.SIGTERM,
    )
    assert rc == 0, output[-3000:]
    saved = int(output.split("SIGTERM: saved step ")[1].split()[0])
    assert saved >= sigterm_at
    assert str(saved) in os.listdir(interrupted / "checkpoints")

    rc, output = _start_and_signal(
        train_command(interrupted, steps, NO_EVAL, *periodic),
        interrupted,
        sigkill_at,
        signal.SIGKILL,
    )
    assert rc == -signal.SIGKILL, output[-3000:]
    assert f"resuming from checkpoint step {saved}" in output
    # The SIGTERM save wrote the iterator state with the checkpoint: no replay.
    assert (
        f"input: restored the iterator state of input shards [0] of 1 at batch {saved}" in output
    ), output[-3000:]
    # SIGKILL may fall between orbax committing a step and its input state being saved:
    # whether the state is there decides which the resume must do.
    latest = max(int(n) for n in os.listdir(interrupted / "checkpoints") if n.isdigit())
    saved = (interrupted / "input_state" / f"step_{latest}" / "shard_0-of-1").is_dir()
    output = _run(train_command(interrupted, steps, NO_EVAL, *periodic))
    assert f"resuming from checkpoint step {latest}" in output
    restored = f"input: restored the iterator state of input shards [0] of 1 at batch {latest}"
    if saved:  # a failed restore (which falls back to replaying) fails here
        assert restored in output and "input: replaying" not in output, output[-3000:]
    else:
        assert f"input: replaying {latest} batches" in output, output[-3000:]
    # Only the input states of steps orbax keeps (3 newest) are left.
    kept = {f"step_{s}" for s in os.listdir(interrupted / "checkpoints") if s.isdigit()}
    assert set(os.listdir(interrupted / "input_state")) <= kept

    jax_tree_equal(_final_params(straight, steps), _final_params(interrupted, steps))
    losses = [(r["step"], r["loss"]) for r in _logged_steps(straight) if "loss" in r]
    assert losses == [(r["step"], r["loss"]) for r in _logged_steps(interrupted) if "loss" in r]
    assert [s for s, _ in losses] == list(range(1, steps + 1))

    # Replaying (the input state off) resumes to the same params too.
    replayed = tmp_path / "replayed"
    no_state = ["--gin.slt.CheckpointConfig.period=4"]  # the default: no input state
    _run(
        train_command(
            replayed, 10, NO_EVAL, *no_state, f"--gin.slt.OptimizerConfig.decay_steps={steps}"
        )
    )
    output = _run(train_command(replayed, steps, NO_EVAL, *no_state))
    assert (
        "input: replaying 10 batches of input shards [0] of 1 (no iterator state "
        "restored: slt.InputConfig.save_state=False; with True"
    ) in output
    assert not os.path.exists(replayed / "input_state")
    jax_tree_equal(_final_params(straight, steps), _final_params(replayed, steps))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_two_processes(model_dir, steps, *extra):
    port = _free_port()
    return [
        subprocess.Popen(
            train_command(model_dir, steps, NO_EVAL, *extra),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(
                4,
                SLT_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                SLT_NUM_PROCESSES="2",
                SLT_PROCESS_ID=str(i),
            ),
        )
        for i in range(2)
    ]


# Fixing the number of input shards makes the data independent of the host count.
# Donation off: with 4 or more fake CPU devices, donating the state while several steps
# are queued can deadlock XLA:CPU's all-reduce rendezvous (docs/architecture.md, "JAX on CPU").
MULTI = [
    "--gin.slt.InputConfig.num_input_shards=2",
    "--gin.slt.PartitioningConfig.donate_state=False",
    "--gin.slt.CheckpointConfig.period=1000",
]


def test_two_processes_match_one_process_with_eight_devices(tmp_path):
    steps = 6
    one = tmp_path / "one"
    _run(train_command(one, steps, NO_EVAL, *MULTI), env=_env(8))
    two = tmp_path / "two"
    processes = _start_two_processes(two, steps, *MULTI)
    outputs = [p.communicate(timeout=900) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    a, b = _final_params(one, steps), _final_params(two, steps)
    import jax

    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
    la = [r["loss"] for r in _logged_steps(one) if "loss" in r]
    lb = [r["loss"] for r in _logged_steps(two) if "loss" in r]
    assert len(la) == len(lb) == steps
    np.testing.assert_allclose(la, lb, rtol=1e-5)


def test_input_state_saved_by_two_hosts_restores_on_one(tmp_path):
    """Input states are per input shard: 2 processes save one shard each, and 1
    process reading both shards restores them (no replay), ending at the params of
    an uninterrupted 1-process run."""
    steps = 6
    with_state = [*MULTI, "--gin.slt.InputConfig.save_state=True"]
    one = tmp_path / "one"
    _run(train_command(one, steps, NO_EVAL, *with_state), env=_env(8))
    two = tmp_path / "two"
    schedule = f"--gin.slt.OptimizerConfig.decay_steps={steps}"
    processes = _start_two_processes(two, 3, *with_state, schedule)
    for p in processes:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    assert sorted(os.listdir(two / "input_state" / "step_3")) == ["shard_0-of-2", "shard_1-of-2"]
    output = _run(train_command(two, steps, NO_EVAL, *with_state), env=_env(8))
    assert "input: restored the iterator state of input shards [0, 1] of 2 at batch 3" in output, (
        output[-3000:]
    )
    a, b = _final_params(one, steps), _final_params(two, steps)
    import jax

    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)


def test_killing_one_process_stops_the_other(tmp_path):
    model_dir = tmp_path / "run"
    processes = _start_two_processes(
        model_dir,
        10_000,
        *MULTI,
        "--gin.slt.DistributedConfig.step_timeout_s=20",
        "--gin.slt.DistributedConfig.heartbeat_timeout_s=10",
    )
    deadline = time.time() + 900
    while time.time() < deadline and not [
        r for r in _logged_steps(model_dir) if "loss" in r and r["step"] >= 2
    ]:
        assert processes[0].poll() is None, processes[0].communicate()[1][-3000:]
        time.sleep(0.5)
    processes[1].kill()
    killed_at = time.time()
    out, err = processes[0].communicate(timeout=180)  # bounded: never hangs
    waited = time.time() - killed_at
    print(f"survivor exited with {processes[0].returncode} after {waited:.0f} s")
    assert processes[0].returncode != 0
    # Whichever notices first: our step watchdog, our collective-failure error, or
    # JAX's heartbeat; each says that a peer process is gone.
    assert (
        "no train step finished" in err
        or "another process of this job probably died" in err
        or "distributed service detected fatal errors" in err
        or "heartbeat" in err.lower()
    ), err[-3000:]


def test_a_run_stopped_at_an_evaluation_step_evaluates_it_on_resume(tmp_path):
    # SIGTERM at an evaluation step saves and exits before evaluating it (the grace
    # period is for saving); the resumed run must evaluate that step, as the study's
    # equal-steps arms read it.
    import shutil

    model_dir = tmp_path / "run"
    eval_flags = [
        "--gin.slt.CheckpointConfig.period=2",
        "--gin.slt.EvalConfig.period=2",
        "--gin.slt.EvalConfig.tasks=['fingerspelling_slt_ase_en']",
        "--gin.slt.EvalConfig.periodic_split='test'",
        "--gin.slt.EvalConfig.final=False",
        "--gin.train.task_feature_lengths={'landmarks': 64, 'inputs': 24, 'targets': 8}",
    ]
    _run(train_command(model_dir, 4, *eval_flags))
    at_step_2 = model_dir / "eval" / "step_2" / "metrics.json"
    before = json.loads(at_step_2.read_text())
    # The state of a run stopped right after saving step 2: no step-4 checkpoint, no
    # evaluation of step 2.
    shutil.rmtree(model_dir / "eval" / "step_2")
    shutil.rmtree(model_dir / "checkpoints" / "4")
    output = _run(train_command(model_dir, 4, *eval_flags))
    assert "evaluating step 2, which the stopped run did not" in output
    assert json.loads(at_step_2.read_text()) == before
    # Once evaluated, a later resume does not evaluate it again.
    shutil.rmtree(model_dir / "checkpoints" / "4")
    assert "evaluating step 2" not in _run(train_command(model_dir, 4, *eval_flags))
