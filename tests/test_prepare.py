"""python -m slt.prepare on a manifest mixing real .pose files, arrays and broken inputs."""

import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from helpers import TEST_DATA

from slt import prepare
from slt.data import landmarks, shards
from slt.io import arrays, clips, pose_files
from slt.tasks.fingerspelling import corpus as fingerspelling

REDUCED = os.path.join(TEST_DATA, "mediapipe_reduced.pose")
CONFIG = landmarks.LandmarkConfig(max_frames=100)
OPTIONS = clips.PrepareOptions(config=CONFIG, min_frames=2)


def _letters(sign_language="ase"):
    return {text: path for path, _, sign, text in fingerspelling._index() if sign == sign_language}


def _build_manifest(tmp_path):
    """Writes the test inputs; returns (manifest path, {id: expected reason or None})."""
    letters = _letters()
    rows, expected = [], {}

    def add(row, reason=None):
        rows.append(json.dumps(row, ensure_ascii=False))
        expected[row["id"]] = reason

    for letter in "ABCDEF":
        add(
            {
                "id": f"letter-{letter}",
                "path": letters[letter],
                "text": letter,
                "sign_language": "ase",
                "spoken_language": "en",
            }
        )
    real = pose_files.read_pose(letters["G"])
    add(
        {
            "id": "reduced",
            "path": REDUCED,
            "text": "ein Beispiel",
            "sign_language": "gsg",
            "spoken_language": "de",
            "start": 1.0,
            "end": 5.0,
        }
    )
    add(
        {
            "id": "multi",
            "path": REDUCED,
            "sign_language": "sgg",
            "spoken_language": "de",
            "end": 6.0,
            "captions": [
                {"text": "erster Satz", "start": 0.0, "end": 2.5},
                {"text": "zweiter", "start": 2.5, "end": 6.0},
            ],
        }
    )
    # Real landmarks as arrays: .npy (no fps stored: give it), .npz (fps inside).
    np.save(tmp_path / "g.npy", np.where(real.present[..., None], real.points, 0.0))
    add(
        {
            "id": "npy",
            "path": "g.npy",
            "text": "G",
            "sign_language": "ase",
            "spoken_language": "en",
            "fps": real.fps,
        }
    )
    arrays.write_npz(tmp_path / "g.npz", real.points, real.present, real.fps)
    add(
        {
            "id": "npz",
            "path": str(tmp_path / "g.npz"),
            "text": "G",
            "sign_language": "ase",
            "spoken_language": "en",
        }
    )
    # Broken inputs, one per kind.
    add(
        {
            "id": "missing",
            "path": "nope.pose",
            "text": "x",
            "sign_language": "ase",
            "spoken_language": "en",
        },
        "missing_file",
    )
    (tmp_path / "corrupt.pose").write_bytes(b"\x00\x01garbage")
    add(
        {
            "id": "corrupt",
            "path": "corrupt.pose",
            "text": "x",
            "sign_language": "ase",
            "spoken_language": "en",
        },
        "corrupt_pose",
    )
    data = pathlib.Path(letters["H"]).read_bytes()
    (tmp_path / "truncated.pose").write_bytes(data[: len(data) - 1000])
    add(
        {
            "id": "truncated",
            "path": "truncated.pose",
            "text": "x",
            "sign_language": "ase",
            "spoken_language": "en",
        },
        "truncated_pose",
    )
    np.save(tmp_path / "empty.npy", np.zeros((0, 586, 3), np.float32))
    add(
        {
            "id": "zero",
            "path": "empty.npy",
            "text": "x",
            "sign_language": "ase",
            "spoken_language": "en",
        },
        "zero_frames",
    )
    nan = np.where(real.present[..., None], real.points, 0.0)
    nan[3, 40, 0] = np.inf
    nan[5, 11, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    add(
        {
            "id": "nan",
            "path": "nan.npy",
            "text": "x",
            "sign_language": "ase",
            "spoken_language": "en",
        },
        "non_finite",
    )
    np.save(tmp_path / "openpose.npy", np.ones((10, 137, 3), np.float32))
    add(
        {
            "id": "points",
            "path": "openpose.npy",
            "text": "x",
            "sign_language": "ase",
            "spoken_language": "en",
        },
        "wrong_point_count",
    )
    np.save(tmp_path / "short.npy", nan[:2] * 0 + 1)
    add(
        {
            "id": "short",
            "path": "short.npy",
            "text": "x",
            "sign_language": "ase",
            "spoken_language": "en",
        },
        "too_short",
    )
    add(
        {
            "id": "long",
            "path": REDUCED,
            "text": "lang",
            "sign_language": "gsg",
            "spoken_language": "de",
        },
        "too_long",
    )  # 170 frames: 85 > max_frames 80
    add(
        {
            "id": "empty-caption",
            "path": letters["A"],
            "text": "  ",
            "sign_language": "ase",
            "spoken_language": "en",
        },
        "empty_caption",
    )
    add(
        {
            "id": "sign",
            "path": letters["A"],
            "text": "A",
            "sign_language": "xxx",
            "spoken_language": "en",
        },
        "unknown_sign_language",
    )
    add(
        {
            "id": "spoken",
            "path": letters["A"],
            "text": "A",
            "sign_language": "ase",
            "spoken_language": "klingon",
        },
        "unknown_spoken_language",
    )
    add(
        {
            "id": "order",
            "path": letters["A"],
            "text": "A",
            "sign_language": "ase",
            "spoken_language": "en",
            "start": 2.0,
            "end": 1.0,
        },
        "start_after_end",
    )
    lines = [r.encode("utf-8") for r in rows]
    # A caption with bytes that are not UTF-8 (Latin-1 "é").
    lines.append(
        b'{"id": "latin1", "path": "g.npy", "text": "caf\xe9", '
        b'"sign_language": "ase", "spoken_language": "en", "fps": 30}'
    )
    expected["latin1"] = "caption_not_utf8"
    lines.append(b'{"id": "broken json", ')
    expected[f"manifest.jsonl:{len(lines)}"] = "bad_manifest_row"
    path = tmp_path / "manifest.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path), expected


def _read_split(output_dir, split="train"):
    info = json.loads(pathlib.Path(output_dir, shards.INFO_FILE).read_text(encoding="utf-8"))
    files = [os.path.join(output_dir, n) for n in info["splits"][split]["shards"]]
    return info, [
        {k: v.numpy() for k, v in shards.parse(r).items()} for r in tf.data.TFRecordDataset(files)
    ]


def test_prepare_writes_or_reports_every_input(tmp_path):
    manifest_path, expected = _build_manifest(tmp_path)
    out = str(tmp_path / "out")
    # max_frames 80: the 170-frame reduced file (85 frames at step 2) is too long
    # whole, but its 4-second and 7-second crops fit.
    options = clips.PrepareOptions(config=landmarks.LandmarkConfig(max_frames=80))
    result = prepare.prepare(
        manifest_path, out, options, examples_per_shard=6, num_workers=2, progress=False
    )
    bad = {k: v for k, v in expected.items() if v}
    assert result.num_inputs == len(expected) == 24
    assert result.num_written == len(expected) - len(bad) == 10
    assert result.num_inputs == result.num_written + result.num_reported
    with open(os.path.join(out, "report.jsonl"), encoding="utf-8") as f:
        report = [json.loads(line) for line in f]
    assert {r["id"]: r["reason"] for r in report} == bad
    for record in report:  # every message names the input and says what to do
        assert record["message"] and record["split"] == "train"
        if record["reason"] not in ("bad_manifest_row",):
            assert (
                os.path.basename(record["path"]) in record["message"]
                or record["id"] in record["message"]
            )
    assert result.reported_by_reason == dict.fromkeys(bad.values(), 1)

    info, examples = _read_split(out)
    split = info["splits"]["train"]
    assert split["num_examples"] == 10 and split["num_reported"] == 14
    assert split["num_inputs"] == 24 and len(split["shards"]) == 4
    assert split["languages"] == {"ase-en": 8, "gsg-de": 1, "sgg-de": 1}
    assert sum(split["frames"]["histogram"]["counts"]) == 10
    assert split["absent_points"]["FACE_LANDMARKS:4"] == 2  # the two reduced clips
    assert info["landmark_config"] == json.loads(options.config.to_json())
    saved = pathlib.Path(out, shards.CONFIG_FILE).read_text(encoding="utf-8")
    assert landmarks.LandmarkConfig.from_json(saved) == options.config

    by_id = {e["id"].decode(): e for e in examples}
    assert [e["id"].decode() for e in examples][:6] == [f"letter-{c}" for c in "ABCDEF"]
    # Frames are exactly what the landmark pipeline gives for the same file.
    pose = pose_files.read_pose(_letters()["C"])
    np.testing.assert_array_equal(
        by_id["letter-C"]["landmarks"], landmarks.to_frames(*pose.youtube_asl(), options.config)
    )
    assert by_id["letter-C"]["text"] == b"C" and by_id["letter-C"]["fps"] == pose.fps / 2
    # npy, npz and .pose of the same recording give the same frames.
    np.testing.assert_array_equal(by_id["npy"]["landmarks"], by_id["npz"]["landmarks"])
    # Start/end crop: 1 s to 5 s at 24 fps = 96 frames -> 48 at step 2.
    assert by_id["reduced"]["landmarks"].shape == (48, 255)
    assert by_id["reduced"]["start"] == 1.0 and by_id["reduced"]["end"] == 5.0
    # Multi-caption: texts joined, caption bounds in stored frames (12 fps).
    multi = by_id["multi"]
    assert multi["text"].decode() == "erster Satz zweiter"
    assert [t.decode() for t in multi["caption_texts"]] == ["erster Satz", "zweiter"]
    np.testing.assert_array_equal(multi["caption_start_frames"], [0, 30])
    np.testing.assert_array_equal(multi["caption_end_frames"], [30, 72])
    assert multi["landmarks"].shape == (72, 255)  # 6 s at 24 fps, every second frame


def test_resume_skips_finished_shards_and_strict_fails(tmp_path, capsys):
    manifest_path, expected = _build_manifest(tmp_path)
    out = str(tmp_path / "out")
    options = clips.PrepareOptions(config=landmarks.LandmarkConfig(max_frames=80))
    first = prepare.prepare(
        manifest_path, out, options, examples_per_shard=10, num_workers=1, progress=False
    )
    assert (first.shards_written, first.shards_skipped) == (3, 0)
    before = {
        n: pathlib.Path(out, n).read_bytes()
        for n in os.listdir(out)
        if ".tfrecord-" in n and not n.endswith(".json")
    }
    os.remove(os.path.join(out, shards.shard_name("train", 1, 3) + ".done.json"))
    again = prepare.prepare(
        manifest_path, out, options, examples_per_shard=10, num_workers=1, progress=False
    )
    assert (again.shards_written, again.shards_skipped) == (1, 2)
    after = {n: pathlib.Path(out, n).read_bytes() for n in before}
    assert after == before  # the redone shard is byte-identical
    assert again.num_reported == first.num_reported == 14
    # Another landmark config into the same directory is refused.
    with pytest.raises(ValueError, match="another landmark config"):
        prepare.prepare(manifest_path, out, clips.PrepareOptions(), num_workers=1, progress=False)
    # --strict: same messages, exit status 1, no dataset_info for the split.
    strict_out = str(tmp_path / "strict")
    status = prepare.main(
        [
            "--manifest",
            manifest_path,
            "--output_dir",
            strict_out,
            "--strict",
            "--num_workers",
            "1",
            "--no_progress",
            "--max_frames",
            "80",
        ]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert "error: " in err and "truncated.pose: the header promises" in err
    assert not os.path.exists(os.path.join(strict_out, shards.INFO_FILE))
    assert (
        len(pathlib.Path(strict_out, "report.jsonl").read_text(encoding="utf-8").splitlines()) == 14
    )
    # A strict re-run over a directory a lenient run completed withdraws the split.
    assert (
        prepare.main(
            [
                "--manifest",
                manifest_path,
                "--output_dir",
                out,
                "--strict",
                "--num_workers",
                "1",
                "--no_progress",
                "--max_frames",
                "80",
                "--examples_per_shard",
                "10",
            ]
        )
        == 1
    )
    assert not os.path.exists(os.path.join(out, shards.INFO_FILE))


def test_tsv_manifest(tmp_path):
    letters = _letters()
    tsv = tmp_path / "clips.tsv"
    tsv.write_text(
        "path\ttext\tsign_language\tspoken_language\tstart\tend\n"
        f"{letters['A']}\tA\tase\ten\t\t\n"
        f"{letters['B']}\tB\tase\ten\t0\t0.5\n"
        f"{letters['C']}\t\tase\ten\t\t\n"
    )
    out = str(tmp_path / "out")
    status = prepare.main(
        [
            "--manifest",
            str(tsv),
            "--output_dir",
            out,
            "--num_workers",
            "1",
            "--no_progress",
            "--normalization",
            "shoulder",
        ]
    )
    assert status == 0
    info, examples = _read_split(out)
    assert [e["text"] for e in examples] == [b"A", b"B"]
    assert info["landmark_config"]["normalization"] == "shoulder"
    with open(os.path.join(out, "report.jsonl"), encoding="utf-8") as f:
        report = [json.loads(line) for line in f]
    assert [(r["id"], r["reason"]) for r in report] == [("clips.tsv:4", "empty_caption")]


def test_missing_manifest_is_one_error_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"--manifest=.*nope.jsonl: no such file"):
        prepare.main(["--manifest", str(tmp_path / "nope.jsonl"), "--output_dir", str(out)])
    assert not out.exists()  # no landmark_config.json left behind


def test_tfds_export_without_its_package_says_what_to_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("sign_language_datasets") is not None:
        pytest.skip("sign-language-datasets is installed here")
    from slt.io import tfds_export

    argv = ["--tfds_name=rwth_phoenix2014_t/poses", "--sign_language=gsg"]
    argv += ["--spoken_language=de", f"--output_dir={tmp_path / 'out'}"]
    with pytest.raises(ModuleNotFoundError, match="pip install sign-language-datasets"):
        tfds_export.main(argv)
    assert not (tmp_path / "out").exists()
