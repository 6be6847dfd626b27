"""Decode loops over a cached one-token step function (jit-compatible, batched).

``tokens_to_logits(token [N], cache) -> (logits [N, V], cache)`` runs one cached decoder
step; the cache is any pytree (the flax 'cache' collection in our model) whose arrays
with a leading dimension ``N`` are per sequence. Every loop is a ``lax.while_loop`` that
stops as soon as no sequence can change any more, so short outputs cost few steps.

Output convention of all loops: int32 tokens ``[..., max_decode_length]``, each sequence
keeps its EOS and is all 0 (pad) after it.

* ``greedy_search``: argmax at every step.
* ``temperature_sample``: samples from ``softmax(logits / temperature)``, optionally
  restricted to the ``top_k`` most likely tokens; ``temperature=0`` is greedy.
* ``beam_search``: keeps ``num_beams`` live prefixes per example and the ``num_beams``
  best finished sequences, ranked by ``log p / length_penalty(length, alpha)`` with
  t5x's ``((5 + length) / 6) ** alpha``; ``length`` counts the EOS. A sequence that
  reaches ``max_decode_length`` without EOS is finished there, truncated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Cache = Any
StepFn = Callable[[Array, Cache], tuple[Array, Cache]]

EOS_ID = 1
PAD_ID = 0
# Finite "minus infinity" for beam bookkeeping: sums of a few stay finite (no NaN).
NEG_INF = -1.0e7
DECODE_METHODS = ("greedy", "beam", "sample")


@dataclasses.dataclass(frozen=True)
class DecodingConfig:
    """How ``EncoderDecoderModel.predict_batch`` decodes (bindable from gin).

    ``method``: ``"greedy"``, ``"beam"`` (``num_beams``, length penalty ``alpha``) or
    ``"sample"`` (``temperature``, ``top_k``; 0 = whole vocabulary; the random key comes
    from the call's ``rng``, else ``PRNGKey(seed)``).
    """

    method: str = "greedy"
    num_beams: int = 4
    alpha: float = 0.6
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    # Joint CTC/attention greedy decoding (slt/models/ctc.py) when > 0; needs a network
    # with an encoder CTC head. `ctc_candidates`: attention's top tokens rescored per step.
    ctc_weight: float = 0.0
    ctc_candidates: int = 8

    def __post_init__(self) -> None:
        if self.method not in DECODE_METHODS:
            raise ValueError(f"DecodingConfig.method={self.method!r}: use one of {DECODE_METHODS}.")
        if self.num_beams < 1:
            raise ValueError(f"DecodingConfig.num_beams={self.num_beams}: must be >= 1.")
        if self.temperature < 0:
            raise ValueError(f"DecodingConfig.temperature={self.temperature}: must be >= 0.")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"DecodingConfig.ctc_weight={self.ctc_weight}: must lie in [0, 1].")
        if self.ctc_weight > 0 and self.method != "greedy":
            raise ValueError(
                f"DecodingConfig.ctc_weight={self.ctc_weight} works with "
                f"method='greedy' only (got {self.method!r}); set ctc_weight=0.0 with "
                "it (in decode options: {'ctc_weight': 0.0})."
            )
        if self.top_k < 0:
            raise ValueError(f"DecodingConfig.top_k={self.top_k}: must be >= 0 (0 = off).")


def length_penalty(length: Array | int, alpha: float) -> Array:
    """t5x's brevity penalty ``((5 + length) / 6) ** alpha`` (1 for ``alpha=0``)."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


# ------------------------------------------------------------------ greedy and sampling


def _sequential_decode(
    tokens_to_logits: StepFn,
    cache: Cache,
    batch_size: int,
    max_decode_length: int,
    choose: Callable[[Array, Array], Array],
    eos_id: int,
    bos_id: int,
) -> tuple[Array, Array]:
    """One token per sequence and step, ``choose(logits [B, V], step) -> [B]``.

    Returns tokens ``[B, L]`` and the sum of the model's log-probabilities (temperature
    1) of the chosen tokens up to and including EOS, ``[B]``.
    """

    def cond(state: tuple) -> Array:
        i, _, _, _, done, _ = state
        return (i < max_decode_length) & ~jnp.all(done)

    def body(state: tuple) -> tuple:
        i, cache, tokens, current, done, log_prob = state
        logits, cache = tokens_to_logits(current, cache)
        logits = logits.astype(jnp.float32)
        nxt = choose(logits, i).astype(jnp.int32)
        token_log_prob = jnp.take_along_axis(
            jax.nn.log_softmax(logits, axis=-1), nxt[:, None], axis=-1
        )[:, 0]
        log_prob = log_prob + jnp.where(done, 0.0, token_log_prob)
        nxt = jnp.where(done, PAD_ID, nxt)
        tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, i))
        done = done | (nxt == eos_id)
        return i + 1, cache, tokens, nxt, done, log_prob

    state = (
        jnp.array(0, jnp.int32),
        cache,
        jnp.zeros((batch_size, max_decode_length), jnp.int32),
        jnp.full((batch_size,), bos_id, jnp.int32),
        jnp.zeros((batch_size,), jnp.bool_),
        jnp.zeros((batch_size,), jnp.float32),
    )
    _, _, tokens, _, _, log_prob = jax.lax.while_loop(cond, body, state)
    return tokens, log_prob


def greedy_search(
    tokens_to_logits: StepFn,
    cache: Cache,
    batch_size: int,
    max_decode_length: int,
    eos_id: int = EOS_ID,
    bos_id: int = PAD_ID,
    return_log_probs: bool = False,
) -> Array | tuple[Array, Array]:
    """Greedy decoding: int32 ``[B, max_decode_length]`` (and ``[B]`` sequence
    log-probabilities with ``return_log_probs``)."""
    tokens, log_prob = _sequential_decode(
        tokens_to_logits,
        cache,
        batch_size,
        max_decode_length,
        lambda logits, i: jnp.argmax(logits, axis=-1),
        eos_id,
        bos_id,
    )
    return (tokens, log_prob) if return_log_probs else tokens


def temperature_sample(
    tokens_to_logits: StepFn,
    cache: Cache,
    batch_size: int,
    max_decode_length: int,
    rng: Array,
    temperature: float = 1.0,
    top_k: int = 0,
    eos_id: int = EOS_ID,
    bos_id: int = PAD_ID,
) -> tuple[Array, Array]:
    """Ancestral sampling: tokens ``[B, L]`` and their model log-probabilities ``[B]``.

    Step ``i`` draws with ``fold_in(rng, i)``, so the result is a function of ``rng``.
    ``temperature=0`` takes the argmax (greedy); ``top_k > 0`` samples among the ``top_k``
    largest logits only.
    """
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0.")

    def choose(logits: Array, i: Array) -> Array:
        if temperature == 0.0:
            return jnp.argmax(logits, axis=-1)
        if top_k > 0:
            kth_largest = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][:, -1:]
            logits = jnp.where(logits >= kth_largest, logits, -jnp.inf)
        return jax.random.categorical(jax.random.fold_in(rng, i), logits / temperature, axis=-1)

    return _sequential_decode(
        tokens_to_logits, cache, batch_size, max_decode_length, choose, eos_id, bos_id
    )


# ------------------------------------------------------------------------ beam search


def expand_to_beams(x: Array, num_beams: int) -> Array:
    """``[B, ...] -> [B * num_beams, ...]``, each example repeated for its beams."""
    return jnp.repeat(x, num_beams, axis=0)


def _gather_beams(x: Array, beam_indices: Array, batch_size: int, old_beams: int) -> Array:
    """``x [B * old_beams, ...]`` -> ``[B * new_beams, ...]`` picking ``beam_indices
    [B, new_beams]`` within each example."""
    x = x.reshape((batch_size, old_beams) + x.shape[1:])
    idx = beam_indices.reshape(beam_indices.shape + (1,) * (x.ndim - 2))
    x = jnp.take_along_axis(x, idx, axis=1)
    return x.reshape((-1,) + x.shape[2:])


def _gather_cache(
    cache: Cache,
    beam_indices: Array,
    batch_size: int,
    num_beams: int,
    gather_leaf: Callable[[tuple], bool] | None,
) -> Cache:
    flat = batch_size * num_beams

    def gather(path: tuple, x: Array) -> Array:
        if getattr(x, "ndim", 0) == 0 or x.shape[0] != flat:
            return x  # shared state such as the cache index
        if gather_leaf is not None and not gather_leaf(path):
            return x  # identical for all beams of an example (cross-attention keys)
        return _gather_beams(x, beam_indices, batch_size, num_beams)

    return jax.tree_util.tree_map_with_path(gather, cache)


def beam_search(
    tokens_to_logits: StepFn,
    cache: Cache,
    batch_size: int,
    num_beams: int,
    max_decode_length: int,
    alpha: float = 0.6,
    eos_id: int = EOS_ID,
    bos_id: int = PAD_ID,
    gather_cache_leaf: Callable[[tuple], bool] | None = None,
) -> tuple[Array, Array]:
    """Beam search. ``cache`` must already hold ``batch_size * num_beams`` rows, example
    ``b``'s beams at rows ``b*K .. b*K+K-1`` (see ``expand_to_beams``).

    ``gather_cache_leaf(path) -> bool`` may exempt cache leaves that are the same for
    every beam of an example from the per-step reordering (a pure saving).

    Returns ``(sequences [B, K, L], scores [B, K])``, best first; scores are
    ``log p / length_penalty(length, alpha)``.
    """
    batch, beams, length = batch_size, num_beams, max_decode_length
    candidates = 2 * beams  # enough that `beams` live ones remain even if `beams` end now
    max_penalty = jnp.maximum(length_penalty(1, alpha), length_penalty(length, alpha))

    def cond(state: dict) -> Array:
        # Stop when no live prefix can beat the worst finished sequence of its example:
        # log p only falls as a prefix grows, so log p / max penalty bounds its future.
        best_live = state["live_log_probs"][:, 0] / max_penalty
        worst_finished = jnp.where(state["finished_flags"], state["finished_scores"], NEG_INF).min(
            axis=1
        )
        all_full = state["finished_flags"].all(axis=1)
        done = all_full & (worst_finished >= best_live)
        return (state["i"] < length) & ~jnp.all(done)

    def body(state: dict) -> dict:
        i = state["i"]
        logits, cache = tokens_to_logits(state["live_last"].reshape(-1), state["cache"])
        vocab = logits.shape[-1]
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        log_probs = log_probs.reshape(batch, beams, vocab) + state["live_log_probs"][..., None]
        cand_log_probs, flat_index = jax.lax.top_k(log_probs.reshape(batch, -1), candidates)
        cand_beam = flat_index // vocab  # [B, 2K] parent beam
        cand_token = (flat_index % vocab).astype(jnp.int32)
        cand_seqs = jnp.take_along_axis(state["live_seqs"], cand_beam[..., None], axis=1)
        cand_seqs = jax.lax.dynamic_update_slice(cand_seqs, cand_token[..., None], (0, 0, i))
        real = cand_log_probs > NEG_INF / 2  # not descended from an empty initial beam
        ends = cand_token == eos_id

        # Finished: candidates that emit EOS, and at the last step all of them (truncated).
        ending = real & (ends | (i == length - 1))
        cand_scores = jnp.where(ending, cand_log_probs / length_penalty(i + 1, alpha), NEG_INF)
        all_scores = jnp.concatenate([state["finished_scores"], cand_scores], axis=1)
        all_flags = jnp.concatenate([state["finished_flags"], ending], axis=1)
        all_seqs = jnp.concatenate([state["finished_seqs"], cand_seqs], axis=1)
        finished_scores, keep = jax.lax.top_k(all_scores, beams)
        finished_flags = jnp.take_along_axis(all_flags, keep, axis=1)
        finished_seqs = jnp.take_along_axis(all_seqs, keep[..., None], axis=1)

        # Live: the best candidates that did not end.
        live_scores = jnp.where(ends, NEG_INF, cand_log_probs)
        live_log_probs, keep = jax.lax.top_k(live_scores, beams)
        live_seqs = jnp.take_along_axis(cand_seqs, keep[..., None], axis=1)
        live_last = jnp.take_along_axis(cand_token, keep, axis=1)
        parent = jnp.take_along_axis(cand_beam, keep, axis=1)
        cache = _gather_cache(cache, parent, batch, beams, gather_cache_leaf)
        return dict(
            i=i + 1,
            cache=cache,
            live_seqs=live_seqs,
            live_log_probs=live_log_probs,
            live_last=live_last,
            finished_seqs=finished_seqs,
            finished_scores=finished_scores,
            finished_flags=finished_flags,
        )

    # Only beam 0 is alive at first, so the first step does not pick K copies of a token.
    initial_log_probs = np.full((batch, beams), NEG_INF, np.float32)
    initial_log_probs[:, 0] = 0.0
    state = dict(
        i=jnp.array(0, jnp.int32),
        cache=cache,
        live_seqs=jnp.zeros((batch, beams, length), jnp.int32),
        live_log_probs=jnp.asarray(initial_log_probs),
        live_last=jnp.full((batch, beams), bos_id, jnp.int32),
        finished_seqs=jnp.zeros((batch, beams, length), jnp.int32),
        finished_scores=jnp.full((batch, beams), NEG_INF, jnp.float32),
        finished_flags=jnp.zeros((batch, beams), jnp.bool_),
    )
    state = jax.lax.while_loop(cond, body, state)
    return state["finished_seqs"], state["finished_scores"]
