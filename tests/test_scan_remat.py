"""`T5Config.scan_layers` and `T5Config.remat_policy` change memory and compile time,
never the math: same loss, gradients and decodes as the per-layer network with the
same weights; scanned params carry the `layers` logical axis; checkpoints in and out
keep the per-layer T5X layout."""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_t5_config

from slt.models import weights
from slt.models.model import EncoderDecoderModel
from slt.models.network import T5Config, Transformer, stack_layers, unstack_layers

# ByT5-like depth asymmetry, so a stacking that mixed up the two stacks would show.
CFG = tiny_t5_config(
    vocab_size=64, num_encoder_layers=3, num_decoder_layers=2, mlp_dim=48, dropout_rate=0.1
)


def make_batch(seed: int = 0) -> dict:
    rs = np.random.RandomState(seed)
    mask = np.ones((2, 10), np.int32)
    mask[1, 7:] = 0
    return {
        "encoder_input_tokens": jnp.asarray(rs.randint(2, 64, (2, 4)), jnp.int32),
        "encoder_landmarks": jnp.asarray(rs.randn(2, 10, 255), jnp.float32),
        "encoder_landmark_mask": jnp.asarray(mask),
        "decoder_input_tokens": jnp.asarray(rs.randint(2, 64, (2, 6)), jnp.int32),
        "decoder_target_tokens": jnp.asarray(rs.randint(2, 64, (2, 6)), jnp.int32),
        "decoder_loss_weights": jnp.ones((2, 6), jnp.float32),
    }


@functools.cache
def per_layer_params() -> dict:
    model = EncoderDecoderModel(Transformer(CFG))
    shapes = {k: v.shape for k, v in make_batch().items()}
    return jax.tree.map(np.asarray, model.init_params(jax.random.PRNGKey(0), shapes))


def loss_and_grads(cfg: T5Config, params: dict, rng) -> tuple[float, dict]:
    model = EncoderDecoderModel(Transformer(cfg))
    fn = jax.jit(jax.value_and_grad(lambda p: model.loss_fn(p, make_batch(), rng)[0]))
    return fn(params)


@pytest.mark.parametrize(
    "scan,remat",
    [
        (True, "minimal"),  # both at once in the default run; each alone is slow (compiles)
        pytest.param(True, "none", marks=pytest.mark.slow),
        pytest.param(False, "full", marks=pytest.mark.slow),
        pytest.param(True, "dots", marks=pytest.mark.slow),
    ],
)
def test_same_loss_gradients_and_decodes(scan, remat):
    cfg = dataclasses.replace(CFG, scan_layers=scan, remat_policy=remat)
    params = per_layer_params()
    ours = stack_layers(params) if scan else params
    # With dropout on: the scanned stack must still draw a different mask per layer.
    rng = jax.random.PRNGKey(3)
    ref_loss, ref_grads = loss_and_grads(CFG, params, None)
    loss, grads = loss_and_grads(cfg, ours, None)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(ref_grads),
        jax.tree.leaves(unstack_layers(grads) if scan else grads),
    ):
        np.testing.assert_allclose(b, a, atol=2e-6, err_msg=jax.tree_util.keystr(path))
    dropout_loss, _ = loss_and_grads(cfg, ours, rng)
    assert np.isfinite(dropout_loss) and abs(float(dropout_loss) - float(loss)) > 1e-4

    ref_model = EncoderDecoderModel(Transformer(CFG))
    model = EncoderDecoderModel(Transformer(cfg))
    batch = make_batch()
    for options in ({}, {"decode_method": "beam", "num_beams": 3, "alpha": 0.6}):
        expected = ref_model.predict_batch(params, batch, 8, **options)
        np.testing.assert_array_equal(
            model.predict_batch(ours, batch, 8, **options), expected, err_msg=str(options)
        )


def test_scanned_params_are_stacked_with_a_layers_axis():
    cfg = dataclasses.replace(CFG, scan_layers=True)
    batch = make_batch()
    inputs = [
        batch[k]
        for k in (
            "encoder_input_tokens",
            "encoder_landmarks",
            "encoder_landmark_mask",
            "decoder_input_tokens",
        )
    ]
    variables = jax.eval_shape(
        lambda: Transformer(cfg).init(jax.random.PRNGKey(0), *inputs, enable_dropout=False)
    )
    spec = nn.get_partition_spec(variables)["params"]
    assert spec["encoder"]["layers"]["attention"]["query"]["kernel"] == jax.sharding.PartitionSpec(
        "layers", "embed", "joined_kv"
    )
    assert spec["decoder"]["layers"]["mlp"]["wi_0"]["kernel"] == jax.sharding.PartitionSpec(
        "layers", "embed", "mlp"
    )
    shapes = jax.tree.map(lambda x: x.shape, nn.meta.unbox(variables)["params"])
    assert shapes == jax.tree.map(np.shape, stack_layers(per_layer_params()))
    assert shapes["encoder"]["layers"]["attention"]["query"]["kernel"] == (3, 32, 32)
    assert shapes["decoder"]["layers"]["encoder_decoder_attention"]["key"]["kernel"] == (2, 32, 32)
    assert not any(k.startswith("layers_") for k in shapes["encoder"])
    # The same number of parameters as the per-layer network.
    count = lambda tree: sum(
        int(np.prod(s))
        for s in jax.tree.leaves(  # noqa: E731
            tree, is_leaf=lambda x: isinstance(x, tuple)
        )
    )
    assert count(shapes) == count(jax.tree.map(np.shape, per_layer_params()))


def test_stack_unstack_round_trip():
    params = per_layer_params()
    back = unstack_layers(stack_layers(params))
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    stacked = stack_layers(params)["encoder"]["layers"]["mlp"]["wo"]["kernel"]
    np.testing.assert_array_equal(stacked[2], params["encoder"]["layers_2"]["mlp"]["wo"]["kernel"])


def test_checkpoints_in_and_out_keep_the_per_layer_layout(tmp_path):
    cfg = dataclasses.replace(CFG, scan_layers=True)
    params = per_layer_params()
    text = {
        k: v
        for k, v in weights.flatten(params).items()
        if not k.startswith(weights.NEW_PARAMETER_PREFIXES)
    }
    # Export from the scanned layout: the files hold T5X/HF per-layer names.
    weights.write_t5x_checkpoint(stack_layers(params), str(tmp_path / "t5x"))
    weights.write_hf_checkpoint(stack_layers(params), cfg, str(tmp_path / "hf"))
    read, _ = weights.read_t5x_checkpoint(str(tmp_path / "t5x"))
    assert "encoder/layers_2/mlp/wo/kernel" in read and not any("/layers/" in k for k in read)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), stack_layers(params))
    for loader, path in (
        (weights.t5x_params_loader, tmp_path / "t5x"),
        (weights.hf_params_loader, tmp_path / "hf"),
    ):
        loaded = loader(str(path), abstract)
        assert jax.tree.map(np.shape, loaded) == jax.tree.map(lambda x: x.shape, abstract)
        flat = weights.flatten(unstack_layers(loaded))
        for name, value in text.items():
            np.testing.assert_array_equal(flat[name], value, err_msg=name)


def test_unknown_remat_policy_is_a_clear_error():
    cfg = dataclasses.replace(CFG, remat_policy="everything")
    with pytest.raises(ValueError, match="remat_policy='everything'.*'full'"):
        loss_and_grads(cfg, per_layer_params(), None)
