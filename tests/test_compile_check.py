"""`python -m slt.compile_check`: meshes over compile-only TPU devices, the report of a
compiled train step on fake CPU devices and on a TPU v5e-8, the fit verdict with its
advice, and the errors of bad input. TPU cases need libtpu (the `[test]` extra has it)."""

from __future__ import annotations

import importlib.util
import math
import os

import jax
import pytest
from helpers import run_compile_check, tiny_t5_config

from slt import compile_check
from slt.evaluation import evaluate as evaluate_lib
from slt.models import decoding
from slt.performance import compiled as compiled_lib
from slt.training import partitioning
from slt.training import trainer as trainer_lib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

requires_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason='needs the TPU compiler: pip install -e ".[tpu]" (the [test] extra has it)',
)


# One layer each side, width 64: the compile tests' model (helpers.tiny_t5_config).
SMALL = tiny_t5_config(emb_dim=64, num_heads=4, mlp_dim=128, dtype="float32")


def _config(partitioning_config: partitioning.PartitioningConfig, batch_size: int = 8):
    return compile_check.CheckConfig(
        task_feature_lengths={"landmarks": 8, "inputs": 4, "targets": 4},
        batch_size=batch_size,
        num_microbatches=1,
        configs={
            "network_config": SMALL,
            "optimizer_config": trainer_lib.OptimizerConfig(),
            "loss_config": trainer_lib.LossConfig(),
            "decoding_config": decoding.DecodingConfig(),
            "partitioning_config": partitioning_config,
            "eval_config": evaluate_lib.EvalConfig(batch_size=8),
        },
    )


# --- meshes over compile-only devices (nothing compiled) ---------------------------


@requires_libtpu
@pytest.mark.parametrize(
    "name, model_parallel",
    [("v4-128", 2), ("v4-128", 4), ("v5p-128", 2), ("v6e-256", 2), ("v6e-256", 4)],
)
def test_mesh_splits_physical_axes(name, model_parallel):
    devices = compiled_lib.topology(name).devices
    mesh = partitioning.make_mesh((1, -1, model_parallel), devices=devices)
    assert dict(mesh.shape) == {
        "data": 1,
        "fsdp": len(devices) // model_parallel,
        "model": model_parallel,
    }
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in devices)


@requires_libtpu
def test_jax_make_mesh_alone_cannot_split_a_v4_cube():
    # Why make_mesh lays slices out itself: a model axis of 2 on a 4x4x4 torus.
    devices = compiled_lib.topology("v4-128").devices
    with pytest.raises((ValueError, NotImplementedError), match="physical mesh"):
        jax.make_mesh((1, 32, 2), partitioning.MESH_AXES, devices=devices)


@requires_libtpu
def test_multislice_mesh_puts_each_slice_in_one_dcn_block():
    topo = compiled_lib.topology("v5e-8", num_slices=2)
    assert topo.num_chips == 16
    mesh = partitioning.make_mesh((1, -1, 1), devices=topo.devices, dcn_mesh_shape=(2, 1, 1))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 8, "model": 1}
    for data_index in range(2):
        assert {d.slice_index for d in mesh.devices[data_index].flat} == {data_index}


@requires_libtpu
def test_one_slice_of_compile_only_devices_takes_a_dcn_mesh_shape():
    # Compile-only devices of one slice carry no slice_index.
    devices = compiled_lib.topology("v5e-8").devices
    assert getattr(devices[0], "slice_index", None) is None
    mesh = partitioning.make_mesh((1, -1, 1), devices=devices, dcn_mesh_shape=(1, 1, 1))
    assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "model": 1}
    # Two "slices" of one process: consecutive blocks of its devices.
    mesh = partitioning.make_mesh((1, -1, 1), devices=devices, dcn_mesh_shape=(2, 1, 1))
    assert {d.id for d in mesh.devices[0].flat} == {d.id for d in devices[:4]}


# --- bad input, before any compile ---------------------------------------------------


def test_unknown_topology_lists_the_accepted_forms():
    with pytest.raises(ValueError, match=r"unknown topology 'tpu-9'.*v4-N.*v5e-N.*cpu-N"):
        compiled_lib.topology("tpu-9")
    with pytest.raises(ValueError, match=r"v5e slices have \[1, 4, 8"):
        compiled_lib.topology("v5e-12")


def test_mesh_that_does_not_match_the_topology_fails_before_compiling():
    config = _config(partitioning.PartitioningConfig(mesh_shape=(2, 1, 1)))
    with pytest.raises(ValueError, match=r"mesh_shape \(2, 1, 1\) needs 2 devices, there are 1"):
        compile_check.check("cpu-1", config=config, decode=False)


@requires_libtpu
def test_parameters_that_do_not_divide_fail_before_compiling():
    # 4 heads cannot be split 8 ways over `model`.
    rules = partitioning.TENSOR_PARALLEL_RULES
    config = _config(
        partitioning.PartitioningConfig(mesh_shape=(1, 1, 8), logical_axis_rules=rules)
    )
    with pytest.raises(
        ValueError, match=r"(?s)cannot be split over mesh.*rel_embedding.*slt.PartitioningConfig"
    ):
        compile_check.check("v5e-8", config=config, decode=False)


@requires_libtpu
def test_batch_that_does_not_divide_fails_before_compiling():
    config = _config(partitioning.PartitioningConfig(), batch_size=12)
    with pytest.raises(ValueError, match=r"batch_size=12 does not split over 8 data shards"):
        compile_check.check("v5e-8", config=config, decode=False)


def test_num_slices_needs_a_dcn_mesh_shape():
    with pytest.raises(ValueError, match=r"multislice.gin"):
        compile_check.check(
            "cpu-1", num_slices=2, config=_config(partitioning.PartitioningConfig())
        )


# --- the command: compile and report -------------------------------------------------


# A while loop as TPU HLO writes it (no known trip count: the condition compares the
# counter with a constant), with an all-gather in its body, and one with the count in
# its backend config; the all-reduce in the entry runs once. A computation for v5p's
# SparseCore ends with '}, execution_thread=...', not '}'.
LOOP_HLO = """HloModule m

%cond (p: (s32[], f32[8])) -> pred[] {
  %p = (s32[], f32[8]) parameter(0)
  %n = s32[]{:T(128)} constant(24)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%body (q: (s32[], f32[8])) -> (s32[], f32[8]) {
  %q = (s32[], f32[8]) parameter(0)
  %w = f32[8]{0} get-tuple-element(%q), index=1
  %ag = bf16[64,32]{1,0} all-gather(%w), dimensions={0}
  ROOT %t = (s32[], f32[8]) tuple(%i, %w)
}

%copy_on_sparsecore (e: f32[8]) -> f32[8] {
  %e = f32[8]{0} parameter(0)
  ROOT %c = f32[8]{0} copy(%e)
}, execution_thread="sparsecore"

%body2 (r: (s32[], f32[8])) -> (s32[], f32[8]) {
  %r = (s32[], f32[8]) parameter(0)
  %rs = f32[4]{0} reduce-scatter(%x), dimensions={0}, to_apply=%add
  ROOT %t2 = (s32[], f32[8]) tuple(%i, %x)
}

ENTRY %main (a: f32[8]) -> f32[8] {
  %init = (s32[], f32[8]) tuple(%zero, %a)
  %loop = (s32[], f32[8]) while(%init), condition=%cond, body=%body
  %loop2 = (s32[], f32[8]) while(%init), condition=%cond2, body=%body2,\
 backend_config={"known_trip_count":{"n":"3"}}
  ROOT %ar = f32[8]{0} all-reduce(%a), to_apply=%add
}
"""


def test_collectives_in_a_loop_count_once_per_iteration():
    got = compiled_lib.collectives(LOOP_HLO)
    assert got["all-gather"] == {"count": 24, "bytes": 24 * 2 * 64 * 32}
    assert got["reduce-scatter"] == {"count": 3, "bytes": 3 * 4 * 4}
    assert got["all-reduce"] == {"count": 1, "bytes": 32}
    assert compiled_lib.has_loops(LOOP_HLO)
    straight = LOOP_HLO.replace("constant(24)", "constant(1)").replace('"n":"3"', '"n":"1"')
    assert not compiled_lib.has_loops(straight)
    assert compiled_lib.collectives(straight)["all-gather"]["count"] == 1


# XLA on TPU splits one asynchronous all-gather into a start fusion, a fusion that
# overlaps compute with it and a done fusion; each of their computations holds the
# same all-gather instruction (shapes and names as libtpu writes them).
ASYNC_HLO = """HloModule m

%fused_computation.1 (p0: bf16[32,512]) -> (bf16[32,512], bf16[256,512]) {
  %p0 = bf16[32,512]{1,0} parameter(0)
  %all-gather.1 = bf16[256,512]{1,0} all-gather(%p0),\
 replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}
  ROOT %t = (bf16[32,512], bf16[256,512]) tuple(%p0, %all-gather.1)
}

%async_collective_fusion.2 (p1: bf16[32,512], p2: bf16[256,512]) -> (bf16[256,512], bf16[8,512]) {
  %p1 = bf16[32,512]{1,0} parameter(0)
  %all-gather.2 = bf16[256,512]{1,0} all-gather(%p1),\
 replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}
  %c = bf16[8,512]{1,0} constant({...})
  ROOT %t = (bf16[256,512], bf16[8,512]) tuple(%all-gather.2, %c)
}

%fused_computation.3 (p3: bf16[32,512], p4: bf16[256,512]) -> bf16[256,512] {
  %p3 = bf16[32,512]{1,0} parameter(0)
  ROOT %all-gather.3 = bf16[256,512]{1,0} all-gather(%p3),\
 replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}
}

ENTRY %main (a: bf16[32,512]) -> bf16[256,512] {
  %a = bf16[32,512]{1,0} parameter(0)
  %async-collective-start.1 = (bf16[32,512], bf16[256,512]) fusion(%a),\
 kind=kCustom, calls=%fused_computation.1
  %g = bf16[256,512]{1,0} get-tuple-element(%async-collective-start.1), index=1
  %fusion.2 = (bf16[256,512], bf16[8,512]) fusion(%a, %g),\
 kind=kCustom, calls=%async_collective_fusion.2
  %g2 = bf16[256,512]{1,0} get-tuple-element(%fusion.2), index=0
  ROOT %async-collective-done.1 = bf16[256,512]{1,0} fusion(%a, %g2),\
 kind=kCustom, calls=%fused_computation.3
}
"""


def test_an_async_collective_split_over_fusions_counts_once():
    got = compiled_lib.collectives(ASYNC_HLO)
    assert got["all-gather"] == {"count": 1, "bytes": 256 * 512 * 2}
    from slt.performance import step_time

    found = step_time.program_collectives(ASYNC_HLO, num_partitions=8)
    assert [(c.kind, c.bytes, c.times) for c in found] == [("all-gather", 256 * 512 * 2, 1)]


@pytest.fixture(scope="module")
def cpu8_oversized(tmp_path_factory):
    # Data parallel on 8 fake CPU devices, judged against 1 MiB per chip: cannot fit.
    # The replicated parameters alone are over 1 MiB, so without --always_compile the
    # check would not compile the step (see the test of that below).
    return run_compile_check(
        tmp_path_factory.mktemp("cpu8"),
        "cpu8",
        "--topology=cpu-8",
        "--hbm_gib=0.001",
        "--skip_decode",
        "--always_compile",
    )


def test_cpu8_report_counts_memory_flops_and_collectives(cpu8_oversized):
    result, report = cpu8_oversized
    assert report, result.stdout[-3000:] + result.stderr[-3000:]
    train = report["train_step"]
    assert report["mesh"] == {"data": 8, "fsdp": 1, "model": 1}
    assert report["num_chips"] == 8
    # Data parallel: each chip holds every f32 parameter plus the optimizer state.
    assert train["argument_bytes"] > 4 * report["num_params"]
    assert train["peak_bytes"] >= train["argument_bytes"] + train["temp_bytes"]
    assert train["alias_bytes"] > 0  # the state is donated
    # The gradients are all-reduced: at least one f32 copy of every parameter.
    assert train["collectives"]["all-reduce"]["bytes"] >= 4 * report["num_params"]
    assert train["collectives"]["all-gather"]["count"] == 0
    # CPU devices have no public rates: no step time, and the report says why.
    assert report["step_time"] is None and report["predicted_mfu"] is None
    assert "no public rates" in report["step_time_missing"]
    flops = train["flops_per_step"]
    assert flops["xla_total"] == pytest.approx(8 * flops["xla_per_chip"])
    assert 0.7 < flops["xla_total"] / flops["analytic_total"] < 1.3
    for key in (
        "fits",
        "hbm_bytes",
        "peak_bytes",
        "argument_bytes",
        "temp_bytes",
        "output_bytes",
        "flops_per_step",
        "collectives",
        "compile_seconds",
    ):
        assert key in report


def test_oversized_configuration_exits_1_with_advice(cpu8_oversized):
    result, report = cpu8_oversized
    assert result.returncode == 1, result.stderr[-3000:]
    assert report["fits"] is False and report["hbm_bytes"] == int(0.001 * 2**30)
    assert "verdict: DOES NOT FIT" in result.stdout
    for binding in (
        "fsdp.gin",
        "remat_policy",
        "train.num_microbatches=2",
        "train.batch_size=8",
        "scan_layers=True",
    ):
        assert binding in result.stdout, binding


def test_inputs_over_the_hbm_are_not_compiled_and_name_fsdp(cpu8_oversized, tmp_path):
    compiled = cpu8_oversized[1]["train_step"]
    result, report = run_compile_check(
        tmp_path, "bound", "--topology=cpu-8", "--hbm_gib=0.001", "--skip_decode"
    )
    assert result.returncode == 1, result.stderr[-3000:]
    train = report["train_step"]
    assert train["compiled"] is False and report["fits"] is False
    assert train["compile_seconds"] == 0 and train["temp_bytes"] is None
    assert "train step not compiled: its inputs alone are" in result.stdout
    # The bound counts the sharded state and the whole batch shard each chip holds; the
    # compiled step's arguments are the same state, the random key and the batch
    # features it reads (jit drops inputs a function never reads).
    batch_bytes = sum(4 * math.prod(s[1:]) * 16 // 8 for s in report["batch_shapes"].values())
    assert -64 <= train["argument_bytes"] - compiled["argument_bytes"] <= batch_bytes
    assert train["peak_bytes"] == train["argument_bytes"] > report["hbm_bytes"]
    # FSDP splits the replicated state 8 ways: the advice gives that per-chip figure.
    split = train["argument_bytes"] / 8 / 2**30
    assert f"become ~{split:.2f} GiB" in result.stdout
    assert "fsdp.gin" in result.stdout and "remat_policy" not in result.stdout


@requires_libtpu
def test_tpu_compile_out_of_hbm_is_a_report_with_advice(tmp_path):
    # 1,024 rows of 512 frames and 512 target bytes per v5e chip: the TPU compiler stops
    # (RESOURCE_EXHAUSTED) instead of returning a program; its message sizes the
    # temporaries, and the check reports them.
    result, report = run_compile_check(
        tmp_path,
        "oom",
        "--topology=v5e-8",
        "--skip_decode",
        '--gin.train.task_feature_lengths={"landmarks": 512, "inputs": 8, "targets": 512}',
        "--gin.train.batch_size=8192",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    train = report["train_step"]
    assert train["compiled"] is False and train["compiler_out_of_memory"] is True
    assert "RESOURCE_EXHAUSTED" in train["not_compiled_because"]
    assert 16 * 2**30 < train["temp_bytes"] < 64 * 2**30
    assert train["peak_bytes"] == train["argument_bytes"] + train["temp_bytes"]
    assert report["fits"] is False and "Traceback" not in result.stderr
    # Half the activations would fit: the advice says so for microbatches.
    assert "train.num_microbatches=2 (activations ~1/2" in result.stdout
    assert "--always_compile" not in result.stdout


@requires_libtpu
def test_tpu_v5e8_fsdp_compiles_and_fits(tmp_path):
    result, report = run_compile_check(
        tmp_path,
        "v5e8",
        "--topology=v5e-8",
        "--skip_decode",
        "--gin_file=partitioning/fsdp.gin",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert report["fits"] is True and report["chip"] == "TPU v5e"
    assert report["hbm_bytes"] == 16 * 2**30
    assert report["mesh"] == {"data": 1, "fsdp": 8, "model": 1}
    train = report["train_step"]
    # FSDP: parameters are split 8 ways, so a chip holds far less than one f32 copy.
    assert train["argument_bytes"] < 4 * report["num_params"]
    assert train["collectives"]["all-gather"]["count"] > 0
    assert train["step_seconds_bound"] > 0
    # The step-time model: all 8 chips in one slice, FSDP's collectives over `fsdp` on ICI.
    timing = report["step_time"]
    assert timing is train["step_time"] or timing == train["step_time"]
    terms = {k: timing[f"{k}_s"] for k in ("compute", "memory", "collectives")}
    assert timing["predicted_s"] == max(terms.values()) > 0
    assert timing["bound_by"] == max(terms, key=terms.get)
    assert timing["no_overlap_s"] == pytest.approx(sum(terms.values()))
    assert {(r["link"], tuple(r["mesh_axes"])) for r in timing["collectives"]} == {
        ("ICI", ("fsdp",))
    }
    assert 0 < report["predicted_mfu"] < 1
    assert report["predicted_mfu"] == pytest.approx(
        train["flops_per_step"]["analytic_total"] / (timing["predicted_s"] * 8 * 197e12)
    )
    # With no overlap the step takes the sum of its terms: the lower MFU beside it.
    assert report["predicted_mfu_no_overlap"] == pytest.approx(
        train["flops_per_step"]["analytic_total"] / (timing["no_overlap_s"] * 8 * 197e12)
    )
    assert report["predicted_mfu_no_overlap"] <= report["predicted_mfu"]
    assert f"({report['predicted_mfu_no_overlap']:.0%} with no overlap)" in result.stdout
    assert "predicted step times (from the compiled program" in result.stdout
    # FSDP needs each split weight gathered at most twice per step (forward, backward)
    # in the compute dtype. XLA gathers each of this model's weights once and keeps it
    # for the backward (0.43x the need on jax 0.10.2's libtpu, each asynchronous
    # gather counted once); more than 1.25x would gather a weight again for a use.
    need = train["collective_need"]
    assert need["need"]["all-gather"] > 0
    assert 0.25 <= need["gather_ratio"] <= 1.25, need
    assert "weights gathered:" in result.stdout
    assert "verdict: FITS" in result.stdout


# --- slt.train's memory line ---------------------------------------------------------


def test_train_compiles_the_step_once_and_prints_its_memory(capsys):
    import numpy as np

    from slt import train as train_job

    setup = train_job.build_training(
        task_feature_lengths={"landmarks": 8, "inputs": 4, "targets": 4},
        batch_size=2,
        network_config=SMALL,
        partitioning_config=partitioning.PartitioningConfig(donate_state=False),
        devices=jax.devices()[:1],
    )
    trainer = setup.trainer
    state = trainer.init_state(jax.random.key(0))
    rng = jax.random.key(1)
    compiled = train_job.compile_train_step(trainer, state, rng)
    line = capsys.readouterr().out
    assert line.startswith("train step: peak ") and "GiB per chip" in line
    assert "arguments" in line and "compiled in" in line
    batch = {
        k: np.ones(s, np.float32 if k == "encoder_landmarks" else np.int32)
        for k, s in setup.batch_shapes.items()
    }
    _, expected = trainer.train_step(state, batch, rng)
    _, got = compiled(state, batch, rng)
    assert float(got["loss"]) == pytest.approx(float(expected["loss"]), rel=1e-6)


def test_the_step_compiles_ahead_of_time_with_ctc_on_the_signed_text():
    # Accelerators compile the step for `batch_shapes` before the first batch: with
    # the CTC loss on the signed text, batches carry its labels, and so must the shapes.
    import dataclasses

    import numpy as np

    from slt import train as train_job

    setup = train_job.build_training(
        task_feature_lengths={"landmarks": 8, "inputs": 4, "targets": 4},
        batch_size=2,
        network_config=dataclasses.replace(SMALL, encoder_ctc_head=True),
        loss_config=trainer_lib.LossConfig(
            encoder_ctc_weight=1.0, encoder_ctc_targets="signed_text"
        ),
        partitioning_config=partitioning.PartitioningConfig(donate_state=False),
        devices=jax.devices()[:1],
    )
    assert setup.batch_shapes["encoder_ctc_targets"] == (2, 4)
    trainer = setup.trainer
    state = trainer.init_state(jax.random.key(0))
    compiled = train_job.compile_train_step(trainer, state, jax.random.key(1))
    batch = {
        k: np.ones(s, np.float32 if k == "encoder_landmarks" else np.int32)
        for k, s in setup.batch_shapes.items()
    }
    _, metrics = compiled(state, batch, jax.random.key(1))
    assert np.isfinite(float(metrics["loss"])) and "encoder_ctc" in metrics


@pytest.mark.slow
def test_decode_steps_compile_at_the_eval_batch_size(tmp_path):
    result, report = run_compile_check(tmp_path, "decode", "--topology=cpu-8")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert set(report["decode_steps"]) == {"greedy", "beam4"}
    for step in report["decode_steps"].values():
        assert step["batch_size"] == 8 and step["fits"] is True
        # Decoding holds the params (arguments) but no optimizer state.
        assert 4 * report["num_params"] <= step["argument_bytes"]
        assert step["argument_bytes"] < report["train_step"]["argument_bytes"]
    assert "decode beam4 (batch 8)" in result.stdout
