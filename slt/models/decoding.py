"""Decode loops over a cached one-token step function (jit-compatible).

``tokens_to_logits(token [B], cache) -> (logits [B, V], cache)`` runs one cached decoder
step; the cache is any pytree (the flax 'cache' collection in our model). Beam search
can live here next to greedy search with the same step function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Cache = Any
StepFn = Callable[[Array, Cache], tuple[Array, Cache]]

EOS_ID = 1
PAD_ID = 0


def greedy_search(
    tokens_to_logits: StepFn,
    cache: Cache,
    batch_size: int,
    max_decode_length: int,
    eos_id: int = EOS_ID,
    bos_id: int = PAD_ID,
) -> Array:
    """Greedy decoding: int32 ``[B, max_decode_length]``.

    Each sequence keeps its EOS and is all 0 (pad) after it. The ``while_loop`` stops as
    soon as every sequence has emitted EOS, so short outputs cost few steps.
    """

    def cond(state: tuple) -> Array:
        i, _, _, _, done = state
        return (i < max_decode_length) & ~jnp.all(done)

    def body(state: tuple) -> tuple:
        i, cache, tokens, current, done = state
        logits, cache = tokens_to_logits(current, cache)
        nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        nxt = jnp.where(done, PAD_ID, nxt)
        tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, i))
        done = done | (nxt == eos_id)
        return i + 1, cache, tokens, nxt, done

    state = (
        jnp.array(0, jnp.int32),
        cache,
        jnp.zeros((batch_size, max_decode_length), jnp.int32),
        jnp.full((batch_size,), bos_id, jnp.int32),
        jnp.zeros((batch_size,), jnp.bool_),
    )
    _, _, tokens, _, _ = jax.lax.while_loop(cond, body, state)
    return tokens
