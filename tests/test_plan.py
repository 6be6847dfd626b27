"""`python -m slt.plan`: lower bounds by hand, bad input before any compile, and a real
plan over two small TPU slices whose second run reads every report from its cache."""

import json
import os
import subprocess
import sys

import pytest

from slt import plan
from slt.performance import hardware

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TINY = [
    "--gin_file=models/tiny.gin",
    "--gin.train.batch_size=16",
    '--gin.train.task_feature_lengths={"landmarks": 16, "inputs": 8, "targets": 8}',
]
requires_libtpu = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import libtpu"], capture_output=True).returncode,
    reason="needs the TPU runtime (pip install -e '.[tpu]')",
)


def test_lower_bounds_by_hand():
    v5e = hardware.TPU_RATES["v5e"]
    # A group over both torus dimensions sends over 4 links of 400/4/2 = 50 GB/s.
    assert v5e.fast_send_bandwidth(2) == pytest.approx(200e9)
    flops, params = 1e15, 1e9
    compute = flops / (256 * 197e12)
    gathers = 2 * (255 / 256) * params * 2 / 200e9  # twice every weight in bf16
    assert plan.lower_bound_s(flops, params, "fsdp", 256, v5e) == pytest.approx(
        max(compute, gathers)
    )
    # With 4-way tensor parallelism each chip gathers a quarter of each weight over 64.
    tp = 2 * (63 / 64) * params * 2 / 4 / 200e9
    assert plan.lower_bound_s(flops, params, "fsdp_tp4", 256, v5e) == pytest.approx(
        max(compute, tp)
    )
    # Data parallelism all-reduces every gradient: twice (n-1)/n of it.
    allreduce = 2 * (255 / 256) * params * 2 / 200e9
    assert plan.lower_bound_s(flops, params, "dp", 256, v5e) == pytest.approx(
        max(compute, allreduce)
    )
    # One chip: nothing to send, compute alone.
    assert plan.lower_bound_s(flops, params, "fsdp", 1, v5e) == pytest.approx(flops / 197e12)


def _plan(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "slt.plan", f"--plan_dir={tmp_path / 'plan'}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps=0"], "--steps=0: a plan needs a positive number of steps"),
        (["--steps=10", "--topologies=v9x-8"], "unknown topology 'v9x-8'"),
        (["--steps=10", "--rules=zero3"], "unknown rule set(s) ['zero3']"),
        (
            ["--steps=10", "--topologies=v5e-256", "--rules=fsdp"],
            "global batch 16 (gin: train.batch_size) cannot be split over any candidate",
        ),
    ],
)
@requires_libtpu
def test_bad_input_is_one_error_before_any_compile(tmp_path, args, message):
    result = _plan(tmp_path, *args, *TINY)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "compiling" not in result.stdout


@requires_libtpu
def test_plan_ranks_compiled_candidates_and_reuses_its_cache(tmp_path):
    args = ["--steps=1000", "--topologies=v5e-4,v5e-8", "--rules=dp,fsdp", *TINY]
    first = _plan(tmp_path, *args, f"--json_out={tmp_path / 'a.json'}")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    result = json.loads((tmp_path / "a.json").read_text())
    rows = result["rows"]
    assert {(r["topology"], r["rules"]) for r in rows} == {
        (t, r) for t in ("v5e-4", "v5e-8") for r in ("dp", "fsdp")
    }
    compiled = [r for r in rows if "chip_hours" in r]
    assert compiled, rows
    for row in compiled:
        # chip-hours = predicted step time x chips x steps, and never below the bound.
        assert row["chip_hours"] == pytest.approx(row["predicted_s"] * row["chips"] * 1000 / 3600)
        assert row["predicted_s"] >= row["lower_bound_s"] * (1 - 1e-9)
        assert 0 < row["predicted_mfu"] < 1
        assert row["mfu_no_overlap"] == pytest.approx(
            row["predicted_mfu"] * row["predicted_s"] / row["no_overlap_s"]
        )
        assert row["mfu_no_overlap"] <= row["predicted_mfu"]
    hours = [r["chip_hours"] for r in compiled if r["fits"]]
    assert hours == sorted(hours) and rows[0]["chip_hours"] == hours[0]
    # A candidate left out was left out because its bound could not beat the best.
    for row in rows:
        if row["status"].startswith("not compiled: its lower bound"):
            assert row["lower_bound_chip_hours"] >= hours[0]
    assert "best: " in first.stdout
    # The second run compiles nothing and ranks the same.
    second = _plan(tmp_path, *args, f"--json_out={tmp_path / 'b.json'}")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "plan: compiling" not in second.stdout
    again = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [(r["topology"], r["rules"], r.get("chip_hours")) for r in again] == [
        (r["topology"], r["rules"], r.get("chip_hours")) for r in rows
    ]
