"""Tests of beam search and temperature sampling (and their agreement with greedy)."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_t5_config

from slt.models import decoding
from slt.models.decoding import length_penalty
from slt.models.model import EncoderDecoderModel
from slt.models.network import T5Config, Transformer

TINY = tiny_t5_config(vocab_size=24, num_encoder_layers=2, num_decoder_layers=2)
# 4 ids (pad, EOS, two more) so that every output of length <= 3 can be enumerated.
MICRO = tiny_t5_config(vocab_size=4, emb_dim=16, head_dim=8, num_decoder_layers=2, mlp_dim=32)


def make_batch(cfg: T5Config, b: int, d: int, seed: int = 0) -> dict:
    """b rows of 3 prompt tokens and 5 frames (row 0 has 3 real ones); d output positions."""
    rs = np.random.RandomState(seed)
    tokens = rs.randint(2, cfg.vocab_size, (b, 3)).astype(np.int32)
    frame_mask = np.ones((b, 5), np.int32)
    frame_mask[0, 3:] = 0
    return {
        "encoder_input_tokens": jnp.asarray(tokens),
        "encoder_landmarks": jnp.asarray(rs.randn(b, 5, cfg.landmark_dim).astype(np.float32)),
        "encoder_landmark_mask": jnp.asarray(frame_mask),
        "decoder_target_tokens": jnp.zeros((b, d), jnp.int32),
    }


@functools.cache
def model_and_params(cfg: T5Config, seed: int, sharpen: float, eos_shift: float):
    """A random model whose output logits are scaled by ``sharpen`` (peaked, so that
    search matters) and whose EOS logit is raised (so that outputs end early)."""
    model = EncoderDecoderModel(Transformer(cfg))
    batch = make_batch(cfg, 1, 2)
    params = jax.jit(lambda r: model.init_params(r, {k: v.shape for k, v in batch.items()}))(
        jax.random.PRNGKey(seed)
    )
    kernel = np.array(params["decoder"]["logits_dense"]["kernel"]) * sharpen
    kernel[:, decoding.EOS_ID] += eos_shift * kernel.std()
    params["decoder"]["logits_dense"]["kernel"] = jnp.asarray(kernel)
    return model, params


@functools.cache
def _predict(model: EncoderDecoderModel, **options):
    return jax.jit(functools.partial(model.predict_batch_with_aux, **options))


def predict(model, params, batch, **options):
    rng = options.pop("rng", None)
    tokens, aux = _predict(model, **options)(params, batch, rng=rng)
    return np.asarray(tokens), np.asarray(aux["scores"])


@functools.cache
def _jitted(model: EncoderDecoderModel, method: str):
    return jax.jit(getattr(model, method))


def teacher_forced_log_prob(model, params, batch, tokens: np.ndarray) -> np.ndarray:
    """Sum of log p of ``tokens [B, L]`` (up to and including the first EOS)."""
    inputs = np.concatenate([np.zeros_like(tokens[:, :1]), tokens[:, :-1]], axis=1)
    teacher = dict(
        batch,
        decoder_input_tokens=jnp.asarray(inputs),
        decoder_target_tokens=jnp.asarray(tokens),
        decoder_loss_weights=jnp.asarray(output_mask(tokens), jnp.float32),
    )
    return np.asarray(_jitted(model, "score_batch")(params, teacher))


def output_mask(tokens: np.ndarray) -> np.ndarray:
    """1 up to and including the first EOS, else the whole row."""
    after_eos = np.cumsum(tokens == decoding.EOS_ID, axis=-1) - (tokens == decoding.EOS_ID)
    return (after_eos == 0).astype(np.float32)


def lengths(tokens: np.ndarray) -> np.ndarray:
    return output_mask(tokens).sum(-1)


# ----------------------------------------------------------------------- synthetic steps


def trap_step(token, cache):
    """A step function (a function of the fed token only) where greedy is wrong.
    From BOS: id 2 (p .6) or id 3 (p .4). After 2, ten continuations of p .1 each (EOS
    among them); after 3, EOS with p .9. Greedy: 2, EOS (p .06); best: 3, EOS (p .36)."""
    vocab = 12
    from_bos = jnp.log(jnp.array([1e-9, 1e-9, 0.6, 0.4] + [1e-9] * (vocab - 4)))
    after_2 = jnp.log(jnp.array([1e-9] + [0.1] * 10 + [1e-9]))
    after_3 = jnp.log(jnp.array([1e-9, 0.9] + [0.1 / (vocab - 2)] * (vocab - 2)))
    logits = jnp.where(
        (token == 0)[:, None], from_bos, jnp.where((token == 2)[:, None], after_2, after_3)
    )
    return logits, cache


def test_beam_search_escapes_the_greedy_trap():
    batch, beams = 3, 2
    greedy = decoding.greedy_search(trap_step, {}, batch, 4)
    np.testing.assert_array_equal(np.asarray(greedy), [[2, 1, 0, 0]] * batch)
    seqs, scores = jax.jit(
        lambda: decoding.beam_search(trap_step, {}, batch, beams, 4, alpha=0.0)
    )()
    seqs, scores = np.asarray(seqs), np.asarray(scores)
    assert seqs.shape == (batch, beams, 4) and scores.shape == (batch, beams)
    np.testing.assert_array_equal(seqs[:, 0], [[3, 1, 0, 0]] * batch)
    np.testing.assert_allclose(scores[:, 0], np.log(0.4 * 0.9), rtol=1e-5)
    np.testing.assert_array_equal(seqs[:, 1], [[2, 1, 0, 0]] * batch)
    np.testing.assert_allclose(scores[:, 1], np.log(0.6 * 0.1), rtol=1e-5)


def test_sampling_frequencies_follow_temperature_and_top_k():
    probs = np.array([0.0, 0.12, 0.5, 0.3, 0.08])  # id 1 is EOS: every sample ends at once
    log_probs = jnp.log(jnp.asarray(probs) + 1e-30)

    def step(token, cache):
        return jnp.broadcast_to(log_probs, (token.shape[0], 5)), cache

    n = 10000
    for temperature, top_k in ((1.0, 0), (2.0, 0), (1.0, 2), (0.5, 3)):
        tokens, log_p = decoding.temperature_sample(
            step, {}, n, 1, jax.random.PRNGKey(7), temperature=temperature, top_k=top_k
        )
        want = np.where(probs > 0, probs ** (1 / temperature), 0.0)
        if top_k:
            want[np.argsort(-want)[top_k:]] = 0.0
        want /= want.sum()
        freq = np.bincount(np.asarray(tokens)[:, 0], minlength=5) / n
        np.testing.assert_allclose(freq, want, atol=0.02)
        # The reported score is the model's log p (temperature 1) of the drawn token.
        np.testing.assert_allclose(
            np.asarray(log_p), np.log(probs[np.asarray(tokens)[:, 0]]), rtol=1e-5
        )


def test_decoding_config_rejects_bad_values():
    with pytest.raises(ValueError, match="method"):
        decoding.DecodingConfig(method="nucleus")
    with pytest.raises(ValueError, match="num_beams"):
        decoding.DecodingConfig(num_beams=0)
    with pytest.raises(ValueError, match="temperature"):
        decoding.DecodingConfig(temperature=-1.0)


# ------------------------------------------------------------------------ on a network


@pytest.mark.slow  # ~17 s on 2 cores; the exhaustive-search test covers beam correctness
def test_one_beam_follows_the_greedy_path():
    """One beam without length penalty walks greedy's path; like t5x's beam search it
    also keeps each EOS it meets among the 2 best next tokens. So it returns the most
    probable of greedy's output and "greedy's first n tokens, then EOS" for each step n
    where EOS ranked second, and equals greedy whenever greedy's output wins."""
    model, params = model_and_params(TINY, 1, 8.0, 1.5)
    batch = make_batch(TINY, 6, 8, seed=1)
    greedy, greedy_scores = predict(model, params, batch)
    np.testing.assert_allclose(
        greedy_scores, teacher_forced_log_prob(model, params, batch, greedy), rtol=1e-4
    )
    beam, beam_scores = predict(model, params, batch, decode_method="beam", num_beams=1, alpha=0.0)
    inputs = np.concatenate([np.zeros_like(greedy[:, :1]), greedy[:, :-1]], axis=1)
    teacher = dict(
        batch, decoder_input_tokens=jnp.asarray(inputs), decoder_target_tokens=jnp.asarray(greedy)
    )
    logits = np.asarray(_jitted(model, "_logits")(params, teacher, None))
    eos_rank = (logits > logits[..., 1:2]).sum(-1)  # [B, L]: 0 = EOS is the argmax
    same = 0
    for b in range(len(greedy)):
        n_tokens = int(lengths(greedy[b : b + 1])[0])
        candidates = [greedy[b]] + [
            np.concatenate([greedy[b, :n], [1], np.zeros(7 - n)])
            for n in range(n_tokens)
            if eos_rank[b, n] == 1
        ]
        candidates = np.asarray(candidates + [candidates[0]] * (9 - len(candidates)), np.int32)
        single = {k: jnp.repeat(v[b : b + 1], len(candidates), axis=0) for k, v in batch.items()}
        log_p = teacher_forced_log_prob(model, params, single, candidates)
        np.testing.assert_array_equal(beam[b], candidates[np.argmax(log_p)])
        np.testing.assert_allclose(beam_scores[b], log_p.max(), rtol=1e-4)
        same += int(np.argmax(log_p) == 0 and n_tokens > 1)
    assert same >= 3, "too few examples where one beam reproduces a multi-token greedy output"


def test_beam_search_scores_at_least_greedy_and_its_cache_is_consistent():
    model, params = model_and_params(TINY, 1, 8.0, 1.5)
    batch = make_batch(TINY, 6, 8, seed=3)
    alpha = 0.6
    greedy, _ = predict(model, params, batch)
    greedy_score = teacher_forced_log_prob(model, params, batch, greedy) / length_penalty(
        lengths(greedy), alpha
    )
    beams, scores = predict(
        model, params, batch, decode_method="beam", num_beams=4, alpha=alpha, return_all_beams=True
    )
    assert beams.shape == (6, 4, 8) and scores.shape == (6, 4)
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "beams are not sorted best first"
    assert (scores[:, 0] >= greedy_score - 1e-5).all(), (scores[:, 0], greedy_score)
    assert (scores[:, 0] > greedy_score + 1e-3).any(), "search never beat greedy here"
    # Every returned beam's score is its teacher-forced log p over the length penalty:
    # this fails if the per-beam KV cache is not reordered with its beam.
    for k in range(4):
        recomputed = teacher_forced_log_prob(model, params, batch, beams[:, k]) / length_penalty(
            lengths(beams[:, k]), alpha
        )
        np.testing.assert_allclose(scores[:, k], recomputed, rtol=1e-4, atol=1e-5)
        for row in beams[:, k]:
            if decoding.EOS_ID in row:
                assert (row[list(row).index(decoding.EOS_ID) + 1 :] == 0).all()
    best, best_scores = predict(
        model, params, batch, decode_method="beam", num_beams=4, alpha=alpha
    )
    np.testing.assert_array_equal(best, beams[:, 0])


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_equals_exhaustive_search(alpha):
    """With 4 ids and length 3 there are 40 outputs; 9 beams hold every live prefix, so
    the 9 finished beams must be exactly the 9 best outputs by length-penalised score."""
    model, params = model_and_params(MICRO, 2, 3.0, 0.5)
    length, beams = 3, 9
    batch = make_batch(MICRO, 2, length, seed=3)
    outputs = []  # every sequence ending at its first EOS, or truncated at `length`
    for n in range(1, length + 1):
        for prefix in itertools.product([0, 2, 3], repeat=n - 1):
            outputs.append(list(prefix) + [1] + [0] * (length - n))
    outputs += [list(p) for p in itertools.product([0, 2, 3], repeat=length)]
    assert len(outputs) == 40
    outputs = np.asarray(outputs, np.int32)
    seqs, scores = predict(
        model,
        params,
        batch,
        decode_method="beam",
        num_beams=beams,
        alpha=alpha,
        return_all_beams=True,
    )
    for b in range(2):
        single = {k: jnp.repeat(v[b : b + 1], len(outputs), axis=0) for k, v in batch.items()}
        exhaustive = teacher_forced_log_prob(model, params, single, outputs) / length_penalty(
            lengths(outputs), alpha
        )
        order = np.argsort(-exhaustive)[:beams]
        np.testing.assert_array_equal(seqs[b], outputs[order])
        np.testing.assert_allclose(scores[b], exhaustive[order], rtol=1e-4, atol=1e-5)


def test_sampling_near_zero_temperature_is_greedy_and_rng_determines_samples():
    model, params = model_and_params(TINY, 1, 8.0, 1.5)
    batch = make_batch(TINY, 6, 8, seed=4)
    greedy, greedy_scores = predict(model, params, batch)
    rng = jax.random.PRNGKey(0)
    for temperature in (0.0, 1e-6):
        cold, cold_scores = predict(
            model, params, batch, decode_method="sample", temperature=temperature, rng=rng
        )
        np.testing.assert_array_equal(cold, greedy)
        np.testing.assert_allclose(cold_scores, greedy_scores, rtol=1e-5)
    top1, _ = predict(model, params, batch, decode_method="sample", top_k=1, rng=rng)
    np.testing.assert_array_equal(top1, greedy)

    first, first_scores = predict(
        model, params, batch, decode_method="sample", temperature=4.0, rng=rng
    )
    again, _ = predict(model, params, batch, decode_method="sample", temperature=4.0, rng=rng)
    np.testing.assert_array_equal(first, again)
    other, _ = predict(
        model, params, batch, decode_method="sample", temperature=4.0, rng=jax.random.PRNGKey(1)
    )
    assert (first != other).any()
    assert (first != greedy).any()
    np.testing.assert_allclose(
        first_scores, teacher_forced_log_prob(model, params, batch, first), rtol=1e-4
    )
