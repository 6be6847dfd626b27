"""Manifests from caption files (WebVTT, SRT) and How2Sign's CSV, broken inputs included."""

import json
import os

import numpy as np
import pytest

from slt import manifest_makers, prepare
from slt.data import captions, landmarks
from slt.io import arrays, clips, pose_files
from slt.tasks import languages
from slt.tasks.fingerspelling import corpus as fingerspelling

VTT = """WEBVTT
Kind: captions
Language: en

NOTE written by the test

00:00:00.500 --> 00:00:02.000 align:start position:0%
<c.colorE5E5E5>Hello</c> <v Roger>there,</v>
friends.

00:00:02.000 --> 00:00:0x.500
a bad timestamp

00:00:02.500 --> 00:00:04.000

00:00:01.500 --> 00:00:03.000
overlaps the cue before

00:00:04.000 --> 00:00:04.100
too short

00:00:05.000 --> 00:01:10.000
too long

00:00:06.000 --> 00:00:05.500
backwards

00:00:10.000 --> 00:00:12.000
{long}

00:00:12.000 --> 00:00:14.000
second clip one

00:00:14.000 --> 00:00:15.000
second clip two

00:00:30.000 --> 00:00:31.000
after a gap

just some text
""".format(long="x" * 301)

SRT = """1
00:00:01,000 --> 00:00:02,000
<i>Good</i> morning

2
00:00:02,000 --> 00:00:0z,000
bad

3
00:00:03,000 --> 00:00:04,000
caf\xe9 au lait
"""


def _pose_npz(path, seconds=40.0, fps=10.0):
    """A real recording's landmarks, repeated to `seconds`, as .npz with its fps."""
    letter = next(p for p, _, sign, _ in fingerspelling._index() if sign == "ase")
    pose = pose_files.read_pose(letter)
    reps = int(np.ceil(seconds * fps / pose.num_frames))
    points = np.concatenate([pose.points] * reps)[: int(seconds * fps)]
    present = np.concatenate([pose.present] * reps)[: int(seconds * fps)]
    arrays.write_npz(path, points, present, fps)


def _downloads(root):
    root.mkdir()
    (root / "sub").mkdir()
    _pose_npz(root / "abc.npz")
    (root / "abc.en.vtt").write_bytes(b"\xef\xbb\xbf" + VTT.encode("utf-8"))  # with a BOM
    (root / "abc.de.vtt").write_text("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nHallo\n")
    _pose_npz(root / "sub" / "def.npz")
    (root / "sub" / "def.srt").write_bytes(SRT.encode("latin-1"))  # not UTF-8
    _pose_npz(root / "nocaps.npz")
    (root / "orphan.vtt").write_text("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nalone\n")


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _reasons(report):
    counts = {}
    for record in report:
        counts[record["reason"]] = counts.get(record["reason"], 0) + 1
    return counts


def test_vtt_cues_kept_and_dropped_with_reasons():
    kept, dropped = captions.parse(VTT, "a.vtt")
    assert [c.text for c in kept] == [
        "Hello there, friends.",
        "second clip one",
        "second clip two",
        "after a gap",
    ]
    assert (kept[0].start, kept[0].end) == (0.5, 2.0)
    assert [(d.block, d.reason) for d in dropped] == [
        (4, "bad_timestamp"),
        (5, "empty_cue"),
        (6, "overlapping_cue"),
        (7, "too_short"),
        (8, "too_long"),
        (9, "start_after_end"),
        (10, "text_too_long"),
        (14, "bad_cue"),
    ]
    assert "a.vtt: block 4" in dropped[0].message and "-->" in dropped[0].message


def test_youtube_sentence_and_clip_manifests_prepare(tmp_path, capsys):
    root = tmp_path / "downloads"
    _downloads(root)
    output = tmp_path / "sentences.jsonl"
    argv = ["youtube", f"--input_dir={root}", "--sign_language=ase", "--spoken_language=en"]
    assert manifest_makers.main([*argv, f"--output={output}"]) == 0
    counts = json.loads(capsys.readouterr().out)
    # abc.en.vtt: 12 cues, 4 kept; def.srt: 3 cues, 1 kept.
    assert counts["captions"] == 15 and counts["captions_kept"] == 5 and counts["rows"] == 5
    assert counts["captions"] == counts["captions_kept"] + counts["captions_dropped"]
    report = _jsonl(tmp_path / "sentences.report.jsonl")
    assert _reasons(report) == {
        "bad_timestamp": 2,
        "empty_cue": 1,
        "overlapping_cue": 1,
        "too_short": 1,
        "too_long": 1,
        "start_after_end": 1,
        "text_too_long": 1,
        "bad_cue": 1,
        "caption_not_utf8": 1,
        "other_language": 1,
        "no_captions": 1,
        "no_video": 1,
    }
    assert counts["dropped_by_reason"] == _reasons(report)
    cue_drops = [r for r in report if r["reason"] in captions.DROP_REASONS]
    assert len(cue_drops) == counts["captions_dropped"] == 10
    latin = next(r for r in report if r["reason"] == "caption_not_utf8")
    assert latin["file"].endswith("def.srt") and latin["start"] == 3.0
    rows = _jsonl(output)
    assert [r["id"] for r in rows] == [
        "abc:00000",
        "abc:00001",
        "abc:00002",
        "abc:00003",
        os.path.join("sub", "def") + ":00000",
    ]
    assert rows[0] == {
        "id": "abc:00000",
        "path": os.path.join("downloads", "abc.npz"),
        "text": "Hello there, friends.",
        "sign_language": "ase",
        "spoken_language": "en",
        "start": 0.5,
        "end": 2.0,
    }
    assert rows[4]["text"] == "Good morning"

    clip_output = tmp_path / "clips.jsonl"
    assert manifest_makers.main([*argv, "--level=clip", f"--output={clip_output}"]) == 0
    capsys.readouterr()
    clip_rows = _jsonl(clip_output)
    # "second clip one/two" share a clip; a 10 s gap and a 14 s gap start new ones.
    assert [[c["text"] for c in r["captions"]] for r in clip_rows] == [
        ["Hello there, friends."],
        ["second clip one", "second clip two"],
        ["after a gap"],
        ["Good morning"],
    ]
    assert (clip_rows[1]["start"], clip_rows[1]["end"]) == (12.0, 15.0)
    # Both manifests prepare cleanly: every row is written.
    options = clips.PrepareOptions(config=landmarks.LandmarkConfig(max_frames=256))
    for path in (output, clip_output):
        result = prepare.prepare(
            str(path), str(tmp_path / f"out_{path.stem}"), options, num_workers=1, progress=False
        )
        assert result.num_reported == 0 and result.num_written == result.num_inputs


def test_languages_checked_like_prepare(tmp_path, capsys):
    root = tmp_path / "d"
    root.mkdir()
    argv = ["youtube", f"--input_dir={root}", f"--output={tmp_path / 'm.jsonl'}"]
    assert manifest_makers.main([*argv, "--sign_language=asl", "--spoken_language=en"]) == 2
    assert "--sign_language 'asl' is not one of" in capsys.readouterr().err
    assert manifest_makers.main([*argv, "--sign_language=ase", "--spoken_language=english"]) == 2
    assert "use a BCP-47 code" in capsys.readouterr().err
    with pytest.raises(ValueError, match="sign_language"):
        manifest_makers.check_languages(
            "xxx", "en", languages.SIGN_LANGUAGES, languages.SPOKEN_LANGUAGES
        )


HOW2SIGN_HEADER = (
    "VIDEO_ID\tVIDEO_NAME\tSENTENCE_ID\tSENTENCE_NAME\tSTART_REALIGNED\tEND_REALIGNED\tSENTENCE\n"
)


def test_how2sign_rows(tmp_path, capsys):
    videos = tmp_path / "raw_videos"
    videos.mkdir()
    _pose_npz(videos / "vid1-1-rgb_front.npz", seconds=20.0)
    csv_path = tmp_path / "how2sign_realigned_test.csv"
    csv_path.write_text(
        HOW2SIGN_HEADER
        + "vid1\tvid1-1-rgb_front\tvid1_0\tvid1_0-1-rgb_front\t1.5\t4.25\tHi, I'm here.\n"
        + "vid1\tvid1-1-rgb_front\tvid1_1\tvid1_1-1-rgb_front\t5\t4\tBackwards.\n"
        + "vid1\tvid1-1-rgb_front\tvid1_2\tvid1_2-1-rgb_front\tsoon\t9\tNo time.\n"
        + "vid1\tvid1-1-rgb_front\tvid1_3\tvid1_3-1-rgb_front\t9\t10\t \n"
        + "vid2\tvid2-1-rgb_front\tvid2_0\tvid2_0-1-rgb_front\t0\t1\tNo video.\n"
        + 'vid1\tvid1-1-rgb_front\tvid1_4\tvid1_4-1-rgb_front\t10\t12\t"Quoted," she said.\n'
    )
    output = tmp_path / "h2s.jsonl"
    argv = ["how2sign", f"--csv={csv_path}", f"--videos_dir={videos}", "--layout=raw"]
    assert manifest_makers.main([*argv, "--extension=.npz", f"--output={output}"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["captions"] == 6 and counts["rows"] == 2
    assert counts["dropped_by_reason"] == {
        "bad_timestamp": 1,
        "empty_caption": 1,
        "missing_video": 1,
        "start_after_end": 1,
    }
    rows = _jsonl(output)
    assert rows[0] == {
        "id": "vid1_0-1-rgb_front",
        "path": os.path.join("raw_videos", "vid1-1-rgb_front.npz"),
        "text": "Hi, I'm here.",
        "sign_language": "ase",
        "spoken_language": "en",
        "start": 1.5,
        "end": 4.25,
    }
    assert rows[1]["text"] == '"Quoted," she said.'  # the release does not quote cells
    # The per-sentence clips layout reads SENTENCE_NAME files; a wrong CSV is refused.
    made = manifest_makers.from_how2sign(str(csv_path), str(videos), str(tmp_path))
    assert made.rows == [] and _reasons(made.report) == {"missing_video": 5, "empty_caption": 1}
    bad = tmp_path / "bad.csv"
    bad.write_text("video,sentence\nx,y\n")
    with pytest.raises(ValueError, match="How2Sign's sentence CSV has"):
        manifest_makers.from_how2sign(str(bad), str(videos), str(tmp_path), layout="raw")
