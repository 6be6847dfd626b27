"""The step-time model against figures worked out by hand on a hand-written HLO module."""

from __future__ import annotations

import pytest

from slt.performance import hardware, step_time

# 8 partitions: mesh (data=2, fsdp=2, model=2); `data` joins two TPU slices (DCN), each
# slice a 2x2 grid of chips with `model` along x and `fsdp` along y. Partition id =
# 4 data + 2 fsdp + model.
LAYOUT = step_time.DeviceLayout(
    axis_names=("data", "fsdp", "model"),
    axis_sizes=(2, 2, 2),
    slices=(0, 0, 0, 0, 1, 1, 1, 1),
    hosts=(0, 0, 0, 0, 1, 1, 1, 1),
    coords=tuple((i % 2, (i // 2) % 2, 0) for i in range(8)),
)

# An all-gather over `fsdp` (one axis of the 2-D ICI mesh, iota-form groups {0,2},{1,3},
# {4,6},{5,7}), an all-reduce over `data` (DCN, explicit groups) and, in a loop of 3
# iterations (the count read from its condition), a matmul and a reduce-scatter over
# `model` (mesh-form groups).
HLO = """\
HloModule handwritten

%sum (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %s = f32[] add(%x, %y)
}

%sum.bf16 (x: bf16[], y: bf16[]) -> bf16[] {
  %x = bf16[] parameter(0)
  %y = bf16[] parameter(1)
  ROOT %s = bf16[] add(%x, %y)
}

%body (state: (s32[], bf16[128,256], bf16[256,512])) -> (s32[], bf16[128,256], bf16[256,512]) {
  %state = (s32[], bf16[128,256]{1,0}, bf16[256,512]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%state), index=0
  %lhs = bf16[128,256]{1,0} get-tuple-element(%state), index=1
  %rhs = bf16[256,512]{1,0} get-tuple-element(%state), index=2
  %one = s32[] constant(1)
  %next = s32[] add(%i, %one)
  %product = bf16[128,512]{1,0} dot(%lhs, %rhs), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %scattered = bf16[128,256]{1,0} reduce-scatter(%product), channel_id=3, replica_groups=mesh['data'=2,'fsdp'=2,'model'=2], device_ids=([8]) {'model'}, dimensions={1}, use_global_device_ids=true, to_apply=%sum.bf16
  ROOT %out = (s32[], bf16[128,256]{1,0}, bf16[256,512]{1,0}) tuple(%next, %scattered, %rhs)
}

%cond (state: (s32[], bf16[128,256], bf16[256,512])) -> pred[] {
  %state = (s32[], bf16[128,256]{1,0}, bf16[256,512]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%state), index=0
  %n = s32[] constant(3)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

ENTRY %main (a: f32[1024,1024], w: bf16[256,1024], lhs: bf16[128,256], rhs: bf16[256,512]) -> f32[1024,1024] {
  %a = f32[1024,1024]{1,0} parameter(0)
  %w = bf16[256,1024]{1,0} parameter(1)
  %lhs = bf16[128,256]{1,0} parameter(2)
  %rhs = bf16[256,512]{1,0} parameter(3)
  %gathered = bf16[512,1024]{1,0} all-gather(%w), channel_id=1, replica_groups=[4,2]<=[2,2,2]T(0,2,1), dimensions={0}, use_global_device_ids=true
  %summed = f32[1024,1024]{1,0} all-reduce(%a), channel_id=2, replica_groups={{0,4},{1,5},{2,6},{3,7}}, use_global_device_ids=true, to_apply=%sum
  %doubled = f32[1024,1024]{1,0} add(%summed, %summed)
  %zero = s32[] constant(0)
  %init = (s32[], bf16[128,256]{1,0}, bf16[256,512]{1,0}) tuple(%zero, %lhs, %rhs)
  %loop = (s32[], bf16[128,256]{1,0}, bf16[256,512]{1,0}) while(%init), condition=%cond, body=%body
  ROOT %result = (bf16[512,1024]{1,0}, f32[1024,1024]{1,0}) tuple(%gathered, %doubled)
}
"""  # noqa: E501 (HLO lines as XLA prints them)

V5E = hardware.TPU_RATES["v5e"]
# v5e: 400 GB/s of ICI per chip both ways over 4 ports = 50 GB/s per link each way; a
# ring along one torus dimension sends over 2 links: 100 GB/s. DCN: 6.4 Tbps per 256
# chips = 3.125 GB/s per chip.
ICI_ONE_DIM = 100e9
DCN = 6.4e12 / 8 / 256
GATHER_S = (512 * 1024 * 2) * (1 / 2) / ICI_ONE_DIM  # (n-1)/n of the 1 MiB result
ALL_REDUCE_S = 2 * (1024 * 1024 * 4) * (1 / 2) / DCN  # 2 (n-1)/n of the 4 MiB array
SCATTER_S = 3 * (128 * 256 * 2) * 1 / ICI_ONE_DIM  # 3 runs x (n-1) x the shard
MATMUL_FLOPS = 3 * 2 * 128 * 512 * 256
# HBM: the entry's add (read twice, write once, 4 MiB each), per loop iteration the
# dot (64 KiB + 256 KiB read, 128 KiB written) and the counter's add (3 x 4 bytes),
# and the condition's compare (two s32 read, one pred written).
HBM_BYTES = 3 * 4 * 1024 * 1024 + 3 * (65536 + 262144 + 131072 + 12) + 9


def test_replica_group_spellings():
    mesh_form = "replica_groups=mesh['axis_0'=4,'axis_1'=1,'axis_2'=2], device_ids=([2,4]T(1,0))"
    assert step_time.replica_groups(f"{mesh_form} {{'axis_0'}}, x=1", 8) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
    ]
    assert step_time.replica_groups(f"{mesh_form} {{'axis_2'}}, x=1", 8) == [
        [0, 4],
        [1, 5],
        [2, 6],
        [3, 7],
    ]
    assert step_time.replica_groups("replica_groups=[2,4]<=[8], x", 8) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
    ]
    assert step_time.replica_groups("replica_groups=[4,2]<=[2,4]T(1,0), x", 8)[0] == [0, 4]
    assert step_time.replica_groups("replica_groups={{0,2},{1,3}}, x", 4) == [[0, 2], [1, 3]]
    assert step_time.replica_groups("replica_groups={}, x", 4) == [[0, 1, 2, 3]]


def test_step_time_matches_the_hand_computed_figures():
    result = step_time.predict(HLO, LAYOUT, V5E, model_flops_total=8 * MATMUL_FLOPS)
    rows = {(r["kind"], tuple(r["mesh_axes"]), r["link"]): r for r in result["collectives"]}
    assert set(rows) == {
        ("all-gather", ("fsdp",), "ICI"),
        ("all-reduce", ("data",), "DCN"),
        ("reduce-scatter", ("model",), "ICI"),
    }
    assert rows[("all-gather", ("fsdp",), "ICI")]["seconds"] == pytest.approx(GATHER_S)
    assert rows[("all-gather", ("fsdp",), "ICI")]["dtype"] == "bf16"
    assert rows[("all-reduce", ("data",), "DCN")]["seconds"] == pytest.approx(ALL_REDUCE_S)
    assert rows[("all-reduce", ("data",), "DCN")]["dtype"] == "f32"
    scatter = rows[("reduce-scatter", ("model",), "ICI")]
    assert (scatter["count"], scatter["seconds"]) == (3, pytest.approx(SCATTER_S))
    assert result["collectives_s"] == pytest.approx(GATHER_S + ALL_REDUCE_S + SCATTER_S)
    assert result["flops_per_chip"] == MATMUL_FLOPS
    assert result["compute_s"] == pytest.approx(MATMUL_FLOPS / 197e12)
    assert result["hbm_bytes_per_chip"] == HBM_BYTES
    assert result["memory_s"] == pytest.approx(HBM_BYTES / 819e9)
    assert result["bound_by"] == "collectives"
    assert result["predicted_s"] == pytest.approx(result["collectives_s"])
    assert result["no_overlap_s"] == pytest.approx(
        result["compute_s"] + result["memory_s"] + result["collectives_s"]
    )
    mfu = step_time.mfu(8 * MATMUL_FLOPS, result["predicted_s"], 8, V5E.peak_flops)
    assert mfu == pytest.approx(result["compute_s"] / result["predicted_s"])
    assert "collectives_not_timed" not in result


def test_gpu_links_and_an_unknown_bandwidth():
    # The same program on 2 hosts of 4 H100s: the all-reduce over hosts takes the
    # network (400 Gb/s per GPU), the others NVLink (900 GB/s both ways: 450 one way).
    gpu = step_time.predict(HLO, LAYOUT, hardware.GPU_RATES["h100"])
    seconds = {r["kind"]: (r["link"], r["seconds"]) for r in gpu["collectives"]}
    assert seconds["all-reduce"] == ("network", pytest.approx(4 * 1024 * 1024 / 50e9))
    assert seconds["all-gather"] == ("NVLink", pytest.approx(512 * 1024 / 450e9))
    # TPU v4's page gives no DCN bandwidth: the all-reduce is left out, and said to be.
    v4 = step_time.predict(HLO, LAYOUT, hardware.TPU_RATES["v4"])
    assert "DCN" in v4["collectives_not_timed"]
    ici_v4 = 2 * 537e9 / 6 / 2
    assert v4["collectives_s"] == pytest.approx((512 * 1024 + 3 * 65536) / ici_v4)


def test_arrays_in_on_chip_memory_move_no_hbm_bytes():
    # TPU layouts name a memory space: S(1) is on-chip VMEM, no HBM traffic.
    assert step_time._hbm_bytes_of("bf16[4,8]{1,0:T(8,128)(2,1)S(1)}") == 0
    assert step_time._hbm_bytes_of("(f32[4]{0}, bf16[4,8]{1,0:T(8,128)S(1)})") == 16
    assert step_time._hbm_bytes_of("bf16[4,8]{1,0:T(8,128)(2,1)}") == 64


def test_matmuls_written_as_convolutions():
    # TPU programs write a matmul as a convolution of window 1; a batched matmul with a
    # dilated window is left to XLA's count.
    hlo = """HloModule conv

ENTRY %main (a: bf16[2,64,128], b: bf16[128,256,1]) -> bf16[2,64,256] {
  %a = bf16[2,64,128]{2,1,0} parameter(0)
  %b = bf16[128,256,1]{2,1,0} parameter(1)
  %c = bf16[2,64,256]{2,1,0} convolution(%a, %b), window={size=1}, dim_labels=0bf_io0->0bf
  ROOT %d = bf16[2,64,256]{2,1,0} convolution(%a, %b), window={size=2 stride=1 lhs_dilate=2}, dim_labels=0bf_io0->0bf
}
"""  # noqa: E501 (HLO lines as XLA prints them)
    assert step_time.matmul_flops(hlo) == 2 * (2 * 64 * 256) * 128


def test_fusion_traffic_counts_slices_and_in_place_updates():
    # A multi-output fusion that updates row i of a stacked f32[8,1024] buffer in place
    # and reads row i of stacked bf16[8,256] weights: it moves the row it writes
    # (4 KiB), the update it reads (4 KiB), the index, the weight row it reads (512 B)
    # and its second output (512 B), not the stacked buffers.
    hlo = """HloModule fused

%fused (p0: f32[8,1024], p1: f32[1,1024], p2: s32[], p3: bf16[8,256]) -> (f32[8,1024], bf16[1,256]) {
  %p0 = f32[8,1024]{1,0} parameter(0)
  %p1 = f32[1,1024]{1,0} parameter(1)
  %p2 = s32[] parameter(2)
  %p3 = bf16[8,256]{1,0} parameter(3)
  %zero = s32[] constant(0)
  %row = bf16[1,256]{1,0} dynamic-slice(%p3, %p2, %zero), dynamic_slice_sizes={1,256}
  %updated = f32[8,1024]{1,0} dynamic-update-slice(%p0, %p1, %p2, %zero)
  ROOT %out = (f32[8,1024]{1,0}, bf16[1,256]{1,0}) tuple(%updated, %row)
}

ENTRY %main (a: f32[8,1024], u: f32[1,1024], i: s32[], w: bf16[8,256]) -> (f32[8,1024], bf16[1,256]) {
  %a = f32[8,1024]{1,0} parameter(0)
  %u = f32[1,1024]{1,0} parameter(1)
  %i = s32[] parameter(2)
  %w = bf16[8,256]{1,0} parameter(3)
  ROOT %f = (f32[8,1024]{1,0}, bf16[1,256]{1,0}) fusion(%a, %u, %i, %w), kind=kLoop, calls=%fused
}
"""  # noqa: E501 (HLO lines as XLA prints them)
    assert step_time.hbm_bytes(hlo) == 4096 + 4096 + 4 + 512 + 512


def test_a_slice_taken_inside_a_nested_fusion_reads_the_slice():
    # A scanned layer reads its slice of the stacked activations through a fusion nested
    # in the one at the top: the traffic is one f32[1,512] row (2 KiB) plus the index and
    # the bf16[1,512] result (1 KiB), not the f32[36,512] stack (72 KiB).
    hlo = """HloModule nested

%inner (q0: f32[36,512], q1: s32[]) -> bf16[1,512] {
  %q0 = f32[36,512]{1,0} parameter(0)
  %q1 = s32[] parameter(1)
  %zero = s32[] constant(0)
  %row = f32[1,512]{1,0} dynamic-slice(%q0, %q1, %zero), dynamic_slice_sizes={1,512}
  ROOT %c = bf16[1,512]{1,0} convert(%row)
}

%outer (p0: f32[36,512], p1: s32[]) -> bf16[1,512] {
  %p0 = f32[36,512]{1,0} parameter(0)
  %p1 = s32[] parameter(1)
  ROOT %n = bf16[1,512]{1,0} fusion(%p0, %p1), kind=kLoop, calls=%inner
}

ENTRY %main (a: f32[36,512], i: s32[]) -> bf16[1,512] {
  %a = f32[36,512]{1,0} parameter(0)
  %i = s32[] parameter(1)
  ROOT %f = bf16[1,512]{1,0} fusion(%a, %i), kind=kLoop, calls=%outer
}
"""
    assert step_time.hbm_bytes(hlo) == 2048 + 4 + 1024
    # Used otherwise (here: negated whole, then sliced), the stack counts in full.
    whole = hlo.replace(
        "%row = f32[1,512]{1,0} dynamic-slice(%q0,",
        "%neg = f32[36,512]{1,0} negate(%q0)\n  %row = f32[1,512]{1,0} dynamic-slice(%neg,",
    )
    assert step_time.hbm_bytes(whole) == 36 * 512 * 4 + 4 + 1024


def test_a_loop_that_may_stop_early_counts_at_its_bound():
    # Decoding's loop: `i < 16 & ~all(done)`. Its matmul counts 16 times, the most the
    # loop runs.
    hlo = """HloModule decode

%cond (s: (s32[], pred[], bf16[4,64], bf16[64,64])) -> pred[] {
  %s = (s32[], pred[], bf16[4,64]{1,0}, bf16[64,64]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%s), index=0
  %done = pred[] get-tuple-element(%s), index=1
  %n = s32[] constant(16)
  %lt = pred[] compare(%i, %n), direction=LT
  %going = pred[] not(%done)
  ROOT %and = pred[] and(%lt, %going)
}

%body (s: (s32[], pred[], bf16[4,64], bf16[64,64])) -> (s32[], pred[], bf16[4,64], bf16[64,64]) {
  %s = (s32[], pred[], bf16[4,64]{1,0}, bf16[64,64]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%s), index=0
  %done = pred[] get-tuple-element(%s), index=1
  %x = bf16[4,64]{1,0} get-tuple-element(%s), index=2
  %w = bf16[64,64]{1,0} get-tuple-element(%s), index=3
  %y = bf16[4,64]{1,0} dot(%x, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %t = (s32[], pred[], bf16[4,64]{1,0}, bf16[64,64]{1,0}) tuple(%i, %done, %y, %w)
}

ENTRY %main (init: (s32[], pred[], bf16[4,64], bf16[64,64])) -> (s32[], pred[], bf16[4,64], bf16[64,64]) {
  %init = (s32[], pred[], bf16[4,64]{1,0}, bf16[64,64]{1,0}) parameter(0)
  ROOT %loop = (s32[], pred[], bf16[4,64]{1,0}, bf16[64,64]{1,0}) while(%init), condition=%cond, body=%body
}
"""  # noqa: E501 (HLO lines as XLA prints them)
    assert step_time.matmul_flops(hlo) == 16 * 2 * 4 * 64 * 64
