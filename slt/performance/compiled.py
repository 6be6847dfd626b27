"""Accelerator topologies, and what a compiled step costs on one.

`topology(name, num_slices)` gives the devices of a TPU slice (or several), of one or
more GPU hosts, or fake CPU devices, with each chip's memory (HBM) and peak bf16
FLOP/s. TPU and GPU devices are compile-only: JAX compiles for them on a CPU machine
once the TPU compiler (`pip install -e ".[tpu]"`) or jax's CUDA plugin
(`pip install jax-cuda12-plugin==0.10.2`) is installed; nothing runs. A GPU is
described to XLA by its target description, a text file in `slt/performance/gpu_specs/`.

`step_report(compiled, ...)` reads a compiled step's memory per chip, FLOPs and the
collectives in its program; `memory_line` is the one-line summary `slt.train` prints
for the step it compiled on a real accelerator.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import importlib.util
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from slt.performance import hardware

log = logging.getLogger(__name__)

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    """One accelerator chip: its memory and its peak dense bf16 FLOP/s."""

    name: str
    hbm_bytes: int
    peak_flops: float


# Public per-chip figures (Cloud TPU system architecture pages); the rates are those of
# slt.performance.hardware's table.
TPU_CHIPS = {
    kind: ChipSpec(hardware.TPU_RATES[kind].name, hbm * GIB, hardware.TPU_RATES[kind].peak_flops)
    for kind, hbm in (("v4", 32), ("v5e", 16), ("v5p", 95), ("v6e", 32))
}
# What a host of fake CPU devices reports: no HBM limit of its own.
CPU_CHIP = ChipSpec("CPU", 0, 0.0)


@dataclasses.dataclass(frozen=True)
class GpuKind:
    """A GPU XLA can compile for: its target description in slt/performance/gpu_specs/ (memory,
    compute capability, cores: all XLA needs) and its peak dense bf16 FLOP/s (data sheet)."""

    spec_file: str
    peak_flops: float


GPU_KINDS = {
    "a100": GpuKind("a100_sxm_80.txtpb", hardware.GPU_RATES["a100"].peak_flops),
    "h100": GpuKind("h100_sxm.txtpb", hardware.GPU_RATES["h100"].peak_flops),
    "h200": GpuKind("h200.txtpb", hardware.GPU_RATES["h200"].peak_flops),
}
# An HGX / DGX host holds 8 GPUs on one NVLink switch.
MAX_GPUS_PER_HOST = 8

TOPOLOGY_FORMS = (
    "TPU: v4-N or v5p-N (N TensorCores, 2 per chip: v4-8 ... v4-4096), "
    "v5e-N / v5litepod-N or v6e-N (N chips: 1, 4, 8, 16, 32, 64, 128, 256); "
    f"GPU: {', '.join(f'{k}-G' for k in GPU_KINDS)} (one host of G GPUs, 1 to "
    f"{MAX_GPUS_PER_HOST}) or {', '.join(f'{k}-HxG' for k in GPU_KINDS)} (H hosts of G "
    "GPUs each, e.g. h100-2x8); cpu-N (N fake CPU devices of this process)"
)
_GPU_NAME = re.compile(rf"({'|'.join(GPU_KINDS)})-(?:(\d+)x)?(\d+)")

# Chip grids of the 2-D (v5e, v6e) slices, as in the Cloud TPU documentation.
_GRIDS_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8)}
_GRIDS_2D |= {128: (8, 16), 256: (16, 16)}


@dataclasses.dataclass(frozen=True)
class Topology:
    """The devices of `name` (all slices), the chip they sit on and how many slices."""

    name: str
    platform: str  # "tpu", "gpu" or "cpu"
    chip: ChipSpec
    devices: tuple[Any, ...]
    num_slices: int = 1
    num_hosts: int = 1
    kind: str = ""  # "v5e", "h100", ...: the key of its rates in slt.performance.hardware

    @property
    def num_chips(self) -> int:
        return len(self.devices)

    @property
    def rates(self) -> hardware.ChipRates | None:
        """The chip's public rates (None for CPU devices: none to predict with)."""
        return hardware.rates_for(self.platform, self.kind) if self.kind else None


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
    if match := _GPU_NAME.fullmatch(text):
        hosts = int(match.group(2) or 1)
        return _gpu_topology(name, match.group(1), hosts, int(match.group(3)), num_slices)
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


def is_gpu_topology(name: str) -> bool:
    return _GPU_NAME.fullmatch(name.strip().lower()) is not None


def cuda_plugin_installed() -> bool:
    """Whether jax's CUDA 12 plugin (jax-cuda12-plugin, jax-cuda12-pjrt) is importable."""
    try:
        return importlib.util.find_spec("jax_plugins.xla_cuda12") is not None
    except ModuleNotFoundError:  # no jax_plugins namespace at all
        return False


def require_gpu_runtime() -> None:
    """Fails, with the install command, when jax's CUDA plugin is not installed."""
    if not cuda_plugin_installed():
        raise ValueError(
            "compiling for GPU needs jax's CUDA 12 plugin, which is not installed: "
            'pip install -e ".[gpu-compile]" (in the repository; that is '
            "jax-cuda12-plugin==0.10.2, enough to compile on any machine), or "
            'pip install -e ".[gpu]" on a GPU machine (the plugin and the CUDA libraries).'
        )


def gpu_target_config(kind: str) -> str:
    """XLA's target description of GPU `kind` (a GpuTargetConfigProto as text)."""
    spec = importlib.resources.files("slt.performance") / "gpu_specs" / GPU_KINDS[kind].spec_file
    return spec.read_text()


def gpu_chip(kind: str) -> ChipSpec:
    """The GPU's name and memory as its target description gives them."""
    text = gpu_target_config(kind)
    memory = re.search(r"device_memory_size:\s*(\d+)", text)
    label = re.search(r'device_description_str:\s*"([^"]+)"', text)
    if memory is None or label is None:
        raise ValueError(
            f"slt/performance/gpu_specs/{GPU_KINDS[kind].spec_file} has no device_memory_size or "
            "device_description_str; restore it from XLA's target_config/specs."
        )
    return ChipSpec(label.group(1), int(memory.group(1)), GPU_KINDS[kind].peak_flops)


# The CUDA plugin as this module loaded it, when jax did not register it (see below).
_cuda_c_api: Any = None


def _cuda_compile_only_devices(target_config: str, topology_text: str) -> list[Any]:
    """Compile-only CUDA devices of `topology_text` (slices x hosts x GPUs per host)."""
    from jax._src.lib import xla_client
    from jax.experimental import topologies

    options = dict(target_config=target_config, topology=topology_text)
    try:
        return topologies.get_topology_desc(platform="cuda", **options).devices
    except NotImplementedError:
        pass
    # jax registers the plugin only after its CUDA version check, which fails on a
    # machine without CUDA unless JAX_PLATFORMS excludes cuda (python -m
    # slt.compile_check sets it); the compiler in the plugin needs no CUDA.
    import jax_plugins.xla_cuda12 as plugin

    global _cuda_c_api
    if _cuda_c_api is None:
        if xla_client.pjrt_plugin_loaded("cuda"):
            raise ValueError(
                "jax's CUDA plugin is loaded but offers no compile-only topology; run "
                "python -m slt.compile_check in a fresh process."
            )
        path = str(plugin._get_library_path())
        _cuda_c_api = xla_client.load_pjrt_plugin_dynamically("cuda", path)
    topology = xla_client.make_c_api_device_topology(_cuda_c_api, "", **options)
    return topology._make_compile_only_devices()


def _gpu_topology(name: str, kind: str, hosts: int, per_host: int, num_slices: int) -> Topology:
    if num_slices != 1:
        raise ValueError(
            f"topology {name} with --num_slices={num_slices}: GPU hosts are part of the "
            "topology name (h100-2x8 is 2 hosts of 8 GPUs), not --num_slices; to put a "
            "mesh axis over the hosts, set slt.PartitioningConfig.dcn_mesh_shape "
            "(partitioning/multislice.gin with --gin.NUM_SLICES=hosts)."
        )
    if not 1 <= per_host <= MAX_GPUS_PER_HOST or hosts < 1:
        raise ValueError(
            f"topology {name}: a host has 1 to {MAX_GPUS_PER_HOST} GPUs and there is at "
            f"least one host; accepted forms: {TOPOLOGY_FORMS}."
        )
    require_gpu_runtime()
    from jax._src.lib import _jax

    chip = gpu_chip(kind)
    # XLA's GPU topology is partitions x hosts x GPUs per host; a partition is one NVLink
    # domain, which is one host for A100 / H100 / H200. Each host is one process of
    # `per_host` devices (slt.training.partitioning treats GPU hosts as the slices).
    topology_text = f"{hosts}x1x{per_host}"
    try:
        devices = _cuda_compile_only_devices(gpu_target_config(kind), topology_text)
    except _jax.JaxRuntimeError as error:
        raise ValueError(
            f"topology {name}: jax's CUDA plugin refused the target description "
            f"slt/performance/gpu_specs/{GPU_KINDS[kind].spec_file} "
            f"({str(error).splitlines()[0]}); "
            "a field the plugin's XLA does not know must be removed from the file."
        ) from None
    log.info("topology %s: CUDA %s, %d devices (%s)", name, topology_text, len(devices), chip.name)
    return Topology(name, "gpu", chip, tuple(devices), 1, hosts, kind)


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
    # local: libtpu's own log directory on this machine (as on the next line)
    os.environ.setdefault("TPU_LOG_DIR", os.path.join(os.path.expanduser("~"), ".cache", "libtpu"))
    os.makedirs(os.environ["TPU_LOG_DIR"], exist_ok=True)  # local: as above
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    desc = topologies.get_topology_desc(platform="tpu", num_slices=num_slices, **kwargs)
    log.info(
        "topology %s: %s x %d slice(s), %d devices", name, kwargs, num_slices, len(desc.devices)
    )
    return Topology(name, "tpu", TPU_CHIPS[kind], tuple(desc.devices), num_slices, kind=kind)


# --- what a compiled step costs ------------------------------------------------


def abstract_batch(shapes: Mapping[str, tuple[int, ...]], sharding: Any) -> dict[str, Any]:
    """A batch of the model's features as ShapeDtypeStructs with `sharding`: frames
    are float32, every other feature int32 tokens (slt.data.features)."""
    import jax.numpy as jnp

    return {
        k: jax.ShapeDtypeStruct(
            s, jnp.float32 if k == "encoder_landmarks" else jnp.int32, sharding=sharding
        )
        for k, s in shapes.items()
    }


def bytes_per_chip(tree: Any) -> int:
    """The bytes one chip holds of a tree of ShapeDtypeStructs with shardings: each
    leaf's shard (the largest, when a dimension does not split evenly)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
        # A random key's dtype (key<fry>) is no NumPy dtype but knows its size.
        itemsize = getattr(leaf.dtype, "itemsize", None) or np.dtype(leaf.dtype).itemsize
        total += math.prod(shape) * itemsize
    return total


def uncompiled_step_report(input_bytes: int, chip: ChipSpec) -> dict[str, Any]:
    """The report of a step that was not compiled because its inputs alone, as one
    chip holds them, exceed the chip's memory: the peak is at least that."""
    return {
        "compiled": False,
        "not_compiled_because": (
            f"its inputs alone are {input_bytes / GIB:.2f} GiB per chip, more than the "
            f"{chip.hbm_bytes / GIB:.2f} GiB of HBM"
        ),
        "argument_bytes": input_bytes,
        "peak_bytes": input_bytes,
        "output_bytes": None,
        "alias_bytes": None,
        "temp_bytes": None,
        "generated_code_bytes": None,
        "hbm_bytes": chip.hbm_bytes,
        "headroom_bytes": chip.hbm_bytes - input_bytes,
        "fits": False,
        "flops_per_step": {"xla_per_chip": None, "xla_total": None},
        "collectives": {},
        "compile_seconds": 0.0,
        "compile_cpu_seconds": 0.0,
    }


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": GIB, "T": 1024**4}


def out_of_memory_step_report(message: str, input_bytes: int, chip: ChipSpec) -> dict[str, Any]:
    """The report of a step whose compile stopped because it ran out of HBM. The TPU
    compiler says, e.g., "the total memory required for HLO temporaries (35.44G) exceeds
    available HBM (15.75G)" (G: GiB); the temporaries it names plus the inputs are then
    a lower bound on the peak."""
    report = uncompiled_step_report(input_bytes, chip)
    first_line = message.strip().splitlines()[0] if message.strip() else message
    report["not_compiled_because"] = f"the compiler ran out of HBM: {first_line[:300]}"
    report["compiler_out_of_memory"] = True
    if match := re.search(r"HLO temporaries \(([\d.]+)([KMGT]?)\)", message):
        temp = int(float(match.group(1)) * _UNITS[match.group(2)])
        report.update(
            temp_bytes=temp,
            output_bytes=0,
            alias_bytes=0,
            peak_bytes=input_bytes + temp,
            headroom_bytes=chip.hbm_bytes - input_bytes - temp,
        )
    return report


COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2}
_DTYPE_BYTES |= {"s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8}
_DTYPE_BYTES |= {"f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1, "c128": 16}
_ARRAY = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
# `calls=%f` names one computation, `branch_computations={%a, %b}` a list.
_CALLED = re.compile(r"(body|condition|calls|to_apply|branch_computations)=(\{[^}]*\}|%?[\w.\-]+)")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def _array_bytes(type_text: str) -> int:
    total = 0
    for dtype, dims in _ARRAY.findall(type_text):
        if dtype in _DTYPE_BYTES:
            total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _tuple_elements(type_text: str) -> list[str]:
    """The top-level elements of an HLO tuple type `(a, (b, c), d)`: ["a", "(b, c)", "d"]."""
    text = re.sub(r"/\*.*?\*/", "", type_text).strip()
    if not text.startswith("("):
        return [text]
    elements, depth, start = [], 0, 1
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                elements.append(text[start:i])
                break
        elif char == "," and depth == 1:
            elements.append(text[start:i])
            start = i + 1
    return [e.strip() for e in elements if e.strip()]


def _trip_count(line: str, computations: Mapping[str, list[str]]) -> int:
    """How often the while loop of HLO instruction `line` runs its body (1 for any
    other instruction, or when it cannot be told). XLA writes a known trip count into
    the loop's backend config on some platforms; on others the loop's condition is
    `counter < N` on a constant N, and JAX's loops (scan, fori_loop) count from 0 by 1. A
    condition that ANDs one such bound with another test (decoding's early stop) counts
    at the bound: the most the loop runs."""
    if " while(" not in line:
        return 1
    if known := _TRIP_COUNT.search(line):
        return int(known.group(1))
    condition = re.search(r"condition=%?([\w.\-]+)", line)
    body = computations.get(condition.group(1), []) if condition else []
    constants = {}
    for inner in body:
        if match := re.match(r"\s*%?([\w.\-]+) = s32\[\][^ ]* constant\((\d+)\)", inner):
            constants[match.group(1)] = int(match.group(2))
    bounds = []
    for inner in body:
        if "compare(" in inner and "direction=LT" in inner:
            operands = re.search(r"compare\(([^)]*)\)", inner).group(1)
            names = [o.strip().lstrip("%") for o in operands.split(",")]
            if len(names) == 2 and names[1] in constants:
                if inner.lstrip().startswith("ROOT"):
                    return constants[names[1]]
                bounds.append(constants[names[1]])
    # A loop that may also stop early (decoding: `i < max_length & ~all(done)`) runs at
    # most its counter's bound: counted at that bound.
    return bounds[0] if len(bounds) == 1 else 1


def has_loops(hlo_text: str) -> bool:
    """Whether the program runs a loop body more than once (scanned layers,
    microbatches): XLA's cost analysis counts such a body once."""
    computations = _computations(hlo_text)[0]
    return any(
        _trip_count(line, computations) > 1 for lines in computations.values() for line in lines
    )


@functools.lru_cache(maxsize=1)
def _computations(hlo_text: str) -> tuple[dict[str, list[str]], str | None]:
    """The instructions of each computation of an HLO module, and the entry's name
    (kept for the last module: `step_report` asks for its loops and its collectives)."""
    computations: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        if current is None:
            if match := _COMPUTATION.match(line):
                current = match.group(1)
                computations[current] = []
                if line.startswith("ENTRY"):
                    entry = current
        elif line.startswith("}"):
            # "}" or, for a computation on another thread (v5p's SparseCore),
            # '}, execution_thread="sparsecore"'. Instructions are indented.
            current = None
        else:
            computations[current].append(line)
    return computations, entry


def collective_echoes(hlo_text: str) -> set[str]:
    """Computations whose collectives repeat one counted elsewhere.

    XLA on TPU splits an asynchronous collective into an `async-collective-start`
    fusion, fusions that overlap compute with it (`async_collective_fusion.N`) and an
    `async-collective-done` fusion, and every one of their computations holds the same
    collective instruction: one transfer, written up to four times. Only the start's
    copy counts."""
    echoes = set()
    for line in hlo_text.splitlines():
        for field, names in _CALLED.findall(line):
            if field != "calls":
                continue
            done = re.match(r"\s*(ROOT\s+)?%?async-collective-done", line) is not None
            for called in names.strip("{}").split(","):
                called = called.strip().lstrip("%")
                if done or called.startswith("async_collective_fusion"):
                    echoes.add(called)
    return echoes


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """Count and bytes per chip per step of each kind of collective in an optimized,
    SPMD-partitioned HLO module (its shapes are per device). An op inside a while loop
    (scanned layers, microbatches) counts once per iteration (`_trip_count`).
    Bytes are those of the op's result: the gathered array for an all-gather, the
    scattered shard for a reduce-scatter."""
    computations, entry = _computations(hlo_text)
    multiplier: dict[str, int] = {}

    def visit(name: str, times: int) -> None:
        multiplier[name] = multiplier.get(name, 0) + times
        for line in computations.get(name, ()):
            trips = _trip_count(line, computations)
            for field, names in _CALLED.findall(line):
                inner = times * (trips if field == "body" else 1)
                for called in names.strip("{}").split(","):
                    called = called.strip().lstrip("%")
                    if called in computations:
                        visit(called, inner)

    if entry is not None:
        visit(entry, 1)
    result = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
    echoes = collective_echoes(hlo_text)
    for name, times in multiplier.items():
        if name in echoes:
            continue
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
                    # An async start's result is (operands, outputs[, scratch]); a
                    # combined op (GPU) has a tuple of each.
                    parts = _tuple_elements(type_text)
                    type_text = parts[1] if len(parts) > 1 else type_text
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
    if not cost:
        cost = _optimized_module_cost(compiled)
    return float((cost or {}).get("flops", 0.0))


def _optimized_module_cost(compiled: Any) -> dict[str, float]:
    """XLA's cost analysis of the compiled (optimized, partitioned) module, run on the
    CPU client: compile-only CUDA executables report none of their own."""
    from jax._src.lib import _jax

    try:
        modules = compiled.runtime_executable().hlo_modules()
        client = jax.devices("cpu")[0].client
        return dict(_jax.hlo_module_cost_analysis(client, modules[0]))
    except Exception as error:  # noqa: BLE001 (a private API: no FLOPs rather than no report)
        log.warning("no cost analysis of the compiled program: %s", error)
        return {}


def step_report(
    compiled: Any, *, num_chips: int, chip: ChipSpec, compile_seconds: float
) -> dict[str, Any]:
    """Memory per chip, fit, XLA's FLOPs and the collectives of a compiled step."""
    report = memory_stats(compiled)
    flops = xla_flops(compiled)
    hlo_text = compiled.as_text()
    report.update(
        hbm_bytes=chip.hbm_bytes,
        fits=(report["peak_bytes"] <= chip.hbm_bytes) if chip.hbm_bytes else True,
        headroom_bytes=chip.hbm_bytes - report["peak_bytes"] if chip.hbm_bytes else None,
        flops_per_step={
            "xla_per_chip": flops,
            "xla_total": flops * num_chips,
            # XLA counts a loop's body once, however often it runs.
            "xla_counts_loop_bodies_once": has_loops(hlo_text),
        },
        collectives=collectives(hlo_text),
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
