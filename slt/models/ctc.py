"""Joint CTC/attention decoding (Watanabe et al. 2017, "Hybrid CTC/Attention").

With an encoder CTC head (``T5Config.encoder_ctc_head``) the decoder's next-token choice
can be rescored by the CTC prefix probability of the extended prefix:

    score(g + c) = ctc_weight * log p_ctc(g + c ...) + (1 - ctc_weight) * log p_att(g + c)

CTC knows which letters the frames hold and how many; the attention decoder knows the
language. Alone, attention decoders that have seen little data loop on repeated letters
or drop one of a double letter; the CTC prefix term makes such hypotheses improbable.

Prefix probabilities follow the forward recursion over frames in log space. Per sequence
the state is ``r_nonblank [T]`` and ``r_blank [T]`` (log-probability that the prefix has
been emitted by frame t, ending in a label / in blank), the last label, and
``log_prefix`` (log p_ctc of the prefix followed by anything). Only the ``num_candidates``
best next tokens of the attention decoder are scored, so the cost is independent of the
vocabulary size (mT5's 250k entries included). Padded frames act as certain blanks,
which leaves every prefix probability unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from slt.models import decoding

Array = jax.Array
BLANK_ID = 0  # CTC blank = the pad id, never a real label
_NEG = -1.0e10  # log 0 that stays finite under additions


def frame_log_probs(ctc_logits: Array, frame_mask: Array) -> Array:
    """float32 log-softmax ``[B, T, V]``; padded frames become a certain blank."""
    log_probs = jax.nn.log_softmax(ctc_logits.astype(jnp.float32), axis=-1)
    blank_only = jnp.full_like(log_probs, _NEG).at[..., BLANK_ID].set(0.0)
    return jnp.where((frame_mask > 0)[..., None], log_probs, blank_only)


def initial_state(log_probs: Array) -> dict[str, Array]:
    """State of the empty prefix (``last = -1``): only blanks so far."""
    batch = log_probs.shape[0]
    return {
        "r_nonblank": jnp.full(log_probs.shape[:2], _NEG, jnp.float32),
        "r_blank": jnp.cumsum(log_probs[..., BLANK_ID], axis=1),
        "last": jnp.full((batch,), -1, jnp.int32),
        "log_prefix": jnp.zeros((batch,), jnp.float32),
    }


def extend(
    state: dict[str, Array], log_probs: Array, candidates: Array, eos_id: int
) -> tuple[Array, Array, Array]:
    """Prefix scores of ``prefix + c`` for ``candidates [B, K]``.

    Returns ``log_prefix [B, K]`` (for EOS: log p_ctc of exactly the prefix; for the
    blank id: log 0) and the candidates' ``r_nonblank``, ``r_blank``, each ``[B, K, T]``.
    """
    emit = jnp.take_along_axis(log_probs, candidates[:, None, :], axis=2)  # [B, T, K]
    emit = jnp.moveaxis(emit, 1, 0)  # [T, B, K]
    blank = jnp.moveaxis(log_probs[..., BLANK_ID], 1, 0)[..., None]  # [T, B, 1]
    r_nonblank = jnp.moveaxis(state["r_nonblank"], 1, 0)[..., None]  # [T, B, 1]
    r_blank = jnp.moveaxis(state["r_blank"], 1, 0)[..., None]
    # Mass of the old prefix that may be followed by c at the next frame: a repeated label
    # needs a blank in between.
    same = (candidates == state["last"][:, None])[None]
    phi = jnp.logaddexp(r_blank, jnp.where(same, _NEG, r_nonblank))  # [T, B, K]

    empty = (state["last"] < 0)[:, None]  # only the empty prefix may start at frame 0
    first_nonblank = jnp.where(empty, emit[0], _NEG)
    first = (first_nonblank, jnp.full_like(first_nonblank, _NEG))

    def step(carry, inputs):
        prev_nonblank, prev_blank = carry
        phi_prev, emit_t, blank_t = inputs
        new_nonblank = jnp.logaddexp(prev_nonblank, phi_prev) + emit_t
        new_blank = jnp.logaddexp(prev_blank, prev_nonblank) + blank_t
        return (new_nonblank, new_blank), (new_nonblank, new_blank, phi_prev + emit_t)

    _, (rest_nonblank, rest_blank, starts) = jax.lax.scan(
        step, first, (phi[:-1], emit[1:], blank[1:])
    )
    new_nonblank = jnp.concatenate([first[0][None], rest_nonblank], axis=0)
    new_blank = jnp.concatenate([first[1][None], rest_blank], axis=0)
    # p(prefix + c ...) sums over the frame at which c starts.
    log_prefix = jnp.logaddexp(first_nonblank, jax.nn.logsumexp(starts, axis=0))
    complete = jnp.logaddexp(r_nonblank[-1], r_blank[-1])  # [B, 1]: prefix alone
    log_prefix = jnp.where(candidates == eos_id, complete, log_prefix)
    log_prefix = jnp.where(candidates == BLANK_ID, _NEG, log_prefix)
    return log_prefix, jnp.moveaxis(new_nonblank, 0, 2), jnp.moveaxis(new_blank, 0, 2)


def joint_greedy_search(
    tokens_to_logits: Callable[[Array, Any], tuple[Array, Any]],
    cache: Any,
    ctc_log_probs: Array,
    max_decode_length: int,
    ctc_weight: float = 0.3,
    num_candidates: int = 8,
    eos_id: int = decoding.EOS_ID,
    bos_id: int = decoding.PAD_ID,
) -> tuple[Array, Array]:
    """Greedy decoding on ``ctc_weight * CTC prefix + (1 - ctc_weight) * attention``.

    ``ctc_log_probs [B, T, V]`` from ``frame_log_probs``. Returns int32 tokens ``[B, L]``
    (EOS kept, 0 after it), like ``decoding.greedy_search``, and the attention decoder's
    log-probability of them ``[B]``.
    """
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight={ctc_weight} must lie in [0, 1].")
    batch = ctc_log_probs.shape[0]
    num_candidates = min(num_candidates, ctc_log_probs.shape[-1])

    def cond(carry: tuple) -> Array:
        i, _, _, _, done, _, _ = carry
        return (i < max_decode_length) & ~jnp.all(done)

    def body(carry: tuple) -> tuple:
        i, cache, tokens, current, done, ctc_state, att_log_prob = carry
        logits, cache = tokens_to_logits(current, cache)
        att = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        att_top, candidates = jax.lax.top_k(att, num_candidates)  # [B, K]
        log_prefix, r_nonblank, r_blank = extend(ctc_state, ctc_log_probs, candidates, eos_id)
        score = (
            ctc_weight * (log_prefix - ctc_state["log_prefix"][:, None])
            + (1.0 - ctc_weight) * att_top
        )
        pick = jnp.argmax(score, axis=-1)
        take = lambda x: jnp.take_along_axis(x, pick[:, None], axis=1)[:, 0]
        nxt = jnp.where(done, decoding.PAD_ID, take(candidates))
        att_log_prob = att_log_prob + jnp.where(done, 0.0, take(att_top))
        take_t = lambda x: jnp.take_along_axis(x, pick[:, None, None], axis=1)[:, 0]
        ctc_state = {
            "r_nonblank": take_t(r_nonblank),
            "r_blank": take_t(r_blank),
            "last": nxt,
            "log_prefix": take(log_prefix),
        }
        tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, i))
        return i + 1, cache, tokens, nxt, done | (nxt == eos_id), ctc_state, att_log_prob

    carry = (
        jnp.array(0, jnp.int32),
        cache,
        jnp.zeros((batch, max_decode_length), jnp.int32),
        jnp.full((batch,), bos_id, jnp.int32),
        jnp.zeros((batch,), jnp.bool_),
        initial_state(ctc_log_probs),
        jnp.zeros((batch,), jnp.float32),
    )
    carry = jax.lax.while_loop(cond, body, carry)
    return carry[2], carry[6]
