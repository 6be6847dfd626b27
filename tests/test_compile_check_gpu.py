"""`python -m slt.compile_check` for GPU hosts: the target descriptions in
slt/performance/gpu_specs/, the names a GPU topology takes, meshes over compile-only
H100 devices of one and two hosts, and a tiny model compiled for an 8 x H100 host.
Compiling needs jax's CUDA plugin (`pip install -e ".[gpu-compile]"`, not part of
`[test]`); without it the install command is the error, which is what the default run checks."""

from __future__ import annotations

import os
import re

import pytest
from helpers import run_compile_check, tiny_t5_config

from slt import compile_check
from slt.models import decoding
from slt.performance import compiled as compiled_lib
from slt.training import partitioning
from slt.training import trainer as trainer_lib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

HAS_CUDA_PLUGIN = compiled_lib.cuda_plugin_installed()
requires_cuda_plugin = pytest.mark.skipif(
    not HAS_CUDA_PLUGIN,
    reason='needs jax\'s CUDA plugin: pip install -e ".[gpu-compile]"',
)


# --- target descriptions and names (no plugin needed) -------------------------------


@pytest.mark.parametrize(
    "kind, label, memory, major",
    [
        ("h100", "NVIDIA H100 80GB HBM3", 84942979072, 9),
        ("a100", "NVIDIA A100-SXM4-80GB", 85100068864, 8),
        ("h200", "NVIDIA H200 141GB HBM3e", 151397597184, 9),
    ],
)
def test_gpu_target_descriptions_give_name_memory_and_compute_capability(
    kind, label, memory, major
):
    chip = compiled_lib.gpu_chip(kind)
    assert chip.name == label and chip.hbm_bytes == memory
    assert chip.peak_flops == compiled_lib.GPU_KINDS[kind].peak_flops > 1e14
    text = compiled_lib.gpu_target_config(kind)
    assert re.search(rf"cuda_compute_capability \{{\s*major: {major}\b", text)
    assert 'platform_name: "CUDA"' in text
    # Fields the XLA inside jax-cuda12-plugin 0.10.2 refuses stay out.
    fields = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [line for line in fields if "collective_memory_granularity" in line]


@pytest.mark.parametrize(
    "name, message",
    [
        ("h100-9", r"a host has 1 to 8 GPUs"),
        ("a100-0", r"a host has 1 to 8 GPUs"),
        ("h100-0x8", r"at least one host"),
        ("l4-1", r"unknown topology 'l4-1'.*h100-G.*h100-HxG.*cpu-N"),
        ("h100", r"unknown topology 'h100'.*a100-G"),
    ],
)
def test_bad_gpu_topology_names_list_the_accepted_forms(name, message):
    with pytest.raises(ValueError, match=message):
        compiled_lib.topology(name)


def test_gpu_hosts_are_in_the_name_not_num_slices():
    with pytest.raises(ValueError, match=r"h100-2x8 is 2 hosts of 8 GPUs.*dcn_mesh_shape"):
        compiled_lib.topology("h100-8", num_slices=2)


@pytest.mark.skipif(HAS_CUDA_PLUGIN, reason="jax's CUDA plugin is installed here")
def test_missing_cuda_plugin_gives_the_install_command():
    with pytest.raises(
        ValueError, match=r"pip install -e \"\.\[gpu-compile\]\".*jax-cuda12-plugin==0\.10\.2"
    ):
        compiled_lib.topology("h100-8")
    with pytest.raises(ValueError, match=r"CUDA 12 plugin"):
        compiled_lib.topology("a100-2x4")


def test_combined_async_collectives_count_every_output():
    # GPU HLO combines collectives: an all-gather-start of several operands has the
    # result ((operands...), (outputs...)); an all-to-all-start ((operand), output).
    hlo = """HloModule m

ENTRY %main (a: f32[8], b: f32[8,255]) -> f32[64] {
  %ag = ((f32[8]{0}, /*index=1*/f32[8,255]{1,0}), (f32[64]{0}, f32[64,255]{1,0}))\
 all-gather-start(%a, %b), dimensions={0}
  %agd = (f32[64]{0}, f32[64,255]{1,0}) all-gather-done(%ag)
  %a2a = ((f32[8,1,4,8]{3,2,1,0}), f32[8,1,4,8]{3,2,1,0}) all-to-all-start(%c), dimensions={0}
  %rs = ((bf16[64]{0}, bf16[64,64]{1,0}), (bf16[8]{0}, bf16[8,64]{1,0}))\
 reduce-scatter-start(%d, %e), dimensions={0}
  %ar = f32[3]{0} all-reduce-start(%f), to_apply=%add
  ROOT %out = f32[64]{0} get-tuple-element(%agd), index=0
}
"""
    got = compiled_lib.collectives(hlo)
    assert got["all-gather"] == {"count": 1, "bytes": 4 * (64 + 64 * 255)}
    assert got["all-to-all"] == {"count": 1, "bytes": 4 * 8 * 4 * 8}
    assert got["reduce-scatter"] == {"count": 1, "bytes": 2 * (8 + 8 * 64)}
    assert got["all-reduce"] == {"count": 1, "bytes": 12}


# --- compile-only H100 devices (the plugin) ------------------------------------------


@requires_cuda_plugin
def test_two_h100_hosts_are_two_slices_of_eight():
    topo = compiled_lib.topology("h100-2x8")
    assert topo.platform == "gpu" and topo.num_chips == 16 and topo.num_hosts == 2
    assert topo.chip.hbm_bytes == 84942979072
    # Each host is a process of 8 devices, as on two real hosts.
    assert [d.process_index for d in topo.devices] == [0] * 8 + [1] * 8
    # FSDP over all 16, or data over the hosts and FSDP inside each (multislice.gin).
    mesh = partitioning.make_mesh((1, -1, 1), devices=topo.devices)
    assert dict(mesh.shape) == {"data": 1, "fsdp": 16, "model": 1}
    mesh = partitioning.make_mesh((1, -1, 1), devices=topo.devices, dcn_mesh_shape=(2, 1, 1))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 8, "model": 1}
    for host in range(2):
        assert {d.process_index for d in mesh.devices[host].flat} == {host}


# One layer each side, width 64: the compile tests' model (helpers.tiny_t5_config).
SMALL = tiny_t5_config(emb_dim=64, num_heads=4, mlp_dim=128, dtype="float32")


@pytest.mark.slow
@requires_cuda_plugin
def test_tiny_model_compiles_for_h100_8_with_fsdp(tmp_path):
    result, report = run_compile_check(
        tmp_path,
        "h100",
        "--topology=h100-8",
        "--skip_decode",
        "--gin_file=partitioning/fsdp.gin",
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert report["platform"] == "gpu" and report["chip"] == "NVIDIA H100 80GB HBM3"
    assert report["fits"] is True and report["hbm_bytes"] == 84942979072
    assert report["mesh"] == {"data": 1, "fsdp": 8, "model": 1}
    train = report["train_step"]
    assert train["argument_bytes"] > 0 and train["temp_bytes"] > 0
    assert train["peak_bytes"] >= train["argument_bytes"] + train["temp_bytes"]
    # FSDP: a GPU holds an eighth of the f32 parameters (plus small replicated ones).
    assert train["argument_bytes"] < 4 * report["num_params"]
    # The sharded mesh moves data between the GPUs every step.
    assert sum(c["count"] for c in train["collectives"].values()) > 0
    assert sum(c["bytes"] for c in train["collectives"].values()) > 0
    # XLA's FLOPs (from the optimized module) against the model's count.
    flops = train["flops_per_step"]
    assert 0.7 < flops["xla_total"] / flops["analytic_total"] < 1.3
    assert train["step_seconds_bound"] > 0
    # The step-time model: one host, so every collective runs on NVLink.
    timing = report["step_time"]
    assert {r["link"] for r in timing["collectives"]} == {"NVLink"}
    assert timing["predicted_s"] == max(
        timing["compute_s"], timing["memory_s"], timing["collectives_s"]
    )
    assert 0 < report["predicted_mfu"] < 1
    assert "1 host(s), 8 x NVIDIA H100 80GB HBM3" in result.stdout
    assert "JAX preallocates 75%" in result.stdout and "verdict: FITS" in result.stdout


@pytest.mark.slow
@requires_cuda_plugin
def test_oversized_configuration_over_two_gpu_hosts_gets_advice():
    # In-process (no JAX_PLATFORMS): slt.performance.compiled loads the plugin itself.
    small = compile_check.CheckConfig(
        task_feature_lengths={"landmarks": 8, "inputs": 4, "targets": 4},
        batch_size=16,
        num_microbatches=1,
        configs={
            "network_config": SMALL,
            "optimizer_config": trainer_lib.OptimizerConfig(),
            "loss_config": trainer_lib.LossConfig(),
            "decoding_config": decoding.DecodingConfig(),
            "partitioning_config": partitioning.PartitioningConfig(
                mesh_shape=(1, -1, 1),
                dcn_mesh_shape=(2, 1, 1),
                logical_axis_rules=partitioning.FSDP_RULES,
            ),
        },
    )
    # Judged against 1 KiB per GPU: a GPU's shard of the parameters alone is more.
    report = compile_check.check("h100-2x8", config=small, decode=False, hbm_bytes=1024)
    assert report["mesh"] == {"data": 2, "fsdp": 8, "model": 1}
    assert report["num_hosts"] == 2 and report["num_chips"] == 16
    assert report["fits"] is False and report["peak_bytes"] > 1024
    # The gradients cross the hosts: an all-reduce over the data axis.
    assert report["collectives"]["all-reduce"]["count"] > 0
    assert any("num_microbatches=2" in a for a in report["advice"])
