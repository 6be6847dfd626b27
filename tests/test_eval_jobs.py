"""slt.eval, slt.infer and slt.translate on a checkpoint trained here (tiny, few steps)."""

import glob
import json
import logging
import os

import gin
import numpy as np
import pytest
import sacrebleu
from helpers import TEST_DATA, tiny_t5_config

from slt import eval as eval_lib
from slt import infer as infer_lib
from slt import train as train_lib  # sets XLA flags before JAX starts
from slt import translate
from slt.data import landmarks
from slt.evaluation import evaluate as evaluate_lib
from slt.evaluation import prediction_files, trained_model
from slt.io import video
from slt.tasks.fingerspelling import corpus as fingerspelling
from slt.training import checkpoints

TASK = "fingerspelling_slt_ase_en"
# MediaPipe runs in an environment of its own (as in tests/test_video.py): the test that
# extracts landmarks from a video skips, saying how to install it, where it is absent.
needs_mediapipe = pytest.mark.skipif(
    not video.backend_available(),
    reason=f"no MediaPipe environment at {video.mediapipe_python()}; install it with "
    f"`{video.INSTALL_COMMAND}` (CI does this in .ci/run)",
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A checkpoint of a tiny model trained for a few steps, plus its final eval."""
    model_dir = str(tmp_path_factory.mktemp("run"))
    train_lib.train(
        model_dir=model_dir,
        mixture_or_task_name=TASK,
        task_feature_lengths={"landmarks": 160, "inputs": 24, "targets": 24},
        batch_size=16,
        train_steps=8,
        checkpoint_config=checkpoints.CheckpointConfig(period=100),
        log_period=4,
        network_config=tiny_t5_config(landmark_stride=2),
        eval_config=evaluate_lib.EvalConfig(split="test", batch_size=32),
    )
    return model_dir


def _read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_eval_writes_metrics_equal_to_sacrebleu_on_its_predictions(model_dir, tmp_path):
    out = str(tmp_path / "eval")
    results = eval_lib.evaluate(
        checkpoint=model_dir, output_dir=out, batch_size=32, show_progress=False
    )
    with open(os.path.join(out, "metrics.json")) as f:
        written = json.load(f)[TASK]
    assert written == results[TASK]
    predictions = _read_jsonl(os.path.join(out, f"{TASK}.test.predictions.jsonl"))
    hyps, refs = [p["prediction"] for p in predictions], [p["target"] for p in predictions]
    assert written["num_examples"] == len(predictions) == 127
    assert written["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert written["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert written["empty_rate"] == sum(not h.strip() for h in hyps) / len(hyps)
    assert 0.0 <= written["language_accuracy"] <= 1.0 and written["target_language"] == "en"
    assert written["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert written["language_id_signature"].startswith("lingua:")
    assert "bleurt" not in written
    # The restored parameters decode exactly as the trained ones did in slt.train.
    trained = _read_jsonl(os.path.join(model_dir, "eval", f"{TASK}.test.predictions.jsonl"))
    assert [p["prediction"] for p in trained] == hyps
    assert [p["id"] for p in trained] == [p["id"] for p in predictions]

    with open(os.path.join(out, "metrics.md"), encoding="utf-8") as f:
        table = f.read()
    assert f"| {TASK} | en | 127 | {written['bleu']:.2f} | {written['chrf']:.2f} |" in table
    assert "BLEURT: not computed" in table
    import matplotlib.image

    assert matplotlib.image.imread(os.path.join(out, "metrics.png")).shape[0] >= 400
    import tensorflow as tf

    events = glob.glob(os.path.join(out, "events.out.tfevents.*"))
    tags = {
        v.tag: v for e in tf.compat.v1.train.summary_iterator(events[0]) for v in e.summary.value
    }
    assert f"test/{TASK}/chrf" in tags and f"test/{TASK}/language_accuracy" in tags


def test_other_decode_options_write_to_another_directory(model_dir):
    """A second evaluation with other decode options keeps the first one's results."""
    eval_lib.evaluate(checkpoint=model_dir, batch_size=32, show_progress=False)
    greedy_path = os.path.join(model_dir, "eval_8_test", "metrics.json")
    with open(greedy_path, "rb") as f:
        greedy = f.read()
    options = {"decode_method": "beam", "num_beams": 2}
    beam = eval_lib.evaluate(
        checkpoint=model_dir, batch_size=32, show_progress=False, decode_options=options
    )
    beam_dir = os.path.join(model_dir, "eval_8_test_decode_method-beam_num_beams-2")
    with open(os.path.join(beam_dir, "metrics.json")) as f:
        assert json.load(f)[TASK] == beam[TASK]
    with open(greedy_path, "rb") as f:
        assert f.read() == greedy


def test_missing_split_fails_before_decoding(model_dir, tmp_path):
    with pytest.raises(
        ValueError,
        match=rf"task {TASK} has no split 'dev'; it has "
        r"\['test', 'train', 'validation'\]",
    ):
        eval_lib.evaluate(checkpoint=model_dir, split="dev", output_dir=str(tmp_path))
    assert not os.listdir(tmp_path)


def test_command_line_binds_the_partitioning_and_distributed_groups(model_dir):
    """`slt.PartitioningConfig` and `slt.DistributedConfig` bindings on the command line
    reach slt.eval and slt.infer (each fails here before decoding, on purpose)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.raises(ValueError, match=r"mesh_shape \(2, 1, 1\) needs 2 devices"):
            eval_lib.main(
                [
                    "--gin_file=runs/eval.gin",
                    f'--gin.CHECKPOINT="{model_dir}"',
                    "--gin.slt.PartitioningConfig.mesh_shape=(2, 1, 1)",
                ]
            )
        gin.clear_config()
        with pytest.raises(ValueError, match="coordinator address '127.0.0.1:1' is set"):
            infer_lib.main(
                [
                    "--gin_file=runs/infer.gin",
                    f'--gin.CHECKPOINT="{model_dir}"',
                    '--gin.OUTPUT_DIR="/nonexistent"',
                    '--gin.slt.DistributedConfig.coordinator_address="127.0.0.1:1"',
                ]
            )
    finally:
        gin.clear_config()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_infer_resumes_after_an_interruption(model_dir, tmp_path):
    out = str(tmp_path / "infer")

    def interrupt(chunk, path):
        raise KeyboardInterrupt(f"interrupted after shard {chunk}")

    kwargs = {
        "checkpoint": model_dir,
        "output_dir": out,
        "chunk_size": 48,
        "batch_size": 16,
        "show_progress": False,
    }
    with pytest.raises(KeyboardInterrupt):
        infer_lib.infer(on_chunk_written=interrupt, **kwargs)
    first = os.path.join(out, f"{TASK}.test.predictions-00000.jsonl")
    assert sorted(os.listdir(out)) == [
        f"{TASK}.test.predictions-00000.jsonl",
        f"{TASK}.test.run.json",
    ]
    stat = os.stat(first)
    # A shard cut off mid-write stays a temporary file and is redone.
    with open(os.path.join(out, f"{TASK}.test.predictions-00001.jsonl.tmp"), "w") as f:
        f.write('{"id": "cut')

    counts = infer_lib.infer(**kwargs)[TASK]
    assert counts == {
        "shards_written": 2,
        "shards_skipped": 1,
        "examples_decoded": 127 - 48,
        "examples": 127,
    }
    assert os.stat(first).st_mtime_ns == stat.st_mtime_ns  # not rewritten
    rows = prediction_files.read_predictions(out, TASK, "test")
    trained = _read_jsonl(os.path.join(model_dir, "eval", f"{TASK}.test.predictions.jsonl"))
    assert [(r["id"], r["prompt"], r["prediction"], r["target"]) for r in rows] == [
        (p["id"], p["prompt"], p["prediction"], p["target"]) for p in trained
    ]
    scores = np.array([r["score"] for r in rows])
    assert np.isfinite(scores).all() and (scores < 0).all()

    # Finished: nothing is decoded again; other settings are refused.
    assert infer_lib.infer(**kwargs)[TASK]["examples_decoded"] == 0
    os.remove(os.path.join(out, f"{TASK}.test.done.json"))
    with pytest.raises(ValueError, match="chunk_size"):
        infer_lib.infer(**{**kwargs, "chunk_size": 32})


def test_translate_reads_pose_and_npy_and_reports_bad_files(model_dir, tmp_path, capsys):
    letters = [path for path, _, sign, _ in fingerspelling._index() if sign == "ase"][:2]
    from slt.io import readers

    pose = readers.read_holistic(letters[0])
    # The same landmarks as an array file: undetected points are zeros there.
    npy = str(tmp_path / "letter.npy")
    np.save(npy, np.where(pose.present[..., None], pose.points, 0.0).astype(np.float32))
    bad = str(tmp_path / "bad.npy")
    with open(bad, "wb") as f:
        f.write(b"not an array")
    missing = str(tmp_path / "missing.pose")

    status = translate.main(
        [
            "--checkpoint",
            model_dir,
            "--target_lang",
            "en",
            letters[0],
            bad,
            npy,
            missing,
            letters[1],
        ]
    )
    out, err = capsys.readouterr()
    assert status == 1
    lines = dict(line.split("\t") for line in out.strip().split("\n"))
    assert list(lines) == [letters[0], npy, letters[1]]
    assert lines[letters[0]] == lines[npy]  # same landmarks, same translation
    assert f"{bad}: error:" in err and f"{missing}: error:" in err and "no such file" in err

    # The prompt is the one picked: a language the model never saw still decodes.
    restored = trained_model.load_trained_model(model_dir)
    translations, errors = translate.translate_files(restored, [letters[0]], "<slt> <ase> <de>")
    assert not errors and isinstance(translations[letters[0]], str)


@needs_mediapipe
def test_translate_video(model_dir, capsys):
    video = os.path.join(TEST_DATA, "test_video.mp4")
    status = translate.main(["--checkpoint", model_dir, video])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.startswith(video + "\t")


def test_infer_on_a_prepared_dataset(model_dir, tmp_path):
    from slt import prepare
    from slt.io import clips

    letters = [(path, text) for path, _, sign, text in fingerspelling._index() if sign == "ase"][:3]
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text(
        "".join(
            json.dumps(
                {
                    "path": path,
                    "text": text,
                    "sign_language": "ase",
                    "spoken_language": "en",
                    "id": f"letter-{i}",
                }
            )
            + "\n"
            for i, (path, text) in enumerate(letters)
        )
    )
    restored = trained_model.load_trained_model(model_dir)
    metadata = trained_model.read_metadata(model_dir)
    assert landmarks.LandmarkConfig(**metadata["landmark_config"]) == restored.landmark_config
    for name, config in (("data", restored.landmark_config), ("other", None)):
        options = clips.PrepareOptions(config=config) if config else clips.PrepareOptions()
        result = prepare.prepare(
            str(manifest),
            str(tmp_path / name),
            options,
            split="test",
            num_workers=1,
            progress=False,
        )
        assert result.num_written == 3, result.messages

    out = str(tmp_path / "infer")
    counts = infer_lib.infer(
        checkpoint=model_dir,
        output_dir=out,
        batch_size=16,
        prepared_data_dir=str(tmp_path / "data"),
        show_progress=False,
    )
    assert counts == {
        "prepared_data": {
            "shards_written": 1,
            "shards_skipped": 0,
            "examples_decoded": 3,
            "examples": 3,
        }
    }
    rows = prediction_files.read_predictions(out, "prepared_data", "test")
    assert [(r["id"], r["prompt"], r["target"]) for r in rows] == [
        (f"letter-{i}", "<slt> <ase> <en>", text) for i, (_, text) in enumerate(letters)
    ]
    # The same clips through slt.translate decode to the same text.
    translations, errors = translate.translate_files(
        restored, [path for path, _ in letters], "<slt> <ase> <en>"
    )
    assert not errors
    assert [translations[path] for path, _ in letters] == [r["prediction"] for r in rows]

    # slt.eval reads the same prepared split; its metrics are sacrebleu's.
    results = eval_lib.evaluate(
        checkpoint=model_dir,
        prepared_data_dir=str(tmp_path / "data"),
        output_dir=str(tmp_path / "eval"),
        batch_size=16,
        show_progress=False,
    )["prepared_data"]
    hyps, refs = [r["prediction"] for r in rows], [r["target"] for r in rows]
    assert results["num_examples"] == 3
    assert results["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)

    with pytest.raises(ValueError, match=r"another landmark config .*feature_mean"):
        infer_lib.infer(
            checkpoint=model_dir,
            output_dir=out,
            prepared_data_dir=str(tmp_path / "other"),
            show_progress=False,
        )
