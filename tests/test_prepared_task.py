"""prepare -> register a seqio task -> a batch through the feature converter."""

import json

import numpy as np
import pytest
import seqio
from helpers import tiny_t5_config

from slt import prepare, tasks
from slt.data import features, landmarks
from slt.evaluation import evaluate as evaluate_lib
from slt.io import clips, pose_files
from slt.tasks import prepared
from slt.tasks.fingerspelling import corpus as fingerspelling
from slt.training import checkpoints


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prepared")
    rows = []
    for path, _, sign, text in fingerspelling._index():
        if sign in ("ase", "gsg") and text in "ABCDE":
            rows.append(
                {
                    "path": path,
                    "text": text,
                    "sign_language": sign,
                    "spoken_language": "en" if sign == "ase" else "de",
                }
            )
    rows.append(
        {"path": "missing.pose", "text": "x", "sign_language": "ase", "spoken_language": "en"}
    )
    manifest = tmp / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(tmp / "data")
    result = prepare.prepare(
        str(manifest),
        out,
        clips.PrepareOptions(),
        split="train",
        examples_per_shard=3,
        num_workers=1,
        progress=False,
    )
    assert result.num_written == 10 and result.num_reported == 1
    return out, rows[:-1]


def test_registered_task_yields_prompted_examples(prepared_dir):
    out, rows = prepared_dir
    task = prepared.register_prepared_task("test_prepared_slt", out)
    assert tasks.landmark_config("test_prepared_slt") == landmarks.LandmarkConfig()
    lengths = {"landmarks": 64, "inputs": 24, "targets": 8}
    examples = list(
        task.get_dataset(lengths, split="train", shuffle=False, num_epochs=1).as_numpy_iterator()
    )
    assert len(examples) == 10
    by_text = {
        (ex["inputs_pretokenized"].decode(), ex["targets_pretokenized"].decode()): ex
        for ex in examples
    }
    assert {k[0] for k in by_text} == {"<slt> <ase> <en>", "<slt> <gsg> <de>"}
    ex = by_text[("<slt> <gsg> <de>", "C")]
    assert ex["inputs"].tolist() == [b + 3 for b in b"<slt> <gsg> <de>"] + [1]
    assert ex["targets"].tolist() == [ord("C") + 3, 1]
    source = next(r["path"] for r in rows if r["sign_language"] == "gsg" and r["text"] == "C")
    pose = pose_files.read_pose(source)
    np.testing.assert_array_equal(ex["landmarks"], landmarks.to_frames(*pose.youtube_asl()))
    # One batch through the model's feature converter.
    converter = features.LandmarkEncDecFeatureConverter()
    batch = next(
        converter(task.get_dataset(lengths, split="train", shuffle=True, seed=0), lengths)
        .batch(4)
        .as_numpy_iterator()
    )
    assert batch["encoder_landmarks"].shape == (4, 64, 255)
    assert batch["encoder_input_tokens"].shape == (4, 24)
    assert batch["decoder_target_tokens"].shape == (4, 8)
    frames = batch["encoder_landmark_mask"].sum(axis=1)
    assert (frames > 0).all() and (frames <= 64).all()


@pytest.mark.parametrize("num_hosts", [2, 5])  # 4 shard files: by file, then by example
def test_hosts_read_disjoint_shares(prepared_dir, num_hosts):
    out, _ = prepared_dir
    source = prepared.register_prepared_task("hosts_prepared_slt", out).source
    ids = []
    for index in range(num_hosts):
        ds = source.get_dataset(
            "train", shuffle=False, shard_info=seqio.ShardInfo(index=index, num_shards=num_hosts)
        )
        ids.append([ex["id"] for ex in ds.as_numpy_iterator()])
    every = [i for host in ids for i in host]
    assert len(every) == len(set(every)) == 10


def test_incomplete_dataset_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete prepared dataset"):
        prepared.register_prepared_task("nope", str(tmp_path))


def test_gin_registers_a_prepared_task(prepared_dir):
    import gin

    from slt import gin_utils

    out, _ = prepared_dir
    gin_utils.register_configurables()

    @gin.configurable("fake_train")
    def fake_train(mixture_or_task_name=gin.REQUIRED):
        return seqio.get_mixture_or_task(mixture_or_task_name)

    with gin.unlock_config():
        gin.parse_config(
            [
                "fake_train.mixture_or_task_name = @slt.prepared_task()",
                "slt.prepared_task.name = 'gin_prepared_slt'",
                f"slt.prepared_task.data_dir = '{out}'",
            ]
        )
    try:
        assert fake_train().name == "gin_prepared_slt"
        assert tasks.landmark_config("gin_prepared_slt") == landmarks.LandmarkConfig()
    finally:
        gin.clear_config()


def test_trainer_trains_on_prepared_shards(prepared_dir, tmp_path):
    """The whole chain: prepared shards -> registered task -> slt.train -> eval."""
    from slt import train as train_lib
    from slt.training import trainer as trainer_lib

    out, rows = prepared_dir
    prepared.register_prepared_task("prepared_train_slt", out)
    model_dir = str(tmp_path / "run")
    results = train_lib.train(
        model_dir=model_dir,
        mixture_or_task_name="prepared_train_slt",
        task_feature_lengths={"landmarks": 32, "inputs": 24, "targets": 8},
        batch_size=10,
        train_steps=30,
        checkpoint_config=checkpoints.CheckpointConfig(period=100),
        log_period=10,
        network_config=tiny_t5_config(),
        optimizer_config=trainer_lib.OptimizerConfig(name="adamw", learning_rate=1e-2),
        eval_config=evaluate_lib.EvalConfig(split="train", batch_size=10),
        tensorboard=False,
    )
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "train" / "metrics.jsonl").read_text("utf-8").splitlines()
    ]
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert results["prepared_train_slt"]["num_examples"] == len(rows)
