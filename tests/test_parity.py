"""Numerical parity with transformers' PyTorch T5ForConditionalGeneration.

Our random weights go through ``write_hf_checkpoint`` into transformers; on the same
text-only input both give the same float32 logits (1e-4) and the same greedy decodes.
Every published size is checked at its real width with reduced depth (ByT5 keeps its
3:1 encoder/decoder asymmetry); mT5's 250,112-row embedding is cut to 4,096 rows, which
changes no per-token computation. ByT5 Small runs by default, the rest with
``pytest -m slow``.
"""

from __future__ import annotations

import dataclasses
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slt import gin_utils
from slt.models import weights
from slt.models.model import EncoderDecoderModel
from slt.models.network import T5Config, Transformer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

GIN_DIR = os.path.join(gin_utils.GIN_DIR, "models")
SIZES = ["small", "base", "large", "xl", "xxl"]
# ByT5 Small (asymmetric depth, 6 heads x 64 != d_model 1472) runs by default.
CASES = [
    pytest.param(
        f"{family}_{size}", marks=() if (family, size) == ("byt5", "small") else pytest.mark.slow
    )
    for family in ("byt5", "mt5")
    for size in SIZES
]


def reduced_config(name: str) -> T5Config:
    gin_utils.register_configurables()
    with gin.unlock_config():
        gin.clear_config()
        gin.parse_config_file(os.path.join(GIN_DIR, f"{name}.gin"), skip_unknown=True)
        cfg = T5Config(**gin.get_bindings("slt.T5Config"))
        gin.clear_config()
    depth = (3, 1) if name.startswith("byt5") else (2, 2)
    return dataclasses.replace(
        cfg,
        num_encoder_layers=depth[0],
        num_decoder_layers=depth[1],
        vocab_size=min(cfg.vocab_size, 4096),
        dtype="float32",
    )


def text_batch(cfg: T5Config, b: int = 3, p: int = 9, d: int = 7, seed: int = 0) -> dict:
    """b rows of p prompt tokens and d target tokens, no frames (a text-only batch)."""
    rs = np.random.RandomState(seed)
    tokens = rs.randint(3, cfg.vocab_size, (b, p)).astype(np.int32)
    tokens[0, 6:] = 0  # padding in the first example
    tokens[1, -1] = 1  # an EOS-terminated input
    targets = rs.randint(3, cfg.vocab_size, (b, d)).astype(np.int32)
    return {
        "encoder_input_tokens": tokens,
        "encoder_landmarks": np.zeros((b, 0, cfg.landmark_dim), np.float32),
        "encoder_landmark_mask": np.zeros((b, 0), np.int32),
        "decoder_input_tokens": np.concatenate(
            [np.zeros((b, 1), np.int32), targets[:, :-1]], axis=1
        ),
        "decoder_target_tokens": targets,
    }


@pytest.mark.parametrize("name", CASES)
def test_logits_and_greedy_decodes_match_transformers(name, tmp_path):
    cfg = reduced_config(name)
    model = EncoderDecoderModel(Transformer(cfg))
    batch = text_batch(cfg)
    params = jax.jit(lambda r: model.init_params(r, {k: v.shape for k, v in batch.items()}))(
        jax.random.PRNGKey(0)
    )
    params = jax.tree_util.tree_map(np.asarray, params)
    # Norm scales of 1 would hide a missing or misplaced norm: randomise them.
    rs = np.random.RandomState(1)
    flat = weights.flatten(params)
    for key in flat:
        if key.endswith("/scale"):
            flat[key] = (1.0 + 0.3 * rs.randn(*flat[key].shape)).astype(np.float32)
    params = weights.unflatten(flat)

    weights.write_hf_checkpoint(params, cfg, str(tmp_path))
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    jax_batch = {k: jnp.asarray(v) for k, v in batch.items()}

    ours = np.asarray(jax.jit(lambda p, b: model._logits(p, b, None))(params, jax_batch))
    input_ids = torch.from_numpy(batch["encoder_input_tokens"]).long()
    attention_mask = (input_ids > 0).long()
    with torch.no_grad():
        theirs = hf(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=torch.from_numpy(batch["decoder_input_tokens"]).long(),
        ).logits.numpy()
    assert ours.shape == theirs.shape
    # The first example's encoder padding must be masked identically.
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)

    length = 6
    greedy = np.asarray(jax.jit(lambda p, b: model.predict_batch(p, b, length))(params, jax_batch))
    with torch.no_grad():
        generated = hf.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            num_beams=1,
            max_new_tokens=length,
            min_new_tokens=0,
            decoder_start_token_id=0,
            eos_token_id=1,
            pad_token_id=0,
        ).numpy()[:, 1:]
    generated = np.pad(generated, ((0, 0), (0, length - generated.shape[1])))
    np.testing.assert_array_equal(greedy, generated)
