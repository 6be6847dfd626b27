"""slt.prepare on Apache Beam writes what the local path writes, byte for byte."""

import json
import os
import pathlib

import pytest
from helpers import TEST_DATA
from test_prepare import _build_manifest

from slt import prepare, prepare_beam
from slt.data import landmarks, shards
from slt.io import clips, video

OPTIONS = clips.PrepareOptions(config=landmarks.LandmarkConfig(max_frames=80))
MULTI_PROCESS = [
    "--runner=DirectRunner",
    "--direct_running_mode=multi_processing",
    "--direct_num_workers=2",
]
IN_PROCESS = ["--runner=DirectRunner", "--direct_num_workers=1"]


def _with_video(manifest_path: str) -> str:
    """The manifest plus the test video (written, or `video_backend_missing` without
    the MediaPipe environment: either way both paths must agree)."""
    row = {
        "id": "video",
        "path": os.path.join(TEST_DATA, "test_video.mp4"),
        "text": "a signer",
        "sign_language": "ase",
        "spoken_language": "en",
    }
    with open(manifest_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return manifest_path


def _files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in pathlib.Path(directory).iterdir()}


# MediaPipe takes about 12 s for the 58-frame test video, run once by each path: the
# case with the video is slow; the default run covers .pose, arrays and broken inputs.
@pytest.mark.parametrize(
    "with_video", [False, pytest.param(True, marks=pytest.mark.slow, id="video")]
)
def test_beam_multi_process_output_equals_local_path(tmp_path, with_video):
    manifest_path, expected = _build_manifest(tmp_path)
    if with_video:
        manifest_path = _with_video(manifest_path)
    local_dir, beam_dir = tmp_path / "local", tmp_path / "beam"
    local = prepare.prepare(
        manifest_path, str(local_dir), OPTIONS, examples_per_shard=6, num_workers=1, progress=False
    )
    beam, counters = prepare_beam.prepare_beam(
        manifest_path, str(beam_dir), OPTIONS, MULTI_PROCESS, examples_per_shard=6
    )
    assert local.num_inputs == beam.num_inputs == 24 + with_video
    video_written = with_video and video.backend_available()
    assert beam.num_written == 10 + video_written
    assert beam.num_inputs == beam.num_written + beam.num_reported
    assert beam.reported_by_reason == local.reported_by_reason
    assert beam.messages == local.messages
    # Every file: the same shards with the same examples in the same order, the same
    # markers, report, dataset_info and landmark config; no temporary file is left.
    local_files, beam_files = _files(local_dir), _files(beam_dir)
    assert sorted(beam_files) == sorted(local_files)
    num_shards = 4 + with_video
    assert len([n for n in beam_files if n.endswith(f"-of-0000{num_shards}")]) == num_shards
    for name, data in local_files.items():
        assert beam_files[name] == data, name
    # Counters per reason as Beam metrics, matching the report.
    report = [
        json.loads(line)
        for line in (beam_dir / shards.REPORT_FILE).read_text(encoding="utf-8").splitlines()
    ]
    by_reason = {}
    for record in report:
        by_reason[record["reason"]] = by_reason.get(record["reason"], 0) + 1
    assert {k: v for k, v in counters.items() if k not in ("written", "frames", "shards")} == (
        by_reason
    )
    assert counters["written"] == beam.num_written and counters["shards"] == num_shards
    info = json.loads((beam_dir / shards.INFO_FILE).read_text())
    assert counters["frames"] == info["splits"]["train"]["frames"]["total"]
    assert {r["id"]: r["reason"] for r in report} == {
        **{k: v for k, v in expected.items() if v},
        **({"video": "video_backend_missing"} if with_video and not video_written else {}),
    }


def test_dead_worker_is_reported_and_reruns_finish_once(tmp_path, capsys):
    manifest_path, _ = _build_manifest(tmp_path)
    out = tmp_path / "out"
    # Row 2 (letter-C) started 3 times and its worker never came back; row 3 started
    # once (a worker died while it ran) and is tried again.
    attempts = out / prepare_beam.ATTEMPTS_DIR / "train"
    attempts.mkdir(parents=True)
    (attempts / "2").write_text("3")
    (attempts / "3").write_text("1")
    # A dead writer's temporary shard, and a finished shard of another shard count.
    (out / "train.tfrecord-00000-of-00003.tmp-0123abcd").write_bytes(b"partial")
    (out / "train.tfrecord-00000-of-00001").write_bytes(b"old")
    result, counters = prepare_beam.prepare_beam(
        manifest_path, str(out), OPTIONS, IN_PROCESS, examples_per_shard=10
    )
    assert result.num_inputs == 24 and result.num_written == 9
    assert result.num_inputs == result.num_written + result.num_reported
    assert result.reported_by_reason["worker_lost"] == 1 and counters["worker_lost"] == 1
    report = (out / shards.REPORT_FILE).read_text(encoding="utf-8").splitlines()
    lost = [json.loads(line) for line in report if '"worker_lost"' in line]
    assert [r["id"] for r in lost] == ["letter-C"]
    assert "died 3 times" in lost[0]["message"]
    assert not (out / prepare_beam.ATTEMPTS_DIR).exists()
    assert sorted(n for n in os.listdir(out) if ".tfrecord-" in n) == [
        f"train.tfrecord-0000{k}-of-00003{suffix}"
        for k in range(3)
        for suffix in ("", ".done.json")
    ]
    # A re-run of the finished split through the command line writes nothing again.
    before = _files(out)
    status = prepare.main(
        [
            f"--manifest={manifest_path}",
            f"--output_dir={out}",
            "--examples_per_shard=10",
            "--max_frames=80",
            *IN_PROCESS,
        ]
    )
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["shards_written"], summary["shards_skipped"]) == (0, 3)
    assert summary["num_reported"] == 15 and summary["beam_counters"] == {}
    assert _files(out) == before


def test_beam_options_need_a_runner(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare.main(
            [f"--manifest={tmp_path / 'm.jsonl'}", f"--output_dir={tmp_path}", "--project=p"]
        )
    assert "--project=p (Beam pipeline options need --runner=NAME)" in capsys.readouterr().err
