"""T5.1.1 building blocks in flax.linen.

Numerics follow T5.1.1 / T5X exactly so that public ByT5 and mT5 checkpoints load by
identity (see docs/architecture.md, "Numerics that must match T5.1.1"):

* RMSNorm without mean or bias, eps 1e-6, computed in float32, param ``scale``.
* Dense kernels carry no bias and are stored 2-D (q/k/v ``[embed, heads*head_dim]``).
* No 1/sqrt(head_dim) scaling of attention logits: it lives in the query initialiser.
* Gated GELU (tanh approximation) MLP with params ``wi_0``, ``wi_1``, ``wo``.
* Relative position buckets as in T5 (computed with numpy float32 at trace time).

Every parameter is created through ``nn.with_logical_partitioning`` with t5x's logical
axis names, so ``model.init`` returns ``nn.LogicallyPartitioned`` boxes:
``nn.get_partition_spec(variables)`` gives logical PartitionSpecs and
``nn.meta.unbox(variables)`` gives plain arrays. Modules accept boxed or plain params.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from slt.models import fsdp

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

# Additive bias for masked attention positions. Large but finite so that a fully masked
# row (e.g. an all-padding example) gives a uniform softmax instead of NaN, as in T5X.
NEG_INF = -1e10

# T5X initialisers (variance scaling on the 2-D kernel: fan_in is its first dimension).
attention_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
mlp_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
embedding_init = nn.initializers.normal(stddev=1.0)
# flax's default_embed_init, as T5X uses for [heads, buckets]: std 1/sqrt(num_buckets).
relpos_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)


def query_kernel_init(head_dim: int) -> Initializer:
    """Attention-kernel init divided by sqrt(head_dim): T5's folded logit scaling."""

    def init(key: Array, shape: Sequence[int], dtype: DType = jnp.float32) -> Array:
        return attention_kernel_init(key, shape, dtype) / jnp.sqrt(head_dim).astype(dtype)

    return init


def constrain(x: Array, axes: tuple[str | None, ...]) -> Array:
    """Logical sharding constraint on an activation (a no-op without axis rules)."""
    return nn.with_logical_constraint(x, axes)


class RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction, no bias, float32 statistics."""

    epsilon: float = 1e-6
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x, jnp.float32)
        features = x.shape[-1]
        mean2 = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        y = jnp.asarray(x * jax.lax.rsqrt(mean2 + self.epsilon), self.dtype)
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
            (features,),
            jnp.float32,
        )
        return y * jnp.asarray(scale, self.dtype)


class Dense(nn.Module):
    """Dense layer with a 2-D float32 kernel cast to ``dtype`` for compute.

    T5 layers use no bias; ``use_bias`` exists only for our landmark projection.
    """

    features: int
    kernel_axes: tuple[str | None, ...]
    kernel_init: Initializer = attention_kernel_init
    use_bias: bool = False
    bias_axes: tuple[str | None, ...] = ("embed",)
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
            (x.shape[-1], self.features),
            jnp.float32,
        )
        y = fsdp.dense(x, kernel, self.kernel_axes, self.dtype)
        if y is None:
            y = jnp.dot(jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype))
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, self.bias_axes),
                (self.features,),
                jnp.float32,
            )
            y = y + jnp.asarray(bias, self.dtype)
        return y


class Embed(nn.Module):
    """Token embedding table ``[vocab, embed]``, shared by encoder and decoder."""

    num_embeddings: int
    features: int
    dtype: DType = jnp.float32

    def setup(self) -> None:
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(embedding_init, ("vocab", "embed")),
            (self.num_embeddings, self.features),
            jnp.float32,
        )

    def __call__(self, tokens: Array) -> Array:
        # A gather equals T5X's one-hot matmul numerically and is much cheaper on CPU/GPU.
        return jnp.take(jnp.asarray(self.embedding, self.dtype), tokens, axis=0)

    def attend(self, query: Array) -> Array:
        """float32 logits against the table (only for ``logits_via_embedding``, T5 1.0)."""
        return jnp.dot(jnp.asarray(query, jnp.float32), jnp.asarray(self.embedding, jnp.float32).T)


def relative_position_bucket(
    relative_position: np.ndarray,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> np.ndarray:
    """T5 bucket of ``relative_position = key_pos - query_pos`` (numpy, float32 logs).

    Bidirectional: half the buckets per direction, keys after the query use the upper
    half. Unidirectional: keys after the query share bucket 0. In each half, distances
    below ``num_buckets // 2`` get exact buckets and larger ones are log-spaced up to
    ``max_distance``; anything farther lands in the last bucket.
    """
    ret = np.zeros_like(relative_position, dtype=np.int32)
    n = -np.asarray(relative_position, dtype=np.int32)
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(np.int32) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # float32 with eps, as T5X computes it: bucket edges depend on this rounding.
    eps = np.finfo(np.float32).eps
    ratio = np.log(n.astype(np.float32) / np.float32(max_exact) + eps) / np.float32(
        np.log(max_distance / max_exact)
    )
    val_if_large = max_exact + (ratio * np.float32(num_buckets - max_exact)).astype(np.int32)
    val_if_large = np.minimum(val_if_large, num_buckets - 1)
    return ret + np.where(is_small, n, val_if_large).astype(np.int32)


class RelativePositionBiases(nn.Module):
    """One ``rel_embedding [heads, buckets]`` table per stack, shared by its layers."""

    num_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(
        self, qlen: int, klen: int, bidirectional: bool, query_index: Array | None = None
    ) -> Array:
        """Returns the bias ``[1, heads, qlen, klen]`` for static lengths.

        With ``query_index`` (cached decoding, ``qlen == 1``) it returns the row of the
        ``[klen, klen]`` bias for that (traced) query position: ``[1, heads, 1, klen]``.
        """
        table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(relpos_init, ("heads", "relpos_buckets")),
            (self.num_heads, self.num_buckets),
            jnp.float32,
        )
        table = jnp.asarray(table, self.dtype)
        grid_q = klen if query_index is not None else qlen
        context = np.arange(grid_q, dtype=np.int32)[:, None]
        memory = np.arange(klen, dtype=np.int32)[None, :]
        buckets = relative_position_bucket(
            memory - context, bidirectional, self.num_buckets, self.max_distance
        )
        if query_index is not None:
            buckets = jax.lax.dynamic_slice_in_dim(jnp.asarray(buckets), query_index, 1, 0)
        # A gather; T5X's one-hot contraction gives the same values.
        return table[:, buckets][None]


def dropout(x: Array, rate: float, enable: bool, broadcast_dims: Sequence[int] = (-2,)) -> Array:
    """Dropout shared along the length axis (T5X residual dropout)."""
    return nn.Dropout(rate=rate, broadcast_dims=broadcast_dims)(x, deterministic=not enable)


def _attention_weights(
    spec: str, query: Array, key: Array, bias: Array | None, float32_logits: bool, dtype: DType
) -> Array:
    """softmax(query . key + bias) ``[b,h,q,k]``; ``spec`` names the key's layout."""
    if float32_logits:
        query = jnp.asarray(query, jnp.float32)
        key = jnp.asarray(key, jnp.float32)
    logits = jnp.einsum(spec, query, key)
    if bias is not None:
        logits = logits + jnp.asarray(bias, logits.dtype)
    return jax.nn.softmax(logits, axis=-1).astype(dtype)


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    bias: Array | None,
    dropout_rng: Array | None = None,
    dropout_rate: float = 0.0,
    float32_logits: bool = True,
    dtype: DType = jnp.float32,
) -> Array:
    """Unscaled attention. query ``[b,q,h,d]``, key/value ``[b,k,h,d]``, bias broadcastable
    to ``[b,h,q,k]`` (all masks already folded in). Returns ``[b,q,h,d]``."""
    weights = _attention_weights("bqhd,bkhd->bhqk", query, key, bias, float32_logits, dtype)
    if dropout_rng is not None and dropout_rate > 0.0:
        # Same mask for every query position, as T5X's broadcast_dropout.
        keep_prob = 1.0 - dropout_rate
        shape = list(weights.shape)
        shape[-2] = 1
        keep = jax.random.bernoulli(dropout_rng, keep_prob, shape)
        weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype))
    return jnp.einsum("bhqk,bkhd->bqhd", weights, jnp.asarray(value, dtype))


class MultiHeadDotProductAttention(nn.Module):
    """T5 multi-head attention with 2-D ``joined_kv`` kernels and a decode-time KV cache.

    Decoding (``decode=True``) follows the T5X convention: the first call, made with the
    full ``[b, max_len]`` decoder input while the 'cache' collection is empty, creates the
    cache. Later calls process one position each:

    * self-attention writes its key/value at ``cache_index`` into ``cached_key`` /
      ``cached_value`` and attends over the whole cache (the caller's bias masks
      positions after ``cache_index``);
    * cross-attention (``cross_attention=True``) stores the projected encoder keys/values
      on the first call and only reads them afterwards, so they are computed once.

    Cache layout (both kinds): ``cached_key [b, h, d, len]``, ``cached_value
    [b, h, len, d]``, so that a step's ``q @ K`` and ``w @ V`` read them as they lie.
    With the activation layout ``[b, len, h, d]`` XLA transposed every cached array in
    every step (on CPU that was most of a step's time).
    """

    num_heads: int
    head_dim: int
    dtype: DType = jnp.float32
    dropout_rate: float = 0.0
    float32_logits: bool = True
    cross_attention: bool = False

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        bias: Array | None,
        enable_dropout: bool = True,
        decode: bool = False,
        cache_index: Array | None = None,
    ) -> Array:
        joined = self.num_heads * self.head_dim
        dense = lambda name, init: Dense(  # noqa: E731
            joined, ("embed", "joined_kv"), init, dtype=self.dtype, name=name
        )
        heads = lambda x: x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))  # noqa: E731

        query = heads(dense("query", query_kernel_init(self.head_dim))(inputs_q))
        query = constrain(query, ("batch", "length", "heads", "kv"))

        cached = None
        if decode and self.cross_attention:
            key, value, cached = self._cross_kv(inputs_kv, dense, heads)
        else:
            key = heads(dense("key", attention_kernel_init)(inputs_kv))
            value = heads(dense("value", attention_kernel_init)(inputs_kv))
            if decode:
                cached = self._update_self_cache(key, value, cache_index)

        if cached is not None:  # one cached decoding step (no dropout at inference)
            cached_key = constrain(cached[0], ("batch", "heads", "kv", "length"))
            cached_value = constrain(cached[1], ("batch", "heads", "length", "kv"))
            x = cached_attention(
                query, cached_key, cached_value, bias, self.float32_logits, self.dtype
            )
        else:
            key = constrain(key, ("batch", "length", "heads", "kv"))
            value = constrain(value, ("batch", "length", "heads", "kv"))
            rng = None
            if enable_dropout and self.dropout_rate > 0.0:
                rng = self.make_rng("dropout")
            x = dot_product_attention(
                query, key, value, bias, rng, self.dropout_rate, self.float32_logits, self.dtype
            )
        x = x.reshape(x.shape[:-2] + (joined,))
        out = Dense(
            inputs_q.shape[-1],
            ("joined_kv", "embed"),
            attention_kernel_init,
            dtype=self.dtype,
            name="out",
        )(x)
        return constrain(out, ("batch", "length", "embed"))

    def _update_self_cache(
        self, key: Array, value: Array, cache_index: Array | None
    ) -> tuple[Array, Array] | None:
        """Creates the cache (returns None: that call attends over its full input), or
        writes this step's key/value at ``cache_index`` and returns the whole cache."""
        initialized = self.has_variable("cache", "cached_key")
        b, length, h, d = key.shape
        cached_key = self.variable("cache", "cached_key", jnp.zeros, (b, h, d, length), key.dtype)
        cached_value = self.variable(
            "cache", "cached_value", jnp.zeros, (b, h, length, d), value.dtype
        )
        if not initialized:
            return None
        if length != 1:
            raise ValueError(f"Cached decoding takes one position per step, got {key.shape}.")
        if cache_index is None:
            raise ValueError("cache_index is required for cached self-attention.")
        cached_key.value = jax.lax.dynamic_update_slice(
            cached_key.value, key_layout(key).astype(cached_key.value.dtype), (0, 0, 0, cache_index)
        )
        cached_value.value = jax.lax.dynamic_update_slice(
            cached_value.value,
            value_layout(value).astype(cached_value.value.dtype),
            (0, 0, cache_index, 0),
        )
        return cached_key.value, cached_value.value

    def _cross_kv(
        self, inputs_kv: Array, dense: Callable, heads: Callable
    ) -> tuple[Array, Array, tuple[Array, Array] | None]:
        """Projected encoder keys/values: computed and stored by the first call (which
        attends with them as usual), read from the cache by later calls."""
        if self.has_variable("cache", "cached_key"):
            # Keep the kernels in the param tree without recomputing the projection.
            cached = (
                self.get_variable("cache", "cached_key"),
                self.get_variable("cache", "cached_value"),
            )
            return None, None, cached
        key = heads(dense("key", attention_kernel_init)(inputs_kv))
        value = heads(dense("value", attention_kernel_init)(inputs_kv))
        self.put_variable("cache", "cached_key", key_layout(key))
        self.put_variable("cache", "cached_value", value_layout(value))
        return key, value, None


def key_layout(key: Array) -> Array:
    """``[b, len, h, d]`` -> the cached-key layout ``[b, h, d, len]``."""
    return jnp.transpose(key, (0, 2, 3, 1))


def value_layout(value: Array) -> Array:
    """``[b, len, h, d]`` -> the cached-value layout ``[b, h, len, d]``."""
    return jnp.transpose(value, (0, 2, 1, 3))


def cached_attention(
    query: Array,
    cached_key: Array,
    cached_value: Array,
    bias: Array | None,
    float32_logits: bool = True,
    dtype: DType = jnp.float32,
) -> Array:
    """``dot_product_attention`` over a cache: query ``[n,q,h,d]``, ``cached_key
    [b,h,d,k]``, ``cached_value [b,h,k,d]``, bias broadcastable to ``[b,h,q,k]``.
    Returns ``[n,q,h,d]``.

    ``n`` may be a multiple ``g * b`` of the cache's batch: query rows ``i*g .. i*g+g-1``
    (the beams of example ``i``) then share cache row ``i``, as ``g * q`` query positions.
    """
    n, q, h, d = query.shape
    b = cached_key.shape[0]
    if n != b:
        if n % b:
            raise ValueError(f"cached_attention: {n} query rows for a cache of {b} rows.")
        out = cached_attention(
            query.reshape(b, n // b * q, h, d),
            cached_key,
            cached_value,
            bias,
            float32_logits,
            dtype,
        )
        return out.reshape(n, q, h, d)
    weights = _attention_weights("bqhd,bhdk->bhqk", query, cached_key, bias, float32_logits, dtype)
    return jnp.einsum("bhqk,bhkd->bqhd", weights, jnp.asarray(cached_value, dtype))


class MlpBlock(nn.Module):
    """T5.1.1 gated MLP: ``wo(dropout(act_0(wi_0 x) * act_1(wi_1 x)))``."""

    intermediate_dim: int
    activations: Sequence[str] = ("gelu", "linear")
    dropout_rate: float = 0.0
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, inputs: Array, enable_dropout: bool = True) -> Array:
        h = None
        for i, act in enumerate(self.activations):
            name = f"wi_{i}" if len(self.activations) > 1 else "wi"
            x = Dense(
                self.intermediate_dim,
                ("embed", "mlp"),
                mlp_kernel_init,
                dtype=self.dtype,
                name=name,
            )(inputs)
            x = _activation(act)(x)
            h = x if h is None else h * x
        h = constrain(h, ("batch", "length", "mlp"))
        h = dropout(h, self.dropout_rate, enable_dropout)
        out = Dense(
            inputs.shape[-1], ("mlp", "embed"), mlp_kernel_init, dtype=self.dtype, name="wo"
        )(h)
        return constrain(out, ("batch", "length", "embed"))


def _activation(name: str) -> Callable[[Array], Array]:
    if name == "linear":
        return lambda x: x
    if name == "gelu":
        return lambda x: nn.gelu(x, approximate=True)  # T5.1.1 uses the tanh form.
    if name == "relu":
        return nn.relu
    raise ValueError(f"Unknown MLP activation {name!r}")


def mask_to_bias(mask: Array, dtype: DType = jnp.float32) -> Array:
    """1/0 mask -> additive 0/NEG_INF bias."""
    return jnp.where(mask > 0, 0.0, NEG_INF).astype(dtype)
