"""Tests of the loss, greedy KV-cache decoding, scoring and trainability."""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import tiny_t5_config

from slt.models import decoding
from slt.models.model import EncoderDecoderModel, cross_entropy_with_z_loss, encoder_ctc_loss
from slt.models.network import T5Config, Transformer

TINY = tiny_t5_config(vocab_size=40, num_encoder_layers=2, num_decoder_layers=2)


def make_batch(cfg: T5Config, b=3, p=4, t=6, d=7, seed=0):
    """b rows of p prompt tokens, t frames and d target tokens; row 0 has a padded prompt
    and padded targets, row 1 only t // 2 real frames."""
    rs = np.random.RandomState(seed)
    tokens = rs.randint(2, cfg.vocab_size, (b, p)).astype(np.int32)
    tokens[0, -2:] = 0
    frame_mask = np.ones((b, t), np.int32)
    frame_mask[1, t // 2 :] = 0
    targets = rs.randint(2, cfg.vocab_size, (b, d)).astype(np.int32)
    targets[:, -1] = 1
    targets[0, d // 2 :] = 0  # padded example
    targets[0, d // 2 - 1] = 1
    inputs = np.concatenate([np.zeros((b, 1), np.int32), targets[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": jnp.asarray(tokens),
        "encoder_landmarks": jnp.asarray(rs.randn(b, t, cfg.landmark_dim).astype(np.float32)),
        "encoder_landmark_mask": jnp.asarray(frame_mask),
        "decoder_input_tokens": jnp.asarray(inputs),
        "decoder_target_tokens": jnp.asarray(targets),
        "decoder_loss_weights": jnp.asarray((targets > 0).astype(np.float32)),
    }


@functools.cache
def tiny_model_and_params(seed: int = 0):
    model = EncoderDecoderModel(Transformer(TINY))
    shapes = {k: v.shape for k, v in make_batch(TINY).items()}
    params = jax.jit(lambda r: model.init_params(r, shapes))(jax.random.PRNGKey(seed))
    return model, params


# ----------------------------------------------------------------------------- loss


def numpy_loss(logits, targets, weights, z_loss, ls=0.0):
    logits = logits.astype(np.float64)
    m = logits.max(-1, keepdims=True)
    log_z = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
    log_p = logits - log_z[..., None]
    v = logits.shape[-1]
    ce = np.zeros(targets.shape)
    for idx in np.ndindex(targets.shape):
        if ls == 0.0:
            ce[idx] = -log_p[idx][targets[idx]]
        else:
            q = np.full(v, ls / (v - 1))
            q[targets[idx]] = 1 - ls
            ce[idx] = -(q * log_p[idx]).sum() + (q * np.log(q)).sum()  # KL(q || p)
    return (ce * weights).sum(), (z_loss * log_z**2 * weights).sum()


@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_cross_entropy_with_z_loss_matches_numpy(ls):
    rs = np.random.RandomState(0)
    logits = (rs.randn(3, 5, 11) * 4).astype(np.float32)
    targets = rs.randint(0, 11, (3, 5)).astype(np.int32)
    weights = (rs.rand(3, 5) > 0.3).astype(np.float32)
    ce, zl = numpy_loss(logits, targets, weights, 1e-2, ls)
    n = weights.sum()
    loss, aux = cross_entropy_with_z_loss(
        jnp.asarray(logits),
        jnp.asarray(targets),
        jnp.asarray(weights),
        z_loss=1e-2,
        label_smoothing=ls,
    )
    np.testing.assert_allclose(float(loss), (ce + zl) / n, rtol=1e-5)
    np.testing.assert_allclose(float(aux["cross_entropy"]), ce / n, rtol=1e-5)
    np.testing.assert_allclose(float(aux["z_loss"]), zl / n, rtol=1e-5)
    assert float(aux["num_tokens"]) == n
    acc = ((logits.argmax(-1) == targets) * weights).sum() / n
    np.testing.assert_allclose(float(aux["accuracy"]), acc, rtol=1e-6)
    # An explicit normalising factor replaces the token count (1.0 = T5X's raw sum).
    loss_sum, _ = cross_entropy_with_z_loss(
        jnp.asarray(logits),
        jnp.asarray(targets),
        jnp.asarray(weights),
        z_loss=1e-2,
        label_smoothing=ls,
        loss_normalizing_factor=1.0,
    )
    np.testing.assert_allclose(float(loss_sum), ce + zl, rtol=1e-5)


def test_loss_weights_zero_out_padding():
    rs = np.random.RandomState(1)
    logits = rs.randn(2, 6, 9).astype(np.float32)
    targets = rs.randint(1, 9, (2, 6)).astype(np.int32)
    targets[1, 3:] = 0
    loss, aux = cross_entropy_with_z_loss(jnp.asarray(logits), jnp.asarray(targets))
    assert float(aux["num_tokens"]) == 9  # default weights: targets > 0
    logits[1, 3:] = rs.randn(3, 9) * 100  # garbage at padded positions
    loss2, _ = cross_entropy_with_z_loss(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(float(loss), float(loss2), rtol=1e-6)
    ce, zl = numpy_loss(logits, targets, (targets > 0).astype(np.float64), 1e-4)
    np.testing.assert_allclose(float(loss), (ce + zl) / 9, rtol=1e-5)


def test_model_loss_fn_and_score_batch():
    model, params = tiny_model_and_params()
    batch = make_batch(TINY)
    logits = np.asarray(jax.jit(lambda p, b: model._logits(p, b, None))(params, batch))
    loss, aux = jax.jit(model.loss_fn)(params, batch, None)
    weights = np.asarray(batch["decoder_loss_weights"])
    targets = np.asarray(batch["decoder_target_tokens"])
    ce, zl = numpy_loss(logits, targets, weights, 1e-4)
    np.testing.assert_allclose(float(loss), (ce + zl) / weights.sum(), rtol=1e-4)
    scores = np.asarray(jax.jit(model.score_batch)(params, batch))
    log_p = np.asarray(jax.nn.log_softmax(logits))
    want = [
        (np.take_along_axis(log_p[i], targets[i][:, None], -1)[:, 0] * weights[i]).sum()
        for i in range(len(targets))
    ]
    np.testing.assert_allclose(scores, want, rtol=1e-5)
    np.testing.assert_allclose(-scores.sum() / weights.sum(), ce / weights.sum(), rtol=1e-4)


def test_encoder_ctc_loss_counts_alignments_and_flags_infeasible_examples():
    vocab = 10
    # Uniform logits: P(labels) = (#alignments) / vocab**T, so loss = T log V - log(#).
    logits = jnp.zeros((3, 3, vocab))
    targets = jnp.asarray(
        [
            [5, 6, 1, 0],  # "5 6": 556 566 _56 5_6 56_ -> 5 alignments
            [5, 5, 1, 0],  # "5 5" needs a blank between: 5_5 only
            [5, 5, 1, 0],
        ]
    )  # same, but only 2 real frames: infeasible
    frame_mask = jnp.asarray([[1, 1, 1], [1, 1, 1], [1, 1, 0]])
    losses, feasible = encoder_ctc_loss(logits, frame_mask, targets)
    np.testing.assert_allclose(
        np.asarray(losses), [3 * np.log(vocab) - np.log(5), 3 * np.log(vocab), 0.0], rtol=1e-4
    )
    np.testing.assert_array_equal(np.asarray(feasible), [1.0, 1.0, 0.0])


def test_loss_fn_adds_weighted_encoder_ctc():
    cfg = dataclasses.replace(TINY, encoder_ctc_head=True, landmark_stride=2)
    batch = make_batch(cfg)
    with pytest.raises(ValueError, match="encoder_ctc_head"):
        EncoderDecoderModel(Transformer(TINY), encoder_ctc_weight=0.5)
    plain = EncoderDecoderModel(Transformer(cfg))
    joint = EncoderDecoderModel(Transformer(cfg), encoder_ctc_weight=0.5)
    params = plain.init_params(jax.random.PRNGKey(0), batch)
    assert params["encoder_ctc"]["kernel"].shape == (cfg.emb_dim, cfg.vocab_size)
    assert "encoder_ctc" not in tiny_model_and_params()[1]  # T5X names stay exact without it
    base, _ = plain.loss_fn(params, batch, None)
    loss, aux = joint.loss_fn(params, batch, None)
    _, ctc_logits = plain.network.apply(
        {"params": params},
        **{
            k: batch[k]
            for k in (
                "encoder_input_tokens",
                "encoder_landmarks",
                "encoder_landmark_mask",
                "decoder_input_tokens",
            )
        },
        enable_dropout=False,
        return_encoder_ctc_logits=True,
    )
    assert ctc_logits.shape == (3, 3, cfg.vocab_size)  # 6 frames at stride 2
    assert float(aux["encoder_ctc"]) > 0
    np.testing.assert_allclose(
        float(loss), float(base) + 0.5 * float(aux["encoder_ctc"]), rtol=1e-5
    )


def test_encoder_ctc_loss_leaves_out_examples_without_labels():
    # An MT example under signed-text labels: no frames and no labels adds nothing.
    logits = jnp.zeros((2, 3, 10))
    targets = jnp.asarray([[5, 6, 0], [0, 0, 0]])
    frame_mask = jnp.asarray([[1, 1, 1], [0, 0, 0]])
    losses, feasible = encoder_ctc_loss(logits, frame_mask, targets)
    np.testing.assert_array_equal(np.asarray(feasible), [1.0, 0.0])
    assert float(losses[1]) == 0.0 and float(losses[0]) > 0


def test_ctc_on_signed_text_reads_its_own_labels():
    cfg = dataclasses.replace(TINY, encoder_ctc_head=True, landmark_stride=2)
    batch = make_batch(cfg)
    with pytest.raises(ValueError, match="encoder_ctc_targets='spelling'"):
        EncoderDecoderModel(Transformer(cfg), encoder_ctc_targets="spelling")
    on_targets = EncoderDecoderModel(Transformer(cfg), encoder_ctc_weight=0.5)
    on_signed = EncoderDecoderModel(
        Transformer(cfg), encoder_ctc_weight=0.5, encoder_ctc_targets="signed_text"
    )
    params = on_targets.init_params(jax.random.PRNGKey(0), batch)
    same = {**batch, "encoder_ctc_targets": batch["decoder_target_tokens"]}
    want, want_aux = on_targets.loss_fn(params, batch, None)
    got, got_aux = on_signed.loss_fn(params, same, None)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    # Other labels (one letter per example): another CTC term, the same cross-entropy.
    other = {**batch, "encoder_ctc_targets": jnp.full((3, 7), 5, jnp.int32).at[:, 1:].set(0)}
    loss, aux = on_signed.loss_fn(params, other, None)
    assert abs(float(aux["encoder_ctc"]) - float(want_aux["encoder_ctc"])) > 1e-3
    np.testing.assert_allclose(float(aux["cross_entropy"]), float(want_aux["cross_entropy"]))


# ----------------------------------------------------------------------------- decoding


def greedy_by_full_forward(model, params, batch, length):
    """Reference greedy decoding: re-run the uncached network on the prefix each step."""
    logits_fn = jax.jit(lambda p, b: model._logits(p, b, None))
    b = len(batch["encoder_input_tokens"])
    tokens = np.zeros((b, length), np.int32)
    done = np.zeros(b, bool)
    for i in range(length):
        shifted = np.concatenate([np.zeros((b, 1), np.int32), tokens[:, :-1]], axis=1)
        step = dict(
            batch,
            decoder_input_tokens=jnp.asarray(shifted),
            decoder_target_tokens=jnp.asarray(tokens),
        )
        nxt = np.array(jnp.argmax(logits_fn(params, step)[:, i], -1))
        nxt[done] = 0
        tokens[:, i] = nxt
        done |= nxt == 1
    return tokens


def test_cached_greedy_equals_full_forward_and_stops_at_eos():
    model, params = tiny_model_and_params()
    batch = make_batch(TINY, b=4, d=8, seed=3)
    predict = jax.jit(model.predict_batch)

    # Tilt the EOS logit so that sequences stop at different steps.
    kernel = np.array(params["decoder"]["logits_dense"]["kernel"])
    tilted = None
    for shift in np.linspace(0.0, 3.0, 13):
        k = kernel.copy()
        k[:, 1] += shift * kernel.std()
        trial = jax.tree_util.tree_map(lambda x: x, params)
        trial["decoder"]["logits_dense"]["kernel"] = jnp.asarray(k)
        out = np.asarray(predict(trial, batch))
        first_eos = [list(row).index(1) if 1 in row else None for row in out]
        if len({e for e in first_eos if e is not None} | {None}) >= 3:
            tilted = trial
            break
    assert tilted is not None, "no EOS tilt gave sequences of different lengths"

    for p in (params, tilted):
        cached = np.asarray(predict(p, batch))
        reference = greedy_by_full_forward(model, p, batch, 8)
        np.testing.assert_array_equal(cached, reference)
        assert cached.dtype == np.int32 and cached.shape == (4, 8)
        for row in cached:
            if 1 in row:
                assert (row[list(row).index(1) + 1 :] == 0).all()

    # A dominant EOS ends every sequence at once.
    k = kernel.copy()
    k[:, 1] += 100.0
    forced = jax.tree_util.tree_map(lambda x: x, params)
    forced["decoder"]["logits_dense"]["kernel"] = jnp.asarray(k)
    out = np.asarray(predict(forced, batch))
    np.testing.assert_array_equal(out, np.eye(1, 8, dtype=np.int32).repeat(4, 0))


def test_greedy_loop_stops_when_all_sequences_ended():
    """The while_loop runs max(first EOS)+1 steps, not max_decode_length."""
    eos_step = jnp.array([2, 4, 1])
    calls = []

    def tokens_to_logits(token, cache):
        step = cache["step"]
        jax.debug.callback(lambda s: calls.append(int(s)), step)  # runs every iteration
        ids = jnp.where(step >= eos_step, 1, 3 + (step % 2))
        return jax.nn.one_hot(ids, 5), {"step": step + 1}

    out = jax.jit(lambda: decoding.greedy_search(tokens_to_logits, {"step": jnp.array(0)}, 3, 10))()
    np.testing.assert_array_equal(
        np.asarray(out),
        [
            [3, 4, 1, 0, 0, 0, 0, 0, 0, 0],
            [3, 4, 3, 4, 1, 0, 0, 0, 0, 0],
            [3, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        ],
    )
    assert calls == [0, 1, 2, 3, 4]


def test_kv_cache_layout():
    model, params = tiny_model_and_params()
    batch = make_batch(TINY)
    encoded, mask = jax.jit(model.encode)(params, batch)
    cache = jax.jit(model.init_cache, static_argnums=3)(params, encoded, mask, 9)
    assert int(cache["decoder"]["cache_index"]) == 0
    layer = cache["decoder"]["layers_1"]
    # Keys [b, h, d, len], values [b, h, len, d]: what a step's q @ K and w @ V read.
    assert layer["self_attention"]["cached_key"].shape == (3, 2, 16, 9)
    assert layer["self_attention"]["cached_value"].shape == (3, 2, 9, 16)
    assert not np.asarray(layer["self_attention"]["cached_value"]).any()
    # Cross-attention keys/values are the projected encoder output, computed once.
    cross = layer["encoder_decoder_attention"]
    kernel = params["decoder"]["layers_1"]["encoder_decoder_attention"]
    want_key = (encoded @ kernel["key"]["kernel"]).reshape(3, -1, 2, 16)
    want_value = (encoded @ kernel["value"]["kernel"]).reshape(3, -1, 2, 16)
    np.testing.assert_allclose(
        cross["cached_key"], want_key.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        cross["cached_value"], want_value.transpose(0, 2, 1, 3), rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------- training


def test_tiny_model_overfits_one_batch():
    model, params = tiny_model_and_params(seed=1)
    batch = make_batch(TINY, b=4, d=8, seed=7)
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def train(params, state):
        def step(carry, rng):
            params, state = carry
            (loss, _), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(params, batch, None)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, state), losses = jax.lax.scan(step, (params, state), jnp.arange(100))
        return params, losses

    params, losses = train(params, state)
    losses = np.asarray(losses)
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
    # The memorised targets come back out of greedy decoding.
    pred = np.asarray(jax.jit(model.predict_batch)(params, batch))
    targets = np.asarray(batch["decoder_target_tokens"])
    assert (pred == targets).mean() > 0.9


def test_logical_axes_match_params():
    model, params = tiny_model_and_params()
    axes = model.logical_axes({k: v.shape for k, v in make_batch(TINY).items()})
    P = jax.sharding.PartitionSpec
    is_spec = lambda x: isinstance(x, P)  # noqa: E731
    assert jax.tree_util.tree_structure(axes, is_leaf=is_spec) == jax.tree_util.tree_structure(
        params
    )
    for spec, leaf in zip(
        jax.tree_util.tree_leaves(axes, is_leaf=is_spec), jax.tree_util.tree_leaves(params)
    ):
        assert len(spec) == leaf.ndim
    assert axes["encoder"]["layers_0"]["attention"]["query"]["kernel"] == P("embed", "joined_kv")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    shardings = nn.logical_to_mesh_sharding(axes, mesh, [("embed", "data")])
    assert shardings["token_embedder"]["embedding"].spec == P(None, "data")
