"""Accelerator topologies, and what a compiled step costs on one.

`topology(name, num_slices)` gives the devices of a TPU slice (or several) or fake
CPU devices, with each chip's memory (HBM) and peak bf16 FLOP/s. TPU devices are
compile-only: JAX compiles for them on a CPU machine once the TPU runtime is
installed (`pip install -e ".[tpu]"`); nothing runs.

`step_report(compiled, ...)` reads a compiled step's memory per chip, FLOPs and the
collectives in its program; `memory_line` is the one-line summary `slt.train` prints
for the step it compiled on a real accelerator.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    """One accelerator chip: its memory and its peak dense bf16 FLOP/s."""

    name: str
    hbm_bytes: int
    peak_flops: float


# Public per-chip figures (Cloud TPU system architecture pages, NVIDIA data sheets).
TPU_CHIPS = {
    "v4": ChipSpec("TPU v4", 32 * GIB, 275e12),
    "v5e": ChipSpec("TPU v5e", 16 * GIB, 197e12),
    "v5p": ChipSpec("TPU v5p", 95 * GIB, 459e12),
    "v6e": ChipSpec("TPU v6e", 32 * GIB, 918e12),
}
# What a host of fake CPU devices reports: no HBM limit of its own.
CPU_CHIP = ChipSpec("CPU", 0, 0.0)

TOPOLOGY_FORMS = (
    "TPU: v4-N or v5p-N (N TensorCores, 2 per chip: v4-8 ... v4-4096), "
    "v5e-N / v5litepod-N or v6e-N (N chips: 1, 4, 8, 16, 32, 64, 128, 256); "
    "cpu-N (N fake CPU devices of this process)"
)

# Chip grids of the 2-D (v5e, v6e) slices, as in the Cloud TPU documentation.
_GRIDS_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8)}
_GRIDS_2D |= {128: (8, 16), 256: (16, 16)}


@dataclasses.dataclass(frozen=True)
class Topology:
    """The devices of `name` (all slices), the chip they sit on and how many slices."""

    name: str
    platform: str  # "tpu" or "cpu"
    chip: ChipSpec
    devices: tuple[Any, ...]
    num_slices: int = 1

    @property
    def num_chips(self) -> int:
        return len(self.devices)


def _cube(chips: int) -> tuple[int, int, int]:
    """The 3-D chip grid of a v4 / v5p slice of `chips` chips (2x2x1, 2x2x2, 2x2x4,
    2x4x4, 4x4x4, 4x4x8, ...): the dimensions double in turn, smallest first."""
    dims = [1, 1, 1]
    if chips < 4 or chips & (chips - 1):
        raise ValueError(f"{chips} chips is not a v4/v5p slice size.")
    dims[0] = dims[1] = 2
    while math.prod(dims) < chips:
        i = int(np.argmin(dims[::-1]))
        dims[2 - i] *= 2
    return (dims[0], dims[1], dims[2])


def topology(name: str, num_slices: int = 1) -> Topology:
    """The devices of topology `name` (see `TOPOLOGY_FORMS`) times `num_slices`."""
    text = name.strip().lower()
    if num_slices < 1:
        raise ValueError(f"--num_slices={num_slices}: must be at least 1.")
    if match := re.fullmatch(r"cpu-(\d+)", text):
        return _cpu_topology(name, int(match.group(1)), num_slices)
    if match := re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", text):
        return _tpu_topology(name, match.group(1), int(match.group(2)), num_slices)
    if re.fullmatch(r"(a100|h100|h200)-(\d+x)?\d+", text):
        raise ValueError(
            f"topology {name}: compiling for GPUs without them is not supported (it needs "
            "XLA's GPU target description and the CUDA compiler); accepted forms: "
            f"{TOPOLOGY_FORMS}. On a GPU machine, slt.train prints the memory of the step "
            "it compiled."
        )
    raise ValueError(f"unknown topology {name!r}; accepted forms: {TOPOLOGY_FORMS}.")


def _cpu_topology(name: str, count: int, num_slices: int) -> Topology:
    devices = jax.devices("cpu")
    needed = count * num_slices
    if len(devices) < needed:
        raise ValueError(
            f"topology {name} x {num_slices} slice(s) needs {needed} CPU devices; this "
            f"process has {len(devices)}. Start it with XLA_FLAGS="
            f"--xla_force_host_platform_device_count={needed} (python -m slt.compile_check "
            "sets it itself when JAX has not started yet)."
        )
    return Topology(name, "cpu", CPU_CHIP, tuple(devices[:needed]), num_slices)


def require_runtime() -> None:
    """Fails, with the install command, when the TPU compiler (libtpu) is not installed."""
    if importlib.util.find_spec("libtpu") is None:
        raise ValueError(
            "compiling for TPU needs its runtime (libtpu), which is not installed: "
            'pip install -e ".[tpu]" (in the repository).'
        )


def _tpu_topology(name: str, kind: str, count: int, num_slices: int) -> Topology:
    from jax.experimental import topologies

    require_runtime()
    kind = "v5e" if kind == "v5litepod" else kind
    if kind in ("v4", "v5p"):
        if count % 2:
            raise ValueError(f"topology {name}: {kind}-N counts TensorCores, N must be even.")
        try:
            grid = _cube(count // 2)
        except ValueError:
            raise ValueError(
                f"topology {name}: {kind} slices have 4, 8, 16, ... chips "
                f"({kind}-8, {kind}-16, {kind}-32, ...); accepted forms: {TOPOLOGY_FORMS}."
            ) from None
        # A full 4x4x4 cube and larger multiples wrap around (a torus).
        wrap = tuple(d >= 4 and d % 4 == 0 for d in grid)
        kwargs = dict(
            topology_name=f"{'v4' if kind == 'v4' else 'v5'}:{'x'.join(map(str, grid))}",
            chip_config_name="megacore",
            chips_per_host_bounds=(2, 2, 1),
            wrap=wrap,
        )
    else:
        if count not in _GRIDS_2D:
            raise ValueError(
                f"topology {name}: {kind} slices have {sorted(_GRIDS_2D)} chips; "
                f"accepted forms: {TOPOLOGY_FORMS}."
            )
        rows, cols = _GRIDS_2D[count]
        # v5e / v6e hosts hold 4 chips in slices of 16 and more, else the whole slice.
        bounds = (2, 2, 1) if count >= 16 else (rows, cols, 1)
        kwargs = dict(
            topology_name=f"{kind}:{rows}x{cols}",
            chip_config_name="default",
            chips_per_host_bounds=bounds,
            wrap=(False, False, False),
        )
    # libtpu writes its logs to /tmp unless told otherwise.
    os.environ.setdefault("TPU_LOG_DIR", os.path.join(os.path.expanduser("~"), ".cache", "libtpu"))
    os.makedirs(os.environ["TPU_LOG_DIR"], exist_ok=True)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    desc = topologies.get_topology_desc(platform="tpu", num_slices=num_slices, **kwargs)
    log.info(
        "topology %s: %s x %d slice(s), %d devices", name, kwargs, num_slices, len(desc.devices)
    )
    return Topology(name, "tpu", TPU_CHIPS[kind], tuple(desc.devices), num_slices)


# --- what a compiled step costs ------------------------------------------------


def abstract_batch(shapes: Mapping[str, tuple[int, ...]], sharding: Any) -> dict[str, Any]:
    """A batch of the model's features as ShapeDtypeStructs with `sharding`: frames
    are float32, every other feature int32 tokens (slt.features)."""
    import jax.numpy as jnp

    return {
        k: jax.ShapeDtypeStruct(
            s, jnp.float32 if k == "encoder_landmarks" else jnp.int32, sharding=sharding
        )
        for k, s in shapes.items()
    }


COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2}
_DTYPE_BYTES |= {"s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8}
_DTYPE_BYTES |= {"f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1, "c128": 16}
_ARRAY = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLED = re.compile(r"(body|condition|calls|to_apply|branch_computations)=\{?([%\w.\-, ]+)\}?")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def _array_bytes(type_text: str) -> int:
    total = 0
    for dtype, dims in _ARRAY.findall(type_text):
        if dtype in _DTYPE_BYTES:
            total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """Count and bytes per chip per step of each kind of collective in an optimized,
    SPMD-partitioned HLO module (its shapes are per device). An op inside a while loop
    with a known trip count (scanned layers, microbatches) counts that many times.
    Bytes are those of the op's result: the gathered array for an all-gather, the
    scattered shard for a reduce-scatter."""
    computations: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        if current is None:
            if match := _COMPUTATION.match(line):
                current = match.group(1)
                computations[current] = []
                if line.startswith("ENTRY"):
                    entry = current
        elif line.strip() == "}":
            current = None
        else:
            computations[current].append(line)
    multiplier: dict[str, int] = {}

    def visit(name: str, times: int) -> None:
        multiplier[name] = multiplier.get(name, 0) + times
        for line in computations.get(name, ()):
            trips = _TRIP_COUNT.search(line)
            for field, names in _CALLED.findall(line):
                inner = times * (int(trips.group(1)) if trips and field == "body" else 1)
                for called in names.split(","):
                    called = called.strip().lstrip("%")
                    if called in computations:
                        visit(called, inner)

    if entry is not None:
        visit(entry, 1)
    result = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
    for name, times in multiplier.items():
        for line in computations[name]:
            if "=" not in line:
                continue
            lhs, rhs = line.split("=", 1)
            for kind in COLLECTIVES:
                match = re.search(rf"\s{kind}(-start)?\(", rhs)
                if match is None:
                    continue
                type_text = rhs[: match.start()]
                if match.group(1) and type_text.strip().startswith("("):
                    # An async start's result is (operands, outputs[, scratch]).
                    parts = re.findall(r"[a-z0-9]+\[[0-9,]*\]", type_text)
                    type_text = parts[len(parts) // 2] if len(parts) > 1 else type_text
                result[kind]["count"] += times
                result[kind]["bytes"] += times * _array_bytes(type_text)
                break
    return result


def memory_stats(compiled: Any) -> dict[str, int]:
    """Bytes per chip of a compiled program: arguments, outputs, temporaries,
    generated code, donated (aliased) bytes and the peak."""
    stats = compiled.memory_analysis()
    if stats is None:
        raise ValueError("this backend reports no memory analysis of a compiled program.")
    out = {
        "argument_bytes": int(stats.argument_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
        "temp_bytes": int(stats.temp_size_in_bytes),
        "generated_code_bytes": int(stats.generated_code_size_in_bytes),
        "alias_bytes": int(stats.alias_size_in_bytes),
    }
    # Donated outputs reuse their arguments' buffers, so they are not counted twice.
    summed = (
        out["argument_bytes"]
        + out["output_bytes"]
        - out["alias_bytes"]
        + out["temp_bytes"]
        + out["generated_code_bytes"]
    )
    peak = int(getattr(stats, "peak_memory_in_bytes", 0) or 0)
    out["peak_bytes"] = max(peak, summed) if peak else summed
    return out


def xla_flops(compiled: Any) -> float:
    """FLOPs per chip of one run of the program, as XLA counts them."""
    cost = compiled.cost_analysis()
    if isinstance(cost, Sequence) and not isinstance(cost, Mapping):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def step_report(
    compiled: Any, *, num_chips: int, chip: ChipSpec, compile_seconds: float
) -> dict[str, Any]:
    """Memory per chip, fit, XLA's FLOPs and the collectives of a compiled step."""
    report = memory_stats(compiled)
    flops = xla_flops(compiled)
    report.update(
        hbm_bytes=chip.hbm_bytes,
        fits=(report["peak_bytes"] <= chip.hbm_bytes) if chip.hbm_bytes else True,
        headroom_bytes=chip.hbm_bytes - report["peak_bytes"] if chip.hbm_bytes else None,
        flops_per_step={"xla_per_chip": flops, "xla_total": flops * num_chips},
        collectives=collectives(compiled.as_text()),
        compile_seconds=round(compile_seconds, 1),
    )
    if chip.peak_flops:
        # A lower bound: the chip at its peak bf16 rate and nothing else.
        report["step_seconds_bound"] = flops / chip.peak_flops
    return report


def memory_line(what: str, stats: Mapping[str, int], hbm_bytes: int | None) -> str:
    """`<what>: peak X GiB per chip of Y (arguments A, outputs O, temporaries T, code C)`."""

    def gib(n: int) -> str:
        return f"{n / GIB:.2f}"

    of = f" of {gib(hbm_bytes)}" if hbm_bytes else ""
    return (
        f"{what}: peak {gib(stats['peak_bytes'])} GiB per chip{of} (arguments "
        f"{gib(stats['argument_bytes'])}, outputs {gib(stats['output_bytes'])}, "
        f"temporaries {gib(stats['temp_bytes'])}, code {gib(stats['generated_code_bytes'])})"
    )


def device_hbm_bytes(device: Any) -> int | None:
    """The memory a real device offers to JAX (`bytes_limit`), when it says."""
    try:
        return int((device.memory_stats() or {}).get("bytes_limit", 0)) or None
    except Exception:  # noqa: BLE001 (CPU and compile-only devices have no stats)
        return None
