"""The published ByT5/mT5 sizes in models/: parameter counts from shapes alone."""

from __future__ import annotations

import dataclasses
import math
import os

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import pytest

from slt import gin_utils
from slt.models.network import T5Config, Transformer

GIN_DIR = os.path.join(gin_utils.GIN_DIR, "models")

# Text-model parameter counts as published in the ByT5 paper (Xue et al., 2022, Table 1),
# which lists mT5 and ByT5 side by side to three significant figures. (The mT5 paper
# rounds the same models to 300M, 580M, 1.2B, 3.7B and 13B.)
PUBLISHED = {
    "small": 300e6,
    "base": 582e6,
    "large": 1.23e9,
    "xl": 3.74e9,
    "xxl": 12.9e9,
}
# Shapes that the gin files must hold (ByT5 paper Table 1; t5x's byt5/mt5 gin files).
SHAPES = {  # d_model, heads, encoder layers, decoder layers, d_ff
    "byt5_small": (1472, 6, 12, 4, 3584),
    "byt5_base": (1536, 12, 18, 6, 3968),
    "byt5_large": (1536, 16, 36, 12, 3840),
    "byt5_xl": (2560, 32, 36, 12, 6720),
    "byt5_xxl": (4672, 64, 36, 12, 12352),
    "mt5_small": (512, 6, 8, 8, 1024),
    "mt5_base": (768, 12, 12, 12, 2048),
    "mt5_large": (1024, 16, 24, 24, 2816),
    "mt5_xl": (2048, 32, 24, 24, 5120),
    "mt5_xxl": (4096, 64, 24, 24, 10240),
}


def config_from_gin(name: str) -> T5Config:
    gin_utils.register_configurables()
    with gin.unlock_config():
        gin.clear_config()
        # `train` lives in slt.train (TensorFlow, seqio); only T5Config matters here.
        gin.parse_config_file(os.path.join(GIN_DIR, f"{name}.gin"), skip_unknown=True)
        bindings = gin.get_bindings("slt.T5Config")
        gin.clear_config()
    return T5Config(**bindings)


def count_params(cfg: T5Config) -> int:
    inputs = {
        "encoder_input_tokens": jax.ShapeDtypeStruct((1, 2), jnp.int32),
        "encoder_landmarks": jax.ShapeDtypeStruct((1, 2, cfg.landmark_dim), jnp.float32),
        "encoder_landmark_mask": jax.ShapeDtypeStruct((1, 2), jnp.int32),
        "decoder_input_tokens": jax.ShapeDtypeStruct((1, 2), jnp.int32),
    }
    shapes = jax.eval_shape(
        lambda rng, x: Transformer(cfg).init(rng, **x, enable_dropout=False),
        jax.random.PRNGKey(0),
        inputs,
    )
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(nn.meta.unbox(shapes)))


def count_params_by_layers(cfg: T5Config) -> int:
    """``count_params`` of the full depth from three shallow traces: the count is
    ``shared + E * encoder_layer + D * decoder_layer`` (tracing 48 layers is slow)."""
    shallow = lambda e, d: count_params(
        dataclasses.replace(  # noqa: E731
            cfg, num_encoder_layers=e, num_decoder_layers=d
        )
    )
    one_one = shallow(1, 1)
    encoder_layer, decoder_layer = shallow(2, 1) - one_one, shallow(1, 2) - one_one
    return (
        one_one
        + (cfg.num_encoder_layers - 1) * encoder_layer
        + (cfg.num_decoder_layers - 1) * decoder_layer
    )


def test_layer_extrapolation_equals_the_full_count():
    cfg = dataclasses.replace(
        config_from_gin("byt5_small"), num_encoder_layers=3, num_decoder_layers=2
    )
    assert count_params_by_layers(cfg) == count_params(cfg)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_gin_config_has_published_shape_and_parameter_count(name):
    cfg = config_from_gin(name)
    family, size = name.split("_")
    assert cfg.vocab_size == (384 if family == "byt5" else 250112)
    assert (
        cfg.emb_dim,
        cfg.num_heads,
        cfg.num_encoder_layers,
        cfg.num_decoder_layers,
        cfg.mlp_dim,
    ) == SHAPES[name]
    assert cfg.head_dim == 64 and cfg.mlp_activations == ("gelu", "linear")
    assert not cfg.logits_via_embedding and cfg.dtype == "bfloat16"
    text_params = count_params_by_layers(cfg) - (cfg.landmark_dim + 1) * cfg.emb_dim
    assert abs(text_params - PUBLISHED[size]) / PUBLISHED[size] < 0.005, text_params
