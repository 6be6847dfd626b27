"""Joint CTC/attention decoding: prefix probabilities against brute-force enumeration."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_t5_config

from slt.models import ctc, decoding
from slt.models.model import EncoderDecoderModel
from slt.models.network import Transformer

EOS = 1


def collapse(path):
    out, prev = [], None
    for token in path:
        if token != prev and token != ctc.BLANK_ID:
            out.append(token)
        prev = token
    return tuple(out)


def brute_force(log_probs: np.ndarray, length: int):
    """{labelling: probability} over every path of the first `length` frames."""
    probs = np.exp(log_probs[:length])
    table = {}
    for path in itertools.product(range(probs.shape[1]), repeat=length):
        p = np.prod([probs[t, k] for t, k in enumerate(path)])
        table[collapse(path)] = table.get(collapse(path), 0.0) + p
    return table


def prefix_prob(table, prefix):
    return sum(p for seq, p in table.items() if seq[: len(prefix)] == tuple(prefix))


extend = jax.jit(ctc.extend, static_argnums=3)


def advance(state, log_probs, token):
    log_prefix, r_nonblank, r_blank = extend(state, log_probs, jnp.array([[token]]), EOS)
    return {
        "r_nonblank": r_nonblank[:, 0],
        "r_blank": r_blank[:, 0],
        "last": jnp.array([token]),
        "log_prefix": log_prefix[:, 0],
    }


@pytest.mark.parametrize("real_frames", [5, 3])
def test_prefix_scores_match_enumeration(real_frames):
    rs = np.random.RandomState(real_frames)
    logits = jnp.asarray(rs.randn(1, 5, 4).astype(np.float32))
    mask = jnp.asarray((np.arange(5) < real_frames)[None].astype(np.int32))
    log_probs = ctc.frame_log_probs(logits, mask)
    table = brute_force(np.asarray(jax.nn.log_softmax(logits[0])), real_frames)
    for prefix in ([], [2], [2, 2], [2, 3, 2]):
        state = ctc.initial_state(log_probs)
        for token in prefix:
            state = advance(state, log_probs, token)
        np.testing.assert_allclose(
            np.exp(float(state["log_prefix"][0])),
            prefix_prob(table, prefix) if prefix else 1.0,
            rtol=1e-4,
        )
        candidates = jnp.array([[2, 3, EOS, ctc.BLANK_ID]])
        scores = np.exp(np.asarray(extend(state, log_probs, candidates, EOS)[0][0]))
        np.testing.assert_allclose(
            scores[:2],
            [prefix_prob(table, prefix + [2]), prefix_prob(table, prefix + [3])],
            rtol=1e-4,
        )
        # EOS: exactly the prefix and nothing more.
        np.testing.assert_allclose(scores[2], table.get(tuple(prefix), 0.0), rtol=1e-4, atol=1e-12)
        assert scores[3] == 0.0  # the blank is never an output


TINY = tiny_t5_config(vocab_size=12, encoder_ctc_head=True)


def batch(cfg, b=3, p=3, t=8, d=6, seed=0):
    """b rows of p prompt tokens, t frames (row 1 has 5 real ones) and d decoder positions."""
    rs = np.random.RandomState(seed)
    mask = np.ones((b, t), np.int32)
    mask[1, 5:] = 0
    return {
        "encoder_input_tokens": jnp.asarray(rs.randint(2, cfg.vocab_size, (b, p)), jnp.int32),
        "encoder_landmarks": jnp.asarray(rs.randn(b, t, 255), jnp.float32),
        "encoder_landmark_mask": jnp.asarray(mask),
        "decoder_input_tokens": jnp.zeros((b, d), jnp.int32),
        "decoder_target_tokens": jnp.zeros((b, d), jnp.int32),
    }


@pytest.mark.slow  # about 50 s of compiles; joint beam search stays in the default run
def test_joint_greedy_limits():
    inputs = batch(TINY)
    model = EncoderDecoderModel(Transformer(TINY))
    params = model.init_params(jax.random.PRNGKey(1), inputs)
    # Sharpen the CTC head so that CTC alone has a clear opinion.
    params = dict(params, encoder_ctc={"kernel": params["encoder_ctc"]["kernel"] * 40.0})
    greedy = jax.jit(model.predict_batch)(params, inputs)

    def joint(weight, candidates=TINY.vocab_size):
        config = decoding.DecodingConfig(ctc_weight=weight, ctc_candidates=candidates)
        return jax.jit(
            EncoderDecoderModel(Transformer(TINY), decoding_config=config).predict_batch
        )(params, inputs)

    # Weight 0: exactly attention greedy, and the same attention log-probabilities.
    encoded, mask = model.encode(params, inputs)
    log_probs = ctc.frame_log_probs(
        model.network.apply({"params": params}, encoded, 3, method=Transformer.encoder_ctc_logits),
        inputs["encoder_landmark_mask"],
    )
    tokens, att_scores = ctc.joint_greedy_search(
        model._step_fn(params, encoded, mask, 6),
        model.init_cache(params, encoded, mask, 6),
        log_probs,
        6,
        ctc_weight=0.0,
    )
    want_tokens, want_scores = jax.jit(model.predict_batch_with_aux)(params, inputs)
    np.testing.assert_array_equal(tokens, want_tokens)
    np.testing.assert_allclose(att_scores, want_scores["scores"], rtol=1e-5)
    # CTC rules out outputs with more letters than frames, whatever attention says.
    assert not np.array_equal(joint(1e-3), greedy)
    # Weight 1 with every candidate: the best CTC prefix extension at each step; EOS once
    # "exactly this prefix" beats every extension.
    only_ctc = np.asarray(joint(1.0))
    for i in range(len(only_ctc)):
        state = jax.tree.map(lambda x, i=i: x[i : i + 1], ctc.initial_state(log_probs))
        for token in only_ctc[i]:
            if token == 0:
                break
            scores = extend(state, log_probs[i : i + 1], jnp.arange(TINY.vocab_size)[None], EOS)[0]
            assert int(jnp.argmax(scores[0])) == token
            if token == EOS:
                break
            state = advance(state, log_probs[i : i + 1], int(token))
    assert (only_ctc == EOS).any()  # and some end by choice


def test_joint_decoding_config_errors():
    with pytest.raises(ValueError, match="greedy"):
        decoding.DecodingConfig(method="beam", ctc_weight=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        decoding.DecodingConfig(ctc_weight=1.5)
    plain = dataclasses.replace(TINY, encoder_ctc_head=False)
    inputs = batch(plain)
    model = EncoderDecoderModel(
        Transformer(plain), decoding_config=decoding.DecodingConfig(ctc_weight=0.5)
    )
    params = model.init_params(jax.random.PRNGKey(0), inputs)
    with pytest.raises(ValueError, match="encoder CTC head"):
        model.predict_batch(params, inputs)


def test_joint_decoding_checkpoint_can_beam_search_with_ctc_weight_zero():
    """A model whose saved decoding is joint CTC/attention greedy (as the demo's) refuses
    beam search on its own, and with `ctc_weight=0.0` in the options beam-searches
    exactly as the same network configured for plain decoding."""
    inputs = batch(TINY)
    joint = EncoderDecoderModel(
        Transformer(TINY), decoding_config=decoding.DecodingConfig(ctc_weight=0.7)
    )
    params = joint.init_params(jax.random.PRNGKey(2), inputs)
    with pytest.raises(ValueError, match=r"ctc_weight': 0\.0"):
        joint.predict_batch(params, inputs, decode_method="beam", num_beams=3)
    options = {"decode_method": "beam", "num_beams": 3, "ctc_weight": 0.0}
    tokens, aux = joint.predict_batch_with_aux(params, inputs, **options)
    plain = EncoderDecoderModel(Transformer(TINY))
    want, want_aux = plain.predict_batch_with_aux(params, inputs, decode_method="beam", num_beams=3)
    np.testing.assert_array_equal(tokens, want)
    np.testing.assert_allclose(aux["scores"], want_aux["scores"], rtol=1e-6)
    # And greedy with the override is attention greedy, not joint decoding.
    np.testing.assert_array_equal(
        joint.predict_batch(params, inputs, ctc_weight=0.0), plain.predict_batch(params, inputs)
    )
