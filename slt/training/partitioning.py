"""Device mesh, logical axis rules and shardings (t5x's vocabulary).

Parameters and activations carry t5x's logical axis names (`batch`, `length`,
`embed`, `mlp`, `heads`, `kv`, `joined_kv`, `vocab`, `relpos_buckets`, `layers`,
plus our `landmark`). Rules map those names onto the named axes of one mesh,
`("data", "fsdp", "model")`:

- `data`: pure data parallelism (parameters replicated along it);
- `fsdp`: the batch is split along it too, and under FSDP rules the parameters'
  `embed` dimension as well (ZeRO-3 / t5x's 2-D parameter partitioning);
- `model`: tensor parallelism over `heads`/`joined_kv`, `mlp` and `vocab`.

Switching strategy is a choice of rule set (one gin binding, see
`partitioning/`); the model code never changes. Rules that name a mesh axis
the mesh lacks are narrowed to the axes it has, so the 1-axis `("data",)` meshes of
older configs keep working.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# Activation axes that are never split (t5x keeps `length` and `kv` whole).
_UNSPLIT = (
    ("length", None),
    ("kv", None),
    ("relpos_buckets", None),
    ("landmark", None),
    ("layers", None),
)

# Data parallelism: only the batch is split; every parameter is replicated.
DATA_PARALLEL_RULES: LogicalRules = (
    ("batch", BATCH_AXES),
    ("vocab", None),
    ("embed", None),
    ("mlp", None),
    ("heads", None),
    ("joined_kv", None),
) + _UNSPLIT

# FSDP (1-D parameter partitioning over `fsdp`): every parameter's `embed` dimension is
# split; XLA all-gathers a layer's weights just before use. Activations keep `embed`
# whole because `batch` already claims `fsdp` (flax skips a rule whose mesh axis is
# taken), which is the ZeRO-3 pattern.
FSDP_RULES: LogicalRules = (
    ("batch", BATCH_AXES),
    ("vocab", None),
    ("embed", "fsdp"),
    ("mlp", None),
    ("heads", None),
    ("joined_kv", None),
) + _UNSPLIT

# Tensor parallelism (t5x `parameter_partitioning_dims=1`): attention heads, the MLP
# hidden dimension and the vocabulary are split over `model` (Megatron layout).
TENSOR_PARALLEL_RULES: LogicalRules = (
    ("batch", BATCH_AXES),
    ("vocab", "model"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
) + _UNSPLIT

# 2-D parameter partitioning (t5x `parameter_partitioning_dims=2`): tensor parallel
# over `model` plus `embed` over `fsdp`; what XL/XXL need. Activations' `embed` cannot
# take `fsdp` (`batch` holds it), so the second `embed` rule splits it over `model`
# instead: without it the residual stream and the saved activations are whole on every
# chip of a `model` group (4x the activations of FSDP alone with MODEL_PARALLEL=4).
# Weights take the first rule; flax falls back to the second only when `fsdp` is taken.
FSDP_TENSOR_PARALLEL_RULES: LogicalRules = (
    ("batch", BATCH_AXES),
    ("vocab", "model"),
    ("embed", "fsdp"),
    ("embed", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
) + _UNSPLIT

RULE_SETS: Mapping[str, LogicalRules] = {
    "data_parallel": DATA_PARALLEL_RULES,
    "fsdp": FSDP_RULES,
    "tensor_parallel": TENSOR_PARALLEL_RULES,
    "fsdp_tensor_parallel": FSDP_TENSOR_PARALLEL_RULES,
}


def _resolve_shape(shape: Sequence[int], num_devices: int, what: str) -> list[int]:
    shape = [int(s) for s in shape]
    if shape.count(-1) > 1:
        raise ValueError(f"{what} {tuple(shape)}: at most one axis may be -1.")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ValueError(f"{what} {tuple(shape)} does not divide {num_devices} devices.")
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ValueError(
            f"{what} {tuple(shape)} needs {math.prod(shape)} devices, there are "
            f"{num_devices}; use -1 for one axis to take the rest."
        )
    return shape


def make_mesh(
    mesh_shape: Sequence[int] = (-1, 1, 1),
    axis_names: Sequence[str] = MESH_AXES,
    devices: Sequence[jax.Device] | None = None,
    dcn_mesh_shape: Sequence[int] | None = None,
) -> Mesh:
    """A mesh over all (or the given) devices; one size of -1 takes the rest.

    `dcn_mesh_shape` (multi-slice / multi-host over a data-centre network): the mesh
    is then `mesh_shape * dcn_mesh_shape` axis by axis, one block of `mesh_shape` per
    slice, so that the axes split over the slow network are the DCN ones (put data
    parallelism there). `mesh_shape` is then the per-slice (ICI) shape; a -1 in it
    takes the rest of one slice. Slices are the devices' `slice_index` (TPU
    multislice, real or compile-only), else processes (CPU, GPU), else, for the
    devices of one process (fake CPU devices, compile-only topologies), consecutive
    equal blocks of devices.

    Within a slice the devices are laid out by `mesh_utils.create_device_mesh`, which
    splits a physical torus axis when a mesh axis needs it (a `model` axis of 2 on a
    4x4x4 v4 slice); `jax.make_mesh` refuses those meshes.

    Axes are `Auto` typed: linen's logical partitioning works with those only.
    """
    devices = list(devices if devices is not None else jax.devices())
    if len(mesh_shape) != len(axis_names):
        raise ValueError(
            f"mesh_shape {tuple(mesh_shape)} and axis_names {tuple(axis_names)} "
            "must have the same length."
        )
    axis_types = (jax.sharding.AxisType.Auto,) * len(axis_names)
    if dcn_mesh_shape is None:
        shape = _resolve_shape(mesh_shape, len(devices), "mesh_shape")
        device_array = _slice_mesh(shape, devices)
        return Mesh(device_array, tuple(axis_names), axis_types=axis_types)
    if len(dcn_mesh_shape) != len(axis_names):
        raise ValueError(
            f"dcn_mesh_shape {tuple(dcn_mesh_shape)} and axis_names "
            f"{tuple(axis_names)} must have the same length."
        )
    num_slices = math.prod(dcn_mesh_shape)
    if len(devices) % num_slices:
        raise ValueError(
            f"dcn_mesh_shape {tuple(dcn_mesh_shape)} asks for {num_slices} "
            f"slices; {len(devices)} devices do not split into that many."
        )
    ici_shape = _resolve_shape(mesh_shape, len(devices) // num_slices, "mesh_shape (per slice)")
    slices = device_slices(devices, num_slices)
    blocks = np.empty(len(slices), dtype=object)
    for i, slice_devices in enumerate(slices):
        blocks[i] = _slice_mesh(ici_shape, slice_devices)
    device_array = np.block(blocks.reshape(tuple(dcn_mesh_shape)).tolist())
    return Mesh(device_array, tuple(axis_names), axis_types=axis_types)


def _slice_mesh(shape: Sequence[int], devices: Sequence[jax.Device]) -> np.ndarray:
    """The devices of one slice as an array of `shape`, physical axes split if needed."""
    try:
        return mesh_utils.create_device_mesh(tuple(shape), devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError) as error:
        raise ValueError(
            f"mesh_shape {tuple(shape)} cannot be laid out over the {len(devices)} "
            f"{devices[0].device_kind} devices of a slice ({str(error).splitlines()[0]}); "
            "choose axis sizes whose product uses the slice's physical axes (gin: "
            "slt.PartitioningConfig.mesh_shape)."
        ) from None


def device_slices(devices: Sequence[jax.Device], num_slices: int) -> list[list[jax.Device]]:
    """`devices` grouped into `num_slices` slices (see `make_mesh`), in slice order."""

    def grouped(key) -> list[list[jax.Device]]:
        groups: dict[int, list[jax.Device]] = {}
        for device in devices:
            groups.setdefault(key(device), []).append(device)
        return [groups[k] for k in sorted(groups)]

    # A GPU host is one NVLink domain, and its devices (real or compile-only) may all
    # carry slice_index 0: on GPUs the hosts are the slices.
    gpu_hosts = devices[0].platform == "gpu" and len({d.process_index for d in devices}) > 1
    if not gpu_hosts and all(getattr(d, "slice_index", None) is not None for d in devices):
        slices, by = grouped(lambda d: d.slice_index), "slice_index"
    elif len({d.process_index for d in devices}) > 1:
        slices, by = grouped(lambda d: d.process_index), "process"
    else:  # one process: consecutive blocks (fake CPU devices, compile-only devices)
        size = len(devices) // num_slices
        slices, by = [list(devices[i * size : (i + 1) * size]) for i in range(num_slices)], ""
    if num_slices == 1:
        return [list(devices)]
    if by == "process" and len(slices) > num_slices and len(slices) % num_slices == 0:
        per = len(slices) // num_slices  # several hosts per slice: consecutive processes
        slices = [sum(slices[i * per : (i + 1) * per], []) for i in range(num_slices)]
    if len(slices) != num_slices or len({len(s) for s in slices}) != 1:
        raise ValueError(
            f"dcn_mesh_shape asks for {num_slices} slices, but the {len(devices)} devices "
            f"form {len(slices)} slices by {by} of sizes {sorted({len(s) for s in slices})}; "
            "set the product of slt.PartitioningConfig.dcn_mesh_shape to the number of "
            "slices (gin: NUM_SLICES in partitioning/multislice.gin)."
        )
    return slices


def restrict_rules(rules: LogicalRules, mesh: Mesh) -> list[tuple[str, Any]]:
    """`rules` with every mesh axis the mesh lacks removed (a tuple keeps the rest)."""

    def keep(target):
        if target is None:
            return None
        if isinstance(target, str):
            return target if target in mesh.shape else None
        kept = tuple(t for t in target if t in mesh.shape)
        return kept[0] if len(kept) == 1 else (kept or None)

    return [(name, keep(target)) for name, target in rules]


def param_shardings(logical_axes: Any, mesh: Mesh, rules: LogicalRules) -> Any:
    """NamedShardings for a tree of logical PartitionSpecs (from the model)."""
    return nn.logical_to_mesh_sharding(logical_axes, mesh, restrict_rules(rules, mesh))


def batch_sharding(mesh: Mesh, rules: LogicalRules) -> NamedSharding:
    """Leading (batch) dimension split over whatever mesh axes `batch` maps to."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), restrict_rules(rules, mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _split_ways(mesh: Mesh, entry: Any) -> int:
    names = (entry,) if isinstance(entry, str) else tuple(entry or ())
    return math.prod(mesh.shape[n] for n in names)


def check_batch_size(batch_size: int, sharding: NamedSharding) -> None:
    """Fails early, with the fix, when the batch cannot be split evenly."""
    ways = _split_ways(sharding.mesh, sharding.spec[0] if sharding.spec else None)
    if batch_size % ways:
        raise ValueError(
            f"batch_size={batch_size} does not split over {ways} data shards of mesh "
            f"{dict(sharding.mesh.shape)}; use a multiple of {ways} (gin: "
            "train.batch_size) or change slt.PartitioningConfig.mesh_shape."
        )


def check_divisible(abstract_tree: Any, shardings: Any, what: str = "parameter") -> None:
    """Raises one error listing every array whose sharded dimensions do not divide."""
    problems = []
    flat, _ = jax.tree_util.tree_flatten_with_path(abstract_tree)
    for (path, leaf), sharding in zip(flat, jax.tree.leaves(shardings), strict=True):
        for dim, entry in enumerate(tuple(sharding.spec)):
            ways = _split_ways(sharding.mesh, entry)
            if ways > 1 and leaf.shape[dim] % ways:
                problems.append(
                    f"  {jax.tree_util.keystr(path)}: shape {tuple(leaf.shape)}, "
                    f"dim {dim} ({leaf.shape[dim]}) split {ways} ways over {entry}"
                )
    if problems:
        mesh_shape = dict(jax.tree.leaves(shardings)[0].mesh.shape)
        raise ValueError(
            f"{len(problems)} {what}(s) cannot be split over mesh {mesh_shape}:\n"
            + "\n".join(problems)
            + "\nChoose model dimensions divisible by the mesh axes, "
            "a smaller `model`/`fsdp` axis (gin: slt.PartitioningConfig.mesh_shape) or "
            "other rules (gin: slt.PartitioningConfig.logical_axis_rules)."
        )


def optimizer_state_shardings(opt_state: Any, params: Any, params_sharding: Any, mesh: Mesh) -> Any:
    """Shardings for an optax state, following each slot's parameter.

    A slot with its parameter's shape (Adam moments, Adafactor's unfactored `v`)
    takes the parameter's sharding. Adafactor's factored statistics `v_row` / `v_col`
    are the parameter with its largest / second-largest dimension reduced away
    (optax's rule), so they take the parameter's spec with that dimension deleted:
    a `[embed, mlp]` kernel sharded (`fsdp`, `model`) gets `v_row` split over `fsdp`.
    Everything else (counts, placeholders) is replicated.
    """
    param_info = {}
    for (path, param), sharding in zip(
        jax.tree_util.tree_flatten_with_path(params)[0],
        jax.tree.leaves(params_sharding),
        strict=True,
    ):
        param_info[tuple(path)] = (param, sharding)
    rep = replicated(mesh)

    def pick(path, slot):
        shape = tuple(getattr(slot, "shape", ()))
        for start in range(len(path)):
            info = param_info.get(tuple(path[start:]))
            if info is not None:
                break
        else:
            return rep
        param, sharding = info
        if shape == tuple(param.shape):
            return sharding
        field = next(
            (k.name for k in reversed(path[:start]) if isinstance(k, jax.tree_util.GetAttrKey)),
            None,
        )
        if field in ("v_row", "v_col") and len(shape) == param.ndim - 1 and param.ndim >= 2:
            order = np.argsort(param.shape)
            dim = int(order[-1] if field == "v_row" else order[-2])
            spec = list(sharding.spec) + [None] * (param.ndim - len(sharding.spec))
            if tuple(np.delete(param.shape, dim)) == shape:
                del spec[dim]
                return NamedSharding(mesh, PartitionSpec(*spec))
        return rep

    return jax.tree_util.tree_map_with_path(pick, opt_state)


def host_batch_rows(
    sharding: NamedSharding, global_batch_size: int, process_index: int | None = None
) -> tuple[int, int]:
    """The contiguous rows `[start, stop)` of the global batch this process feeds."""
    process_index = jax.process_index() if process_index is None else process_index
    rows = set()
    for device, index in sharding.devices_indices_map((global_batch_size,)).items():
        if device.process_index == process_index:
            start, stop, _ = index[0].indices(global_batch_size)
            rows.update(range(start, stop))
    if not rows or len(rows) != max(rows) - min(rows) + 1:
        raise ValueError(
            f"process {process_index} holds batch rows that are not one contiguous block "
            f"on mesh {dict(sharding.mesh.shape)}; order the mesh so each host's devices "
            "are adjacent on the data axes (e.g. put DCN/host axes first)."
        )
    return min(rows), max(rows) + 1


class HostShard(NamedTuple):
    """Which part of the input a host reads: shard `index` of `num_shards` (the fields
    of `seqio.ShardInfo`, so it converts with `seqio.ShardInfo(*shard)`)."""

    index: int
    num_shards: int


def host_input_shard(
    sharding: NamedSharding, global_batch_size: int, process_index: int | None = None
) -> HostShard:
    """The input shard of a host, in training and in evaluation.

    Derived from the host's position on the batch (data) axes of the mesh: hosts
    whose devices hold the same batch rows (model parallelism across hosts) read
    the same shard; the number of shards is the number of distinct row blocks.
    """
    blocks = sorted(
        {host_batch_rows(sharding, global_batch_size, p) for p in range(jax.process_count())}
    )
    mine = host_batch_rows(sharding, global_batch_size, process_index)
    sizes = {stop - start for start, stop in blocks}
    if len(sizes) != 1 or any(a[1] > b[0] for a, b in zip(blocks, blocks[1:])):
        raise ValueError(f"hosts hold overlapping or unequal batch blocks {blocks}.")
    return HostShard(blocks.index(mine), len(blocks))


def global_batch(
    local_batch: dict[str, np.ndarray], sharding: NamedSharding
) -> dict[str, jax.Array]:
    """Assembles the global batch from this process's rows of it."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    initialization_timeout_s: int = 300,
    heartbeat_timeout_s: int = 100,
) -> bool:
    """`jax.distributed.initialize` from the arguments, else from the environment.

    Environment: `SLT_COORDINATOR_ADDRESS` (host:port of process 0),
    `SLT_NUM_PROCESSES`, `SLT_PROCESS_ID`. With neither, nothing happens (one
    process) unless `SLT_DISTRIBUTED_AUTO=1`, which lets JAX detect the cluster
    (TPU pods, SLURM, ...). Returns whether JAX now runs distributed.
    Must be called before anything touches a JAX device.
    """
    if jax.distributed.is_initialized():  # e.g. a second `train()` in one process
        return True
    env = os.environ
    coordinator_address = coordinator_address or env.get("SLT_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("SLT_NUM_PROCESSES"):
        num_processes = int(env["SLT_NUM_PROCESSES"])
    if process_id is None and env.get("SLT_PROCESS_ID"):
        process_id = int(env["SLT_PROCESS_ID"])
    kwargs = {
        "initialization_timeout": initialization_timeout_s,
        "heartbeat_timeout_seconds": heartbeat_timeout_s,
    }
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ValueError(
                f"coordinator address {coordinator_address!r} is set but the number of "
                "processes or this process's id is not: set SLT_NUM_PROCESSES and "
                "SLT_PROCESS_ID (or gin slt.DistributedConfig.num_processes and "
                "slt.DistributedConfig.process_id)."
            )
        jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)
        _log_joined("SLT_COORDINATOR_ADDRESS")
        return True
    if env.get("SLT_DISTRIBUTED_AUTO") == "1":
        jax.distributed.initialize(**kwargs)
        _log_joined("JAX's cluster detection (SLT_DISTRIBUTED_AUTO=1)")
        return True
    return False


def _log_joined(source: str) -> None:
    """One line per process that launchers and their tests read: who joined what."""
    from jax._src import distributed  # the resolved values; public API would start the backend

    state = distributed.global_state
    log.info(
        "jax.distributed: process %s of %s processes, coordinator %s (from %s)",
        state.process_id,
        state.num_processes,
        state.coordinator_address,
        source,
    )


@dataclasses.dataclass(frozen=True)
class PartitioningConfig:
    """How params, optimizer state and batches are laid out over the devices.

    `mesh_shape` is over `mesh_axis_names` (a -1 takes the remaining devices);
    `dcn_mesh_shape` is the part of the mesh across slices (multislice TPU);
    `logical_axis_rules` map the model's logical axes onto the mesh axes;
    `explicit_fsdp_collectives` has dense layers gather FSDP-split kernels themselves and
    reduce-scatter their gradients in float32 (`slt.models.fsdp`, off by default: on TPU
    XLA's own collectives send less at ByT5 sizes).
    """

    mesh_shape: Sequence[int] = (-1, 1, 1)
    mesh_axis_names: Sequence[str] = MESH_AXES
    dcn_mesh_shape: Sequence[int] | None = None
    logical_axis_rules: LogicalRules = DATA_PARALLEL_RULES
    donate_state: bool = True
    explicit_fsdp_collectives: bool = False


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Several processes in one job (`jax.distributed`).

    Unset fields come from `SLT_COORDINATOR_ADDRESS`, `SLT_NUM_PROCESSES` and
    `SLT_PROCESS_ID`, or from JAX's own cluster detection with `SLT_DISTRIBUTED_AUTO=1`.
    A process exits when no step finishes within `step_timeout_s` (default: 300 s with
    several processes, off with one): a peer probably died.
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_timeout_s: int = 100
    step_timeout_s: float | None = None
