"""Tests of the T5.1.1 network: names/shapes, numerics, masking, causality, dtypes."""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_t5_config

from slt.models import layers
from slt.models.network import T5Config, Transformer, encoder_mask

# ByT5-style: deeper encoder, heads*head_dim (24) != emb_dim (40).
SMALL = tiny_t5_config(vocab_size=30, emb_dim=40, head_dim=12, num_encoder_layers=3, mlp_dim=56)
TINY = tiny_t5_config(vocab_size=40, num_encoder_layers=2, num_decoder_layers=2)


def make_inputs(cfg: T5Config, b=2, p=4, t=6, d=5, seed=0, n_real_frames=None):
    """b rows of p prompt tokens (the last one padding), t frames and d decoder tokens."""
    rs = np.random.RandomState(seed)
    tokens = rs.randint(1, cfg.vocab_size, (b, p)).astype(np.int32)
    if p:
        tokens[:, -1] = 0  # one padded prompt position
    frames = rs.randn(b, t, cfg.landmark_dim).astype(np.float32)
    frame_mask = np.ones((b, t), np.int32)
    if n_real_frames is not None:
        frame_mask[:, n_real_frames:] = 0
    dec = rs.randint(1, cfg.vocab_size, (b, d)).astype(np.int32)
    dec[:, 0] = 0
    return {
        "encoder_input_tokens": jnp.asarray(tokens),
        "encoder_landmarks": jnp.asarray(frames),
        "encoder_landmark_mask": jnp.asarray(frame_mask),
        "decoder_input_tokens": jnp.asarray(dec),
        "decoder_target_tokens": jnp.asarray(dec),
    }


# Jitted and cached per config: eager flax dispatches (and compiles) op by op, and a
# fresh jax.jit per call recompiles, both several times slower on this CPU.
@functools.cache
def _init_fn(cfg: T5Config):
    return jax.jit(lambda rng, x: Transformer(cfg).init(rng, **x, enable_dropout=False))


@functools.cache
def _forward_fn(cfg: T5Config, enable_dropout: bool):
    def fn(v, x, r):
        rngs = None if r is None else {"dropout": r}
        return Transformer(cfg).apply(v, **x, enable_dropout=enable_dropout, rngs=rngs)

    return jax.jit(fn)


@functools.cache
def _encode_fn(cfg: T5Config):
    return jax.jit(
        lambda v, x: Transformer(cfg).apply(
            v,
            x["encoder_input_tokens"],
            x["encoder_landmarks"],
            x["encoder_landmark_mask"],
            enable_dropout=False,
            method=Transformer.encode,
        )
    )


@functools.cache
def _init_cached(cfg: T5Config, seed: int):
    # Param shapes do not depend on input shapes: one (slow to compile) init per config.
    return _init_fn(cfg)(jax.random.PRNGKey(seed), make_inputs(cfg, b=1, p=2, t=2, d=2))


def init_uncached(cfg: T5Config, seed: int = 0):
    inputs = make_inputs(cfg, b=1, p=2, t=2, d=2)
    return Transformer(cfg).init(jax.random.PRNGKey(seed), **inputs, enable_dropout=False)


def init(cfg: T5Config, inputs=None, seed=0):
    return _init_cached(cfg, seed)


def forward(cfg: T5Config, variables, inputs, enable_dropout=False, rng=None):
    """Teacher-forced logits."""
    return _forward_fn(cfg, enable_dropout)(variables, inputs, rng)


def encode(cfg: T5Config, variables, inputs):
    return _encode_fn(cfg)(variables, inputs)


def flat(tree) -> dict[str, object]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
    )[0]:
        out["/".join(str(k.key) for k in path)] = leaf
    return out


def expected_shapes(cfg: T5Config) -> dict[str, tuple[int, ...]]:
    """The T5X parameter list, written out independently of the network code."""
    d, hk, f, v = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
    rel = (cfg.num_heads, cfg.relpos_num_buckets)
    shapes = {
        "token_embedder/embedding": (v, d),
        "encoder/encoder_norm/scale": (d,),
        "encoder/relpos_bias/rel_embedding": rel,
        "encoder/landmark_embedder/kernel": (cfg.landmark_dim, d),
        "encoder/landmark_embedder/bias": (d,),
        "decoder/decoder_norm/scale": (d,),
        "decoder/relpos_bias/rel_embedding": rel,
        "decoder/logits_dense/kernel": (d, v),
    }

    def attention(prefix):
        for name in ("query", "key", "value"):
            shapes[f"{prefix}/{name}/kernel"] = (d, hk)
        shapes[f"{prefix}/out/kernel"] = (hk, d)

    def mlp(prefix):
        shapes[f"{prefix}/wi_0/kernel"] = (d, f)
        shapes[f"{prefix}/wi_1/kernel"] = (d, f)
        shapes[f"{prefix}/wo/kernel"] = (f, d)

    for i in range(cfg.num_encoder_layers):
        p = f"encoder/layers_{i}"
        shapes[f"{p}/pre_attention_layer_norm/scale"] = (d,)
        shapes[f"{p}/pre_mlp_layer_norm/scale"] = (d,)
        attention(f"{p}/attention")
        mlp(f"{p}/mlp")
    for i in range(cfg.num_decoder_layers):
        p = f"decoder/layers_{i}"
        for norm in ("pre_self_attention", "pre_cross_attention", "pre_mlp"):
            shapes[f"{p}/{norm}_layer_norm/scale"] = (d,)
        attention(f"{p}/self_attention")
        attention(f"{p}/encoder_decoder_attention")
        mlp(f"{p}/mlp")
    return shapes


def test_param_names_shapes_and_axes():
    variables = init(SMALL, make_inputs(SMALL))
    assert set(variables) == {"params"}
    params = flat(nn.meta.unbox(variables)["params"])
    expected = expected_shapes(SMALL)
    assert sorted(params) == sorted(expected)
    for name, shape in expected.items():
        assert params[name].shape == shape, name
        assert params[name].dtype == jnp.float32, name

    axes = flat(nn.get_partition_spec(variables)["params"])
    assert sorted(axes) == sorted(expected)
    P = jax.sharding.PartitionSpec
    assert axes["encoder/layers_2/attention/query/kernel"] == P("embed", "joined_kv")
    assert axes["decoder/layers_0/encoder_decoder_attention/out/kernel"] == P("joined_kv", "embed")
    assert axes["encoder/layers_0/mlp/wi_1/kernel"] == P("embed", "mlp")
    assert axes["decoder/layers_0/mlp/wo/kernel"] == P("mlp", "embed")
    assert axes["token_embedder/embedding"] == P("vocab", "embed")
    assert axes["decoder/relpos_bias/rel_embedding"] == P("heads", "relpos_buckets")
    assert axes["encoder/encoder_norm/scale"] == P("embed")
    assert axes["decoder/logits_dense/kernel"] == P("embed", "vocab")
    assert axes["encoder/landmark_embedder/kernel"] == P("landmark", "embed")
    # Every leaf has one logical name per dimension.
    for name, spec in axes.items():
        assert len(spec) == len(expected[name]), name

    # T5 1.0 style tied logits drop the untied logits_dense.
    tied = dataclasses.replace(SMALL, logits_via_embedding=True)
    tied_shapes = jax.eval_shape(lambda: nn.meta.unbox(init_uncached(tied)))
    assert "logits_dense" not in tied_shapes["params"]["decoder"]

    # A partitioner can map the logical names onto a mesh (unknown names -> replicated).
    rules = (("embed", None), ("mlp", "model"), ("joined_kv", "model"), ("vocab", "model"))
    mesh_axes = nn.logical_to_mesh(nn.get_partition_spec(variables), rules)["params"]
    assert mesh_axes["decoder"]["logits_dense"]["kernel"] == P(None, "model")
    assert mesh_axes["encoder"]["landmark_embedder"]["kernel"] == P(None, None)


def test_query_init_folds_attention_scaling():
    cfg = tiny_t5_config(vocab_size=16, emb_dim=256, num_heads=4, head_dim=64)
    params = nn.meta.unbox(init(cfg, make_inputs(cfg, t=2, d=2)))["params"]
    att = params["encoder"]["layers_0"]["attention"]
    q_std = float(np.std(att["query"]["kernel"]))
    k_std = float(np.std(att["key"]["kernel"]))
    assert q_std == pytest.approx((256 * 64) ** -0.5, rel=0.05)
    assert k_std == pytest.approx(256**-0.5, rel=0.05)
    assert float(np.std(params["token_embedder"]["embedding"])) == pytest.approx(1.0, rel=0.1)


def closed_form_param_count(cfg: T5Config) -> int:
    d, hk, f, v = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
    n_act = len(cfg.mlp_activations)
    rel = cfg.num_heads * cfg.relpos_num_buckets
    enc_layer = 4 * d * hk + (n_act + 1) * d * f + 2 * d
    dec_layer = 8 * d * hk + (n_act + 1) * d * f + 3 * d
    landmark = cfg.landmark_dim * d + d
    return (
        v * d
        + cfg.num_encoder_layers * enc_layer
        + d
        + rel
        + landmark
        + cfg.num_decoder_layers * dec_layer
        + d
        + rel
        + d * v
    )


def test_byt5_small_param_count_without_allocation():
    cfg = T5Config(
        vocab_size=384,
        emb_dim=1472,
        num_heads=6,
        head_dim=64,
        num_encoder_layers=12,
        num_decoder_layers=4,
        mlp_dim=3584,
    )
    inputs = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype)
        for k, v in make_inputs(cfg, b=1, p=2, t=2, d=2).items()
    }
    shapes = jax.eval_shape(
        lambda rng, x: Transformer(cfg).init(rng, **x, enable_dropout=False),
        jax.random.PRNGKey(0),
        inputs,
    )
    count = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(nn.meta.unbox(shapes)))
    assert count == closed_form_param_count(cfg)
    t5_part = count - (cfg.landmark_dim + 1) * cfg.emb_dim
    assert abs(t5_part - 300e6) / 300e6 < 0.005  # the published "300M"


def test_rmsnorm_matches_numpy():
    rs = np.random.RandomState(1)
    x = (rs.randn(3, 5, 16) * 3 + 1).astype(np.float32)
    scale = rs.rand(16).astype(np.float32) + 0.5
    norm = layers.RMSNorm()
    y = norm.apply({"params": {"scale": jnp.asarray(scale)}}, jnp.asarray(x))
    ref = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + 1e-6) * scale
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-6)
    # bf16 compute: statistics in float32, output in bf16.
    yb = layers.RMSNorm(dtype=jnp.bfloat16).apply(
        {"params": {"scale": jnp.asarray(scale)}}, jnp.asarray(x, jnp.bfloat16)
    )
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yb, np.float32), ref, rtol=2e-2, atol=2e-2)


def numpy_t5_bucket(rel: int, bidirectional: bool, num_buckets=32, max_distance=128) -> int:
    """Scalar T5 bucket formula (float64, same eps as T5X's float32 code)."""
    n = -rel
    offset = 0
    if bidirectional:
        num_buckets //= 2
        if n < 0:
            offset = num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return offset + n
    large = max_exact + int(
        math.log(n / max_exact + 1.1920929e-07)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    )
    return offset + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bucket(bidirectional):
    rel = np.arange(-400, 401)
    got = layers.relative_position_bucket(rel, bidirectional, 32, 128)
    want = np.array([numpy_t5_bucket(int(r), bidirectional) for r in rel])
    np.testing.assert_array_equal(got, want)
    idx = lambda r: r + 400  # noqa: E731
    if bidirectional:
        # Exact for |n| < 8, keys after the query in buckets 16-31, far -> last buckets.
        assert [got[idx(r)] for r in (0, -1, -7, 1, 7)] == [0, 1, 7, 17, 23]
        assert got[idx(-128)] == 15 and got[idx(-400)] == 15
        assert got[idx(128)] == 31 and got[idx(400)] == 31
        # Bucket 16 would be "after the query at distance 0": never used, as in T5.
        assert set(got.tolist()) == set(range(32)) - {16}
    else:
        # Future keys share bucket 0; exact below 16; >= 128 in bucket 31.
        assert (got[rel >= 0] == 0).all()
        assert [got[idx(r)] for r in (-1, -15, -16)] == [1, 15, 16]
        assert (got[rel <= -128] == 31).all()
        assert set(got.tolist()) == set(range(32))


def test_relpos_module_and_decode_row():
    mod = layers.RelativePositionBiases(num_heads=3)
    params = mod.init(jax.random.PRNGKey(0), 5, 7, True)
    table = np.asarray(nn.meta.unbox(params)["params"]["rel_embedding"])
    bias = np.asarray(mod.apply(params, 5, 7, True))
    assert bias.shape == (1, 3, 5, 7)
    for q in range(5):
        for k in range(7):
            np.testing.assert_array_equal(bias[0, :, q, k], table[:, numpy_t5_bucket(k - q, True)])
    full = np.asarray(mod.apply(params, 9, 9, False))
    for i in (0, 4, 8):
        row = mod.apply(params, 1, 9, False, query_index=jnp.asarray(i))
        np.testing.assert_array_equal(np.asarray(row)[0, :, 0], full[0, :, i])


def test_encoder_ignores_padded_frames_and_extra_padding():
    inputs = make_inputs(TINY, t=8, n_real_frames=5)
    variables = init(TINY, inputs)
    enc = lambda x: encode(TINY, variables, x)  # noqa: E731
    base = np.asarray(enc(inputs))
    real = np.asarray(
        encoder_mask(inputs["encoder_input_tokens"], inputs["encoder_landmark_mask"])
    ).astype(bool)
    assert real.sum() == 2 * (3 + 5)

    changed = dict(inputs)
    frames = np.array(inputs["encoder_landmarks"])
    frames[:, 5:] = 1e3 * np.random.RandomState(5).randn(*frames[:, 5:].shape)
    changed["encoder_landmarks"] = jnp.asarray(frames)
    other = np.asarray(enc(changed))
    np.testing.assert_allclose(other[real], base[real], rtol=1e-5, atol=1e-5)
    assert not np.allclose(other[~real], base[~real])  # padded positions did change

    # Fewer padded frames at the end give the same outputs at real positions.
    trimmed = dict(inputs)
    trimmed["encoder_landmarks"] = inputs["encoder_landmarks"][:, :6]
    trimmed["encoder_landmark_mask"] = inputs["encoder_landmark_mask"][:, :6]
    short = np.asarray(enc(trimmed))
    np.testing.assert_allclose(
        short[:, :9][real[:, :9]], base[:, :9][real[:, :9]], rtol=1e-5, atol=1e-5
    )

    # A real frame does affect the output.
    frames[:, 0] += 1.0
    moved = dict(inputs, encoder_landmarks=jnp.asarray(frames))
    assert not np.allclose(np.asarray(enc(moved))[real], base[real], atol=1e-4)


def test_text_only_and_prompt_free_inputs():
    text = make_inputs(TINY, t=0)
    variables = init(TINY, text)
    logits = forward(TINY, variables, text)
    assert logits.shape == (2, 5, TINY.vocab_size) and np.isfinite(logits).all()
    frames_only = make_inputs(TINY, p=0, t=4)
    logits = forward(TINY, variables, frames_only)
    assert logits.shape == (2, 5, TINY.vocab_size) and np.isfinite(logits).all()


def test_decoder_is_causal():
    inputs = make_inputs(TINY, d=8)
    variables = init(TINY, inputs)
    apply = lambda x: forward(TINY, variables, x)  # noqa: E731
    base = np.asarray(apply(inputs))
    dec = np.array(inputs["decoder_input_tokens"])
    dec[:, 5] = dec[:, 5] % (TINY.vocab_size - 1) + 1  # a different non-pad token
    changed = np.asarray(apply(dict(inputs, decoder_input_tokens=jnp.asarray(dec))))
    np.testing.assert_allclose(changed[:, :5], base[:, :5], rtol=1e-6, atol=1e-6)
    assert not np.allclose(changed[:, 5:], base[:, 5:], atol=1e-4)


def test_bfloat16_compute_close_to_float32():
    inputs = make_inputs(TINY)
    variables = init(TINY, inputs)
    bf16 = dataclasses.replace(TINY, dtype="bfloat16")
    l32 = forward(TINY, variables, inputs)
    l16 = forward(bf16, variables, inputs)
    assert l16.dtype == jnp.float32 and l32.dtype == jnp.float32
    enc16 = encode(bf16, variables, inputs)
    assert enc16.dtype == jnp.bfloat16
    scale = float(np.abs(np.asarray(l32)).mean())
    assert float(np.abs(np.asarray(l16) - np.asarray(l32)).mean()) < 0.05 * scale
    assert (np.argmax(l16, -1) == np.argmax(l32, -1)).mean() > 0.8


def test_dropout_needs_rng_and_changes_output():
    cfg = dataclasses.replace(TINY, dropout_rate=0.3)
    inputs = make_inputs(cfg)
    variables = init(TINY, inputs)  # same params; dropout only changes apply
    a = forward(cfg, variables, inputs, True, jax.random.PRNGKey(1))
    b = forward(cfg, variables, inputs, True, jax.random.PRNGKey(2))
    c = forward(cfg, variables, inputs)
    d = forward(cfg, variables, inputs)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(c, d)


def test_landmark_stride_stacks_frames_and_masks():
    from slt.models.network import stack_frames

    frames = jnp.arange(2 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 3)
    stacked = stack_frames(frames, 2)
    assert stacked.shape == (2, 3, 6)
    np.testing.assert_array_equal(stacked[0, 0], np.concatenate([frames[0, 0], frames[0, 1]]))
    np.testing.assert_array_equal(stacked[0, 2], np.concatenate([frames[0, 4], np.zeros(3)]))
    tokens = jnp.array([[5, 6, 0], [5, 0, 0]])
    frame_mask = jnp.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    mask = encoder_mask(tokens, frame_mask, landmark_stride=2)
    np.testing.assert_array_equal(mask, [[1, 1, 0, 1, 1, 0], [1, 0, 0, 1, 0, 0]])

    cfg = tiny_t5_config(vocab_size=64, emb_dim=16, head_dim=8, mlp_dim=32, landmark_stride=2)
    net = Transformer(cfg)
    rng = np.random.default_rng(0)
    landmarks = rng.random((2, 5, 255)).astype(np.float32)
    variables = net.init(
        jax.random.key(0),
        tokens,
        landmarks,
        frame_mask,
        jnp.ones((2, 4), jnp.int32),
        enable_dropout=False,
    )
    assert variables["params"]["encoder"]["landmark_embedder"]["kernel"].value.shape == (510, 16)
    out = net.apply(
        variables, tokens, landmarks, frame_mask, method=net.encode, enable_dropout=False
    )
    changed = landmarks.copy()
    changed[0, 4] += 7.0  # a padded frame in a fully padded group of example 0
    out2 = net.apply(
        variables, tokens, changed, frame_mask, method=net.encode, enable_dropout=False
    )
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(out2)[real], atol=1e-5)


def test_sinusoidal_landmark_positions():
    from slt.models.network import sinusoidal_positions

    table = sinusoidal_positions(50, 8)
    assert table.shape == (50, 8) and table.dtype == np.float32
    # First feature pair has wavelength 2*pi, the last 2*pi*10000.
    np.testing.assert_allclose(table[:, 0], np.sin(np.arange(50)), atol=1e-6)
    np.testing.assert_allclose(table[:, 4], np.cos(np.arange(50)), atol=1e-6)
    np.testing.assert_allclose(table[7, 3], np.sin(7 / 10000.0), atol=1e-6)
    assert len({tuple(np.round(row, 4)) for row in table}) == 50  # every position distinct

    plain = dataclasses.replace(TINY, num_encoder_layers=1)
    with_pos = dataclasses.replace(plain, landmark_positions="sinusoidal")
    inputs = make_inputs(plain)
    args = (
        inputs["encoder_input_tokens"],
        inputs["encoder_landmarks"],
        inputs["encoder_landmark_mask"],
    )
    variables = Transformer(plain).init(
        jax.random.key(0), *args, inputs["decoder_input_tokens"], enable_dropout=False
    )
    # Parameter-free: the same variables serve both configs.
    encode = lambda cfg: np.asarray(
        Transformer(cfg).apply(variables, *args, enable_dropout=False, method=Transformer.encode)
    )
    assert np.abs(encode(plain) - encode(with_pos)).max() > 1e-2
    with pytest.raises(ValueError, match="landmark_positions"):
        encode(dataclasses.replace(plain, landmark_positions="learned"))
