"""A job's inputs and exports on `gs://`, served by fake-gcs-server on localhost.

What users keep in a bucket, read and written through `slt.storage` in this process:

- clips (`.pose`, `.npz`) with captions, made into a manifest that names them relative
  to its own directory, prepared into shards; the prepared dataset's `dataset_info.json` read from gs://;
- an slt checkpoint exported to gs:// in Hugging Face and T5X format, both imported
  back from there (the initial checkpoint of a fine-tuning run), and an export that
  stops before reading anything when its output is not empty or cannot be written;
- a BLEURT checkpoint, its SavedModel copied to local disk while it loads.

The emulator (tests/gcs_emulator.py, fixture `gcs` in conftest.py) and the run
directory tests are in tests/test_storage.py.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from gcs_emulator import BUCKET
from helpers import TEST_DATA, tiny_t5_config

from slt import storage

ROOT = f"gs://{BUCKET}/inputs"


def test_clips_and_manifest_on_gcs_prepare_and_the_dataset_reads_back(gcs, tmp_path):
    from slt import manifest_makers, prepare
    from slt.data import errors
    from slt.io import arrays, clips, readers
    from slt.tasks import prepared
    from slt.tasks.fingerspelling import corpus as fingerspelling

    local_pose = os.path.join(TEST_DATA, "mediapipe_reduced.pose")
    remote_pose = f"{ROOT}/corpus/clips/signer.pose"
    storage.copy_file(local_pose, remote_pose)
    from_gcs, from_disk = readers.read_holistic(remote_pose), readers.read_holistic(local_pose)
    assert from_gcs.source == remote_pose
    np.testing.assert_array_equal(from_gcs.points, from_disk.points)
    np.testing.assert_array_equal(from_gcs.present, from_disk.present)

    remote_npz = f"{ROOT}/corpus/clips/sub/letter.npz"
    letter = readers.read_holistic(fingerspelling._index()[0][0])
    arrays.write_npz(remote_npz, letter.points, letter.present, letter.fps)
    np.testing.assert_array_equal(readers.read_holistic(remote_npz).points, letter.points)
    with pytest.raises(errors.BadInput, match=f"{ROOT}/corpus/clips/none.pose: no such file"):
        readers.read_holistic(f"{ROOT}/corpus/clips/none.pose")

    # A manifest maker finds the clips and captions in the bucket, paths relative to it.
    storage.write_text(
        f"{ROOT}/corpus/clips/signer.en.vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nHello\n"
    )
    made = manifest_makers.from_youtube(f"{ROOT}/corpus/clips", f"{ROOT}/corpus", "ase", "en")
    assert [(r["id"], r["path"], r["text"]) for r in made.rows] == [
        ("signer:00000", "clips/signer.pose", "Hello")
    ]
    assert [(r["reason"], r["file"]) for r in made.report] == [("no_captions", remote_npz)]

    rows = [
        {"path": "clips/signer.pose", "text": "hello", "sign_language": "ase"},
        {"path": "clips/sub/letter.npz", "text": "A", "sign_language": "ase"},
        {"path": "clips/none.pose", "text": "gone", "sign_language": "ase"},
    ]
    manifest = f"{ROOT}/corpus/clips.jsonl"
    storage.write_text(
        manifest, "".join(json.dumps({**r, "spoken_language": "en"}) + "\n" for r in rows)
    )
    local_out = str(tmp_path / "prepared")
    result = prepare.prepare(
        manifest, local_out, clips.PrepareOptions(), num_workers=1, progress=False
    )
    assert (result.num_inputs, result.num_written, result.num_reported) == (3, 2, 1)
    assert result.reported_by_reason == {"missing_file": 1}
    assert f"{ROOT}/corpus/clips/none.pose: no such file" in result.messages[0]

    remote_out = f"{ROOT}/prepared"
    storage.upload_dir(local_out, remote_out)
    info = prepared.dataset_info(remote_out)
    assert info["splits"]["train"]["num_examples"] == 2
    assert prepared.landmark_config(remote_out) == clips.PrepareOptions().config
    task = prepared.register_prepared_task("gcs_prepared_slt", remote_out)
    assert task.source.splits == ("train",)
    with pytest.raises(FileNotFoundError, match=f"{ROOT}/nothing/dataset_info.json does not"):
        prepared.dataset_info(f"{ROOT}/nothing")


def _write_slt_checkpoint(model_dir: str, config) -> dict[str, np.ndarray]:
    """A checkpoint as `slt.train` leaves it (params and metadata); returns its params."""
    from slt import gin_utils
    from slt.data import landmarks
    from slt.models import model as model_lib
    from slt.models import network, weights
    from slt.training import checkpoints

    lengths = {"landmarks": 8, "inputs": 4, "targets": 4}
    model = model_lib.EncoderDecoderModel(network.Transformer(config))
    shapes = {"encoder_input_tokens": (1, 4), "encoder_landmarks": (1, 8, 255)}
    shapes["decoder_input_tokens"] = (1, 4)
    params = jax.jit(lambda r: model.init_params(r, shapes))(jax.random.key(3))
    metadata = {
        "network_config": gin_utils.dataclass_dict(config),
        "landmark_config": gin_utils.dataclass_dict(landmarks.LandmarkConfig()),
        "task_feature_lengths": lengths,
        "mixture_or_task_name": "fingerspelling_slt_ase_en",
    }
    checkpointer = checkpoints.Checkpointer(storage.join(model_dir, "checkpoints"))
    checkpointer.save(7, {"params": params}, metadata, force=True)
    checkpointer.wait()
    checkpointer.close()
    return {k: np.asarray(v) for k, v in weights.flatten(params).items()}


def test_export_to_gcs_and_import_both_formats_from_there(gcs, tmp_path):
    from slt import export
    from slt.models import weights

    config = tiny_t5_config(vocab_size=40)
    params = _write_slt_checkpoint(f"{ROOT}/run", config)
    text = {k: v for k, v in params.items() if not k.startswith(weights.NEW_PARAMETER_PREFIXES)}

    hf_dir, t5x_dir = f"{ROOT}/exports/hf", f"{ROOT}/exports/t5x/checkpoint_7"
    left_out = export.export(f"{ROOT}/run", hf_dir, "hf")
    assert left_out == ["encoder/landmark_embedder/bias", "encoder/landmark_embedder/kernel"]
    assert storage.listdir(hf_dir) == ["config.json", "model.safetensors"]  # no temporaries
    assert json.loads(storage.read_text(f"{hf_dir}/config.json"))["d_model"] == config.emb_dim
    export.export(f"{ROOT}/run", t5x_dir, "t5x")
    assert "target.encoder.layers_0.attention.query.kernel" in storage.listdir(t5x_dir)

    for source in (f"hf:{hf_dir}", f"t5x:{t5x_dir}"):
        kind, _, path = source.partition(":")
        read = weights.read_hf_checkpoint if kind == "hf" else weights.read_t5x_checkpoint
        loaded, _ = read(path)
        assert loaded.keys() == text.keys(), source
        for name, value in text.items():
            np.testing.assert_array_equal(loaded[name], value, err_msg=f"{source} {name}")
    # As the initial checkpoint of a run: text weights from gs://, the rest fresh.
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), weights.unflatten(params)
    )
    initial = weights.flatten(weights.hf_params_loader(hf_dir, abstract))
    for name, value in text.items():
        np.testing.assert_array_equal(initial[name], value, err_msg=name)
    assert not initial["encoder/landmark_embedder/bias"].any()

    with pytest.raises(FileExistsError, match=f"--output {hf_dir} exists and is not empty"):
        export.export(f"{ROOT}/run", hf_dir, "hf")
    with pytest.raises(storage.StorageError, match="--output=gs://no-such-bucket/hf cannot be"):
        export.export(str(tmp_path / "never read"), "gs://no-such-bucket/hf", "hf")


def test_bleurt_checkpoint_on_gcs_scores_as_on_disk(gcs, tmp_path):
    from test_eval_metrics import make_tiny_bleurt_checkpoint

    from slt.evaluation import bleurt

    local = make_tiny_bleurt_checkpoint(tmp_path / "tiny")
    storage.upload_dir(local, f"{ROOT}/bleurt/tiny")
    pairs = (["Peru", "January Peru Chile Peru"], ["Chiles", "Chiles"])
    from_gcs = bleurt.BleurtScorer(f"{ROOT}/bleurt/tiny")
    assert from_gcs.name == "tiny-test" and from_gcs.checkpoint_dir == f"{ROOT}/bleurt/tiny"
    expected = bleurt.BleurtScorer(str(local)).score(*pairs)
    np.testing.assert_allclose(from_gcs.score(*pairs), expected, rtol=1e-6)
