"""launch/tpu_vm.py against a stand-in `gcloud` on PATH (tests/gcloud_standin.py).

- Bad input (no project, zone or TPU type, an unknown type, a multi-host run on a
  worker's local disk) stops before any gcloud call, naming the flag and the fix.
- The printed commands (`--dry_run`) are forms the CLI accepts: one slice, several
  slices (node count and prefix, the multislice gin file), spot and reserved capacity.
- create, setup, run, logs, delete for real (slow: `python -m pytest -m slow`): the
  tiny demo trains 4 steps across the 2 workers of a v4-16 slice from the launcher's
  own command (one jax.distributed job of 2 processes), every worker keeps its log,
  and the queued resource is deleted.
"""

import json
import os
import shlex
import subprocess
import sys

import pytest
from tiny_train_flags import TINY_TRAIN_FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "tpu_vm.py")
WHERE = ["--name=slt-test", "--project=proj", "--zone=us-central2-b"]


@pytest.fixture
def gcloud(tmp_path):
    """PATH with the stand-in gcloud first; returns (env, dir of its records)."""
    bin_dir, record_dir = tmp_path / "bin", tmp_path / "gcloud"
    bin_dir.mkdir()
    script = bin_dir / "gcloud"
    script.write_text(
        f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
        f'{shlex.quote(os.path.join(REPO, "tests", "gcloud_standin.py"))} "$@"\n'
    )
    script.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env["GCLOUD_STANDIN_DIR"] = str(record_dir)
    return env, record_dir


def _launch(env, *args, timeout=600):
    return subprocess.run(
        [sys.executable, LAUNCHER, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _calls(record_dir):
    path = record_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    "args, flag, fix",
    [
        (["create", "--name=a", "--zone=z", "--accelerator_type=v4-8"], "--project", "my-project"),
        (["create", "--name=a", "--project=p", "--accelerator_type=v4-8"], "--zone", "us-west4-a"),
        (["create", *WHERE], "--accelerator_type", "v5litepod-16"),
        (["create", *WHERE, "--accelerator_type=v9-8"], "--accelerator_type='v9-8'", "v5p-32"),
        (["create", *WHERE, "--accelerator_type=v5litepod-12"], "size 12", "v5litepod-16"),
        (
            ["run", *WHERE, "--accelerator_type=v4-16", "--model_dir=/tmp/run", "--", "x"],
            "--model_dir='/tmp/run'",
            "gs://BUCKET",
        ),
        (
            ["run", *WHERE, "--node_count=2", "--accelerator_type=v4-8", "--model_dir=runs/a"],
            "2 hosts",
            "gs://BUCKET",
        ),
    ],
)
def test_bad_input_stops_before_any_gcloud_call(gcloud, args, flag, fix):
    env, record_dir = gcloud
    result = _launch(env, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert flag in result.stderr and fix in result.stderr, result.stderr
    assert _calls(record_dir) == []


def _dry_run(env, *args):
    result = _launch(env, "--dry_run", *args)
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines()]


def test_dry_run_prints_forms_the_cli_accepts(gcloud):
    env, record_dir = gcloud
    one = _dry_run(env, "create", *WHERE, "--accelerator_type=v5litepod-16", "--capacity=spot")
    assert one == [
        [
            "gcloud",
            *["compute", "tpus", "queued-resources", "create", "slt-test"],
            "--project=proj",
            "--zone=us-central2-b",
            "--accelerator-type=v5litepod-16",
            "--runtime-version=v2-alpha-tpuv5-lite",
            "--node-id=slt-test",
            "--spot",
        ]
    ]
    two = _dry_run(
        env, "create", *WHERE, "--node_count=2", "--accelerator_type=v5p-16", "--capacity=reserved"
    )
    assert "--node-count=2" in two[0] and "--node-prefix=slt-test" in two[0]
    assert "--reserved" in two[0] and "--runtime-version=v2-alpha-tpuv5" in two[0]
    run = _dry_run(
        env,
        "run",
        *WHERE,
        "--node_count=2",
        "--accelerator_type=v5p-16",
        "--model_dir=gs://b/runs/x",
        "--",
        "--gin_file=runs/demo.gin",
    )
    assert [c[5] for c in run] == ["slt-test-0", "slt-test-1"]  # one ssh per slice
    payload = run[0][-1]
    assert payload.startswith("--command=bash -c ")
    for part in (
        "SLT_DISTRIBUTED_AUTO=1",
        "--gin_file=partitioning/multislice.gin",
        "--gin.NUM_SLICES=2",
        '--gin.MODEL_DIR=\\"gs://b/runs/x\\"',
        "$HOME/slt_logs/x-$HOSTNAME.log",
    ):
        assert part in payload or part.replace("\\", "") in shlex.split(payload[10:])[2], part
    setup = _dry_run(env, "setup", *WHERE, "--node_count=2")
    assert [c[4] for c in setup] == ["scp", "scp", "ssh", "ssh"]
    assert setup[0][6] == "slt-test-0:slt-checkout.tar.gz" and "--worker=all" in setup[0]
    assert 'pip install -e ".[tpu]"' in setup[2][-1]
    delete = _dry_run(env, "delete", *WHERE)
    assert delete[0][4:6] == ["delete", "slt-test"] and "--force" in delete[0]
    # Every printed command passes the stand-in's form checks (and nothing ran).
    check_env = dict(env, GCLOUD_STANDIN_CHECK_ONLY="1")
    for command in [*one, *two, *run, *setup, *delete]:
        result = subprocess.run(command, env=check_env, capture_output=True, text=True)
        assert result.returncode == 0, (command, result.stderr)
    # ...and the stand-in does reject what gcloud rejects.
    for bad in (
        [*one[0], "--node-count=2"],  # both node forms
        [*one[0], "--preemptible"],  # not a queued-resources flag
        [c for c in one[0] if not c.startswith("--zone")],
    ):
        assert subprocess.run(bad, env=check_env, capture_output=True).returncode == 2, bad
    assert len(_calls(record_dir)) == len(one + two + run + setup + delete) + 3


@pytest.mark.slow  # two job starts on 2 cores: minutes
def test_create_setup_run_logs_delete_trains_on_two_workers(gcloud, tmp_path):
    env, record_dir = gcloud
    model_dir = tmp_path / "shared" / "tiny"
    tpu = [*WHERE, "--accelerator_type=v4-16"]  # 8 chips on 2 TPU VMs
    assert _launch(env, "create", *tpu).returncode == 0
    setup = _launch(env, "setup", *WHERE, "--install_command=test -f setup.py")
    assert setup.returncode == 0, setup.stderr
    steps = [
        *TINY_TRAIN_FLAGS,
        "--gin.train.train_steps=4",
        "--gin.slt.OptimizerConfig.decay_steps=4",
        "--gin.slt.EvalConfig.final=False",
        "--gin.slt.InputConfig.num_input_shards=2",
        "--gin.slt.PartitioningConfig.donate_state=False",
    ]
    run = _launch(env, "run", *tpu, f"--model_dir={model_dir}", "--shared_model_dir", "--", *steps)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # Both workers ran the job from their own checkout and joined one job.
    for worker in ("w0", "w1"):
        assert f"[slt-test-{worker}] " in run.stdout
        home = record_dir / "workers" / "slt-test" / worker
        assert (home / "slt" / "setup.py").exists()
        log_text = (home / "slt_logs" / f"tiny-slt-test-{worker}.log").read_text()
        process = worker[1]
        assert f"jax.distributed: process {process} of 2 processes" in log_text, log_text[-2000:]
    metrics = (model_dir / "train" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]
    assert (model_dir / "checkpoints" / "4").is_dir()
    logs = _launch(env, "logs", *WHERE, "--run_name=tiny", "--lines=400")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.count("step 4/4") == 1  # process 0 prints the steps
    for process in (0, 1):
        assert f"jax.distributed: process {process} of 2 processes" in logs.stdout
    assert _launch(env, "delete", *WHERE).returncode == 0
    assert json.loads((record_dir / "state.json").read_text()) == {"queued_resources": {}}
    verbs = [call[2:4] for call in _calls(record_dir)]
    assert verbs == [
        ["queued-resources", "create"],
        ["tpu-vm", "scp"],
        ["tpu-vm", "ssh"],
        ["tpu-vm", "ssh"],
        ["tpu-vm", "ssh"],
        ["queued-resources", "delete"],
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["tpu_vm.py", "--help"],
        *[["tpu_vm.py", verb, "--help"] for verb in ("create", "setup", "run", "logs", "delete")],
        ["gke_xpk.py", "--help"],
    ],
)
def test_launchers_answer_help(args):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", args[0]), *args[1:]],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr
    if args[1] == "--help":  # the top level points at the walk-through
        assert "docs/launch.md" in result.stdout
