"""Weights in and out: T5X legacy checkpoints (msgpack + TensorStore zarr) and Hugging
Face safetensors, written here with the real libraries, then read back and merged."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os

import jax
import numpy as np
import pytest
import tensorstore as ts
from flax import serialization
from helpers import tiny_t5_config

from slt.models import weights
from slt.models.model import EncoderDecoderModel
from slt.models.network import T5Config, Transformer

# ByT5-like asymmetry (3 encoder layers, 1 decoder layer) and heads*head_dim != d_model.
CFG = tiny_t5_config(vocab_size=48, emb_dim=24, head_dim=8, num_encoder_layers=3, mlp_dim=40)


@functools.cache
def fresh_params(cfg: T5Config, seed: int) -> dict:
    model = EncoderDecoderModel(Transformer(cfg))
    shapes = {
        "encoder_input_tokens": (1, 2),
        "encoder_landmarks": (1, 2, 255),
        "decoder_input_tokens": (1, 2),
    }
    params = jax.jit(lambda r: model.init_params(r, shapes))(jax.random.PRNGKey(seed))
    return jax.tree_util.tree_map(np.asarray, params)


def text_params(params: dict) -> dict[str, np.ndarray]:
    return {
        k: v
        for k, v in weights.flatten(params).items()
        if not k.startswith(weights.NEW_PARAMETER_PREFIXES)
    }


def write_t5x_like_the_public_release(target: dict, step_dir: str) -> None:
    """A legacy T5X checkpoint as t5x writes it (independent of slt's writer): bfloat16
    zarr arrays with gzip, specs whose kvstore is a GCS path relative to the step dir,
    rank-0/1 Adafactor slots inline and factored ones as zarr, and the step inline."""
    os.makedirs(step_dir)

    def zarr(name: str, value: np.ndarray, dtype: str) -> dict:
        directory = name.replace("/", ".")
        spec = {
            "driver": "zarr",
            "dtype": dtype,
            "kvstore": {"bucket": "t5x-dummy-bucket", "driver": "gcs", "path": directory},
            "metadata": {
                "chunks": list(value.shape),
                "compressor": {"id": "gzip", "level": 1},
                "shape": list(value.shape),
            },
        }
        local = {
            "driver": "zarr",
            "dtype": dtype,
            "kvstore": {"driver": "file", "path": os.path.join(step_dir, directory)},
            "metadata": spec["metadata"],
        }
        store = ts.open(local, create=True).result()
        store.write(value.astype(store.dtype.numpy_dtype)).result()
        return spec

    tree, param_states = {}, {}
    for name, value in target.items():
        tree[name] = zarr("target/" + name, value, "bfloat16")
        slots = {"m": np.zeros((1,), np.float32), "v": np.zeros((1,), np.float32)}
        if value.ndim == 2:
            slots["v_row"] = zarr(
                f"state/param_states/{name}/v_row", np.ones(value.shape[:1], np.float32), "float32"
            )
            slots["v_col"] = np.ones(value.shape[1:], np.float32)
        param_states[name] = slots
    state = {
        "version": 3,
        "optimizer": {
            "target": weights.unflatten(tree),
            "state": {
                "step": np.int32(1000000),
                "param_states": weights.unflatten(
                    {f"{k}/{s}": v for k, slots in param_states.items() for s, v in slots.items()}
                ),
            },
        },
    }
    with open(os.path.join(step_dir, "checkpoint"), "wb") as f:
        f.write(serialization.msgpack_serialize(state))


def bf16(x: np.ndarray) -> np.ndarray:
    import ml_dtypes

    return np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32)


# ---------------------------------------------------------------------------- names


def test_every_text_param_has_one_hf_name_and_back():
    names = text_params(fresh_params(CFG, 0))
    hf = {}
    for name in names:
        hf_name, transpose = weights.t5x_to_hf_name(name)
        assert weights.hf_to_t5x_name(hf_name) == (name, transpose)
        hf[hf_name] = name
    assert len(hf) == len(names)
    assert (
        hf["encoder.block.2.layer.1.DenseReluDense.wi_1.weight"]
        == "encoder/layers_2/mlp/wi_1/kernel"
    )
    assert (
        hf["decoder.block.0.layer.1.EncDecAttention.o.weight"]
        == "decoder/layers_0/encoder_decoder_attention/out/kernel"
    )
    assert weights.t5x_to_hf_name("encoder/landmark_embedder/kernel") is None


# ----------------------------------------------------------------------------- T5X


def test_reads_a_t5x_release_layout_and_skips_optimizer_state(tmp_path):
    source = text_params(fresh_params(CFG, 1))
    step_dir = str(tmp_path / "checkpoint_1000000")
    write_t5x_like_the_public_release(source, step_dir)
    loaded, skipped = weights.read_t5x_checkpoint(step_dir)
    assert loaded.keys() == source.keys()
    for name, value in source.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], bf16(value), err_msg=name)
    assert "state/step" in skipped
    assert "state/param_states/encoder/layers_0/mlp/wi_0/kernel/v_row" in skipped


def test_t5x_round_trip_keeps_landmark_projection_fresh(tmp_path):
    pretrained = fresh_params(CFG, 2)
    weights.write_t5x_checkpoint(text_params(pretrained), str(tmp_path / "ckpt"))
    assert os.path.isdir(tmp_path / "ckpt" / "target.encoder.layers_2.attention.query.kernel")
    fresh = fresh_params(CFG, 3)
    merged, report = weights.load_pretrained(fresh, f"t5x:{tmp_path / 'ckpt'}")
    flat = weights.flatten(merged)
    for name, value in text_params(pretrained).items():
        np.testing.assert_array_equal(flat[name], value, err_msg=name)
    for name in ("encoder/landmark_embedder/kernel", "encoder/landmark_embedder/bias"):
        np.testing.assert_array_equal(flat[name], weights.flatten(fresh)[name])
        assert name in report.freshly_initialised
    assert len(report.loaded) == len(text_params(pretrained))
    assert "freshly initialised 2" in report.summary()


def test_mismatches_are_all_listed(tmp_path):
    weights.write_t5x_checkpoint(text_params(fresh_params(CFG, 0)), str(tmp_path / "c"))
    other = dataclasses.replace(CFG, num_encoder_layers=2, mlp_dim=32)
    with pytest.raises(weights.WeightsMismatchError) as err:
        weights.load_pretrained(fresh_params(other, 0), f"t5x:{tmp_path / 'c'}")
    message = str(err.value)
    # The 9 params of encoder layer 2, and 3 MLP kernels in each of the 3 layers left.
    assert "(18 mismatch(es))" in message, message
    assert message.count("\n  ") == 18
    assert "not in the network: encoder/layers_2/attention/query/kernel (24, 16)" in message
    assert (
        "shape differs: decoder/layers_0/mlp/wo/kernel: checkpoint (40, 24), network (32, 24)"
    ) in message
    with pytest.raises(FileNotFoundError, match="no T5X msgpack 'checkpoint' file"):
        weights.read_t5x_checkpoint(str(tmp_path))


# ---------------------------------------------------------------------- Hugging Face


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


# Only these tests run transformers' PyTorch T5; the rest of the file (the T5X format, the
# safetensors files the library reads and writes) needs neither, and runs without them.
needs_torch = pytest.mark.skipif(
    not (_importable("torch") and _importable("transformers")),
    reason='needs torch and transformers: pip install -e ".[test]"',
)


def hf_model(cfg: T5Config, seed: int):
    import torch
    import transformers

    torch.manual_seed(seed)
    hf_cfg = transformers.T5Config(
        **{
            k: v
            for k, v in weights.hf_config(cfg).items()
            if k not in ("architectures", "model_type")
        }
    )
    model = transformers.T5ForConditionalGeneration(hf_cfg).eval()
    # transformers 5 ties lm_head to the embedding on construction; T5.1.1 has its own.
    model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
    with torch.no_grad():  # HF initialises the norms to 1: make them informative.
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if "layer_norm" in name else 0.2))
    return model


@needs_torch
def test_reads_a_checkpoint_saved_by_transformers(tmp_path):
    model = hf_model(CFG, 0)
    model.save_pretrained(tmp_path / "hf")
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    merged, report = weights.load_pretrained(fresh_params(CFG, 0), f"hf:{tmp_path / 'hf'}")
    flat = weights.flatten(merged)
    np.testing.assert_array_equal(flat["token_embedder/embedding"], state["shared.weight"])
    np.testing.assert_array_equal(flat["decoder/logits_dense/kernel"], state["lm_head.weight"].T)
    np.testing.assert_array_equal(
        flat["encoder/relpos_bias/rel_embedding"],
        state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T,
    )
    np.testing.assert_array_equal(
        flat["encoder/layers_2/attention/value/kernel"],
        state["encoder.block.2.layer.0.SelfAttention.v.weight"].T,
    )
    assert len(report.loaded) == len(text_params(fresh_params(CFG, 0)))


@needs_torch
def test_export_loads_in_transformers_without_missing_keys(tmp_path):
    import transformers

    params = fresh_params(CFG, 4)
    left_out = weights.write_hf_checkpoint(params, CFG, str(tmp_path / "out"))
    assert left_out == ["encoder/landmark_embedder/bias", "encoder/landmark_embedder/kernel"]
    with open(tmp_path / "out" / "config.json") as f:
        assert json.load(f)["num_decoder_layers"] == 1
    model, info = transformers.T5ForConditionalGeneration.from_pretrained(
        tmp_path / "out", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    assert model.config.num_layers == 3 and model.config.num_decoder_layers == 1
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    flat = weights.flatten(params)
    for name, value in text_params(params).items():
        hf_name, transpose = weights.t5x_to_hf_name(name)
        np.testing.assert_array_equal(state[hf_name], value.T if transpose else value)
    # T5.1.1: the output projection is its own matrix, not the embedding.
    assert not np.array_equal(state["lm_head.weight"], state["shared.weight"])
    np.testing.assert_array_equal(state["lm_head.weight"], flat["decoder/logits_dense/kernel"].T)
    # And back: the exported directory imports into the same text weights.
    back, _ = weights.read_hf_checkpoint(str(tmp_path / "out"))
    assert back.keys() == text_params(params).keys()
    assert weights.config_from_hf(weights.hf_config(CFG)) == CFG


# --------------------------------------------------------- imported, then fine-tuned


def corpus_batch(cfg: T5Config, num_words: int = 8) -> dict:
    """Real clips of the embedded corpus (ASL fingerspelling, English training words),
    byte-encoded as ByT5 does (id = byte + 3, EOS 1)."""
    from slt.tasks.fingerspelling import corpus as fingerspelling

    words = list(fingerspelling.word_splits("ase")[0]["train"][:num_words])
    clips = [fingerspelling.clip_frames("ase", w, variant=0)[:48] for w in words]
    frames = np.zeros((num_words, 48, cfg.landmark_dim), np.float32)
    mask = np.zeros((num_words, 48), np.int32)
    for i, clip in enumerate(clips):
        frames[i, : len(clip)], mask[i, : len(clip)] = clip, 1
    prompt = np.frombuffer(b"<slt> <ase> <en>", np.uint8).astype(np.int32) + 3
    targets = np.zeros((num_words, 12), np.int32)
    for i, w in enumerate(words):
        ids = list(np.frombuffer(w.encode(), np.uint8).astype(np.int32) + 3) + [1]
        targets[i, : len(ids)] = ids
    return {
        "encoder_input_tokens": np.tile(prompt, (num_words, 1)),
        "encoder_landmarks": frames,
        "encoder_landmark_mask": mask,
        "decoder_input_tokens": np.concatenate(
            [np.zeros((num_words, 1), np.int32), targets[:, :-1]], axis=1
        ),
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets > 0).astype(np.float32),
    }


def test_imported_checkpoints_fine_tune_on_the_embedded_corpus(tmp_path):
    import optax

    cfg = dataclasses.replace(CFG, vocab_size=384, landmark_stride=2)
    batch = {k: jax.numpy.asarray(v) for k, v in corpus_batch(cfg).items()}
    model = EncoderDecoderModel(Transformer(cfg))
    optimizer = optax.adafactor(1e-2)

    @jax.jit
    def train(params):
        def step(carry, _):
            params, state = carry
            (loss, _), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(params, batch, None)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), None, 15)
        return params, losses

    pretrained = text_params(fresh_params(cfg, 5))
    weights.write_t5x_checkpoint(pretrained, str(tmp_path / "t5x"), dtype="bfloat16")
    weights.write_hf_checkpoint(weights.unflatten(pretrained), cfg, str(tmp_path / "hf"))
    for source in (f"t5x:{tmp_path / 't5x'}", f"hf:{tmp_path / 'hf'}"):
        params, report = weights.load_pretrained(fresh_params(cfg, 6), source)
        assert len(report.loaded) == len(pretrained)
        tuned, losses = train(params)
        losses = np.asarray(losses)
        assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], (source, losses)
        before, after = weights.flatten(params), weights.flatten(tuned)
        for name in ("encoder/layers_0/attention/query/kernel", "encoder/landmark_embedder/kernel"):
            assert not np.allclose(before[name], after[name]), name


def test_train_loaders_fill_abstract_params(tmp_path):
    pretrained = text_params(fresh_params(CFG, 7))
    weights.write_t5x_checkpoint(pretrained, str(tmp_path / "t5x"))
    weights.write_hf_checkpoint(weights.unflatten(pretrained), CFG, str(tmp_path / "hf"))
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh_params(CFG, 7)
    )
    for loader, path in (
        (weights.t5x_params_loader, tmp_path / "t5x"),
        (weights.hf_params_loader, tmp_path / "hf"),
    ):
        flat = weights.flatten(loader(str(path), abstract))
        for name, value in pretrained.items():
            np.testing.assert_array_equal(flat[name], value, err_msg=name)
        kernel = flat["encoder/landmark_embedder/kernel"]
        assert kernel.shape == (255, 24) and 0.03 < kernel.std() < 0.09  # ~1/sqrt(255)
        assert not flat["encoder/landmark_embedder/bias"].any()
