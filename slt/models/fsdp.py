"""FSDP matmuls whose collectives the program states itself (opt-in).

With `slt.PartitioningConfig.explicit_fsdp_collectives = True`, `Dense` computes its
matmul in a `shard_map` that is manual over the batch axes:

- the kernel's shard is cast to the compute dtype and all-gathered for the forward;
- the backward gathers it again (`jax.checkpoint`: the gathered copy is recomputed, not
  kept alive across the forward, which is what FSDP saves memory with);
- each chip's partial weight gradient is cast to float32 and reduce-scattered onto the
  chip that holds the shard (shard_map's transpose then sums it over batch axes the
  kernel is not split over, such as `data` under FSDP rules, still in float32).

Float32, because the sum has one partial gradient per chip (256 on a v5e-256), and
bfloat16's 8-bit mantissa drops the low bits of each addend as the sum grows.

It is off by default. Left to itself XLA gathers each weight about as often as FSDP
needs (once or twice per step) and all-reduces the bfloat16 gradients, which sends the
same bytes as this float32 reduce-scatter. On TPU, XLA turns this module's
reduce-scatters back into all-reduces of the float32 gradients at ByT5 sizes, so the
explicit program sends more (ByT5-Small on a v5e-8: predicted collectives 10.9 ms ->
15.8 ms per step; bench/RESULTS.md, "Collectives against what the sharding needs").
On CPU meshes and the small test models it compiles to reduce-scatters.

Other mesh axes (`model`) stay under XLA's automatic partitioning, so tensor
parallelism composes with this. A kernel split over a batch axis together with another
axis in one dimension keeps the automatic path.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class _Scope:
    mesh: Any
    axes: tuple[str, ...]  # the manual (batch) axes, each of size > 1


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("slt_fsdp", default=None)


@contextlib.contextmanager
def gather_weights(mesh: Any, batch_axes: Sequence[str]) -> Iterator[None]:
    """While tracing inside this context, `Dense` gathers FSDP-split kernels explicitly
    over those of `batch_axes` that split the mesh (a no-op when none does)."""
    axes = tuple(a for a in batch_axes if a in mesh.shape and mesh.shape[a] > 1)
    token = _SCOPE.set(_Scope(mesh, axes) if axes else None)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def _entry_axes(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _gather(
    shard: jax.Array, dims: tuple[tuple[int, tuple[str, ...]], ...], dtype: Any
) -> jax.Array:
    """The whole kernel from this chip's shard, in `dtype`; its gradient is
    reduce-scattered back onto the shard in float32. `dims` holds (dimension, mesh
    axes) for each split dimension."""

    @jax.custom_vjp
    def gather(w):
        w = w.astype(dtype)
        for dim, axes in dims:
            w = jax.lax.all_gather(w, axes, axis=dim, tiled=True)
        return w

    def forward(w):
        return gather(w), None

    def backward(_, grad):
        grad = grad.astype(jnp.float32)
        for dim, axes in reversed(dims):
            grad = jax.lax.psum_scatter(grad, axes, scatter_dimension=dim, tiled=True)
        return (grad.astype(shard.dtype),)

    gather.defvjp(forward, backward)
    return gather(shard)


def dense(
    x: jax.Array, kernel: jax.Array, kernel_axes: Sequence[str | None], dtype: Any
) -> jax.Array | None:
    """`x @ kernel` in the compute dtype with explicit FSDP collectives, or None outside
    `gather_weights` or where the kernel's sharding needs the automatic path."""
    scope = _SCOPE.get()
    if scope is None:
        return None
    spec = nn.logical_to_mesh_axes(tuple(kernel_axes))
    manual = set(scope.axes)
    dims = []
    kernel_spec = []
    for dim, entry in enumerate(tuple(spec) + (None,) * (kernel.ndim - len(spec))):
        axes = _entry_axes(entry)
        ours = tuple(a for a in axes if a in manual)
        if ours and len(ours) != len(axes):
            return None
        if ours:
            dims.append((dim, ours))
        kernel_spec.append(ours if ours else None)
    if not dims:
        return None
    x_spec = P(scope.axes, *([None] * (x.ndim - 1)))

    @jax.checkpoint  # recompute the gathered kernel in the backward instead of keeping it
    def local(x_shard, kernel_shard):
        w = _gather(kernel_shard, tuple(dims), dtype)
        return jnp.dot(jnp.asarray(x_shard, dtype), w)

    return jax.shard_map(
        local,
        mesh=scope.mesh,
        in_specs=(x_spec, P(*kernel_spec)),
        out_specs=x_spec,
        axis_names=manual,
        check_vma=False,
    )(x, kernel)
