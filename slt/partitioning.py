"""Device mesh, logical axis rules and shardings (t5x's vocabulary).

Parameters carry logical axis names (`embed`, `mlp`, `heads`, `joined_kv`, `vocab`,
...); rules map those names onto named mesh axes. With the default rules every
parameter is replicated and the batch is split over `data` (data parallelism); other
rule sets shard parameters over the same mesh without touching model code.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Data parallelism: only the batch is split; every parameter is replicated.
DATA_PARALLEL_RULES: LogicalRules = (
    ("batch", "data"),
    ("vocab", None),
    ("embed", None),
    ("mlp", None),
    ("heads", None),
    ("kv", None),
    ("joined_kv", None),
    ("relpos_buckets", None),
    ("landmark", None),
    ("length", None),
    ("layers", None),
)


def make_mesh(mesh_shape: Sequence[int] = (-1,),
              axis_names: Sequence[str] = ("data",),
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over all (or the given) devices; one size of -1 takes the rest.

    Axes are `Auto` typed: linen's logical partitioning works with those only.
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = list(mesh_shape)
    if len(shape) != len(axis_names):
        raise ValueError(f"mesh_shape {tuple(shape)} and axis_names {tuple(axis_names)} "
                         "must have the same length.")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh_shape {tuple(shape)}: at most one axis may be -1.")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"mesh_shape {tuple(shape)} does not divide {len(devices)} devices.")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"mesh_shape {tuple(shape)} needs {math.prod(shape)} devices, there are "
            f"{len(devices)}; use -1 for one axis to take the rest.")
    return jax.make_mesh(tuple(shape), tuple(axis_names), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,) * len(shape))


def param_shardings(logical_axes: Any, mesh: Mesh, rules: LogicalRules) -> Any:
    """NamedShardings for a tree of logical PartitionSpecs (from the model)."""
    return nn.logical_to_mesh_sharding(logical_axes, mesh, list(rules))


def batch_sharding(mesh: Mesh, rules: LogicalRules) -> NamedSharding:
    """Leading (batch) dimension split over whatever mesh axes `batch` maps to."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), list(rules)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, sharding: NamedSharding) -> None:
    """Fails early, with the fix, when the batch cannot be split evenly."""
    spec = sharding.spec[0] if sharding.spec else None
    names = (spec,) if isinstance(spec, str) else tuple(spec or ())
    ways = math.prod(sharding.mesh.shape[n] for n in names)
    if batch_size % ways:
        raise ValueError(
            f"batch_size={batch_size} does not split over {ways} data shards of mesh "
            f"{dict(sharding.mesh.shape)}; use a multiple of {ways}.")


def global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles the global batch from this process's rows of it."""
    return {k: jax.make_array_from_process_local_data(sharding, v)
            for k, v in local_batch.items()}
