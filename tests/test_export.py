"""`python -m slt.export`: a trained slt checkpoint out to Hugging Face and T5X files
that transformers and our importers read back to the same text weights."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_t5_config

from slt import export as export_lib
from slt import train as train_lib  # sets XLA flags before JAX starts
from slt.evaluation import evaluate as evaluate_lib
from slt.evaluation import trained_model
from slt.models import network, weights
from slt.training import checkpoints

# Training the scanned CTC model takes about 90 s on 2 cores; the export mappings
# themselves are checked in the default run by tests/test_weights.py.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny scanned-layer model with a CTC head, trained 2 steps (no evaluation)."""
    model_dir = str(tmp_path_factory.mktemp("run"))
    train_lib.train(
        model_dir=model_dir,
        mixture_or_task_name="fingerspelling_slt_ase_en",
        task_feature_lengths={"landmarks": 64, "inputs": 24, "targets": 16},
        batch_size=4,
        train_steps=2,
        checkpoint_config=checkpoints.CheckpointConfig(period=100),
        log_period=1,
        eval_config=evaluate_lib.EvalConfig(final=False),
        network_config=tiny_t5_config(
            num_encoder_layers=2, landmark_stride=2, encoder_ctc_head=True, scan_layers=True
        ),
    )
    return model_dir


def trained_text_params(model_dir: str) -> dict[str, np.ndarray]:
    restored = trained_model.load_trained_model(model_dir)
    flat = weights.flatten(network.unstack_layers(dict(restored.params)))
    return {
        k: np.asarray(v)
        for k, v in flat.items()
        if not k.startswith(weights.NEW_PARAMETER_PREFIXES)
    }


def test_hf_export_loads_in_transformers(model_dir, tmp_path, capsys):
    import transformers

    out = tmp_path / "hf"
    export_lib.main(["--checkpoint", model_dir, "--output", str(out)])
    printed = capsys.readouterr().out
    assert "encoder/landmark_embedder/kernel" in printed and "encoder_ctc/kernel" in printed
    model, info = transformers.T5ForConditionalGeneration.from_pretrained(
        out, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert model.config.num_layers == 2 and model.config.num_decoder_layers == 1
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    text = trained_text_params(model_dir)
    # embedding; 2 encoder layers of 9; 1 decoder layer of 14; 2 relpos tables, 2 final
    # norms, the output projection. HF lists the embedding 3 times (shared, and tied
    # encoder/decoder embed_tokens).
    assert len(text) == 1 + 2 * 9 + 14 + 2 + 2 + 1 == len(state) - 2
    for name, value in text.items():
        hf_name, transpose = weights.t5x_to_hf_name(name)
        np.testing.assert_array_equal(state[hf_name], value.T if transpose else value, err_msg=name)


def test_t5x_export_reads_back_and_refuses_to_overwrite(model_dir, tmp_path, capsys):
    out = tmp_path / "t5x" / "checkpoint_2"
    export_lib.main(["--checkpoint", model_dir, "--output", str(out), "--format", "t5x"])
    read, skipped = weights.read_t5x_checkpoint(str(out))
    text = trained_text_params(model_dir)
    assert read.keys() == text.keys()
    for name, value in text.items():
        np.testing.assert_array_equal(read[name], value, err_msg=name)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        export_lib.main(["--checkpoint", model_dir, "--output", str(out), "--format", "t5x"])
    assert exit_info.value.code == 1
    assert "exists and is not empty" in capsys.readouterr().err


def test_initial_params_load_from_a_run_its_checkpoints_or_a_step(model_dir, tmp_path):
    """`CheckpointConfig.initial_path` (the default loader) takes any of the three paths
    `slt.eval` takes, and gives the params `load_trained_model` gives."""
    import jax

    restored = trained_model.load_trained_model(model_dir)
    abstract = checkpoints.abstract_with_shardings(restored.params, restored.params_sharding)
    expected = jax.tree.map(np.asarray, restored.params)
    for path in (model_dir, f"{model_dir}/checkpoints", f"{model_dir}/checkpoints/2"):
        with jax.set_mesh(restored.mesh):
            loaded = checkpoints.load_slt_params(path, abstract)
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded), expected)
    with pytest.raises(FileNotFoundError, match="holds no finished checkpoint step"):
        checkpoints.load_slt_params(str(tmp_path), abstract)
