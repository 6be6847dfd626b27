"""sign-language-datasets builders as clip sources (slt/tasks/tfds_sources.py).

Each test writes a small `tf.data` dataset whose element structure is exactly what
the real builder's `as_dataset` yields. The structures come from the builders'
`_info()` in github.com/sign-language-processing/datasets
(`sign_language_datasets/datasets/<name>/<name>.py`, commit d71f97f): a PoseFeature
decodes to {data float32 [T,1,N,D], conf float32 [T,1,N], fps int32} (+ path with
include_path), Text to a string, tf.int32 to int32, and Sequence({...}) to a dict of
[n] tensors. The poses are real MediaPipe Holistic recordings (spoken-to-signed's
letters), cut to the builder's point layout.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import seqio
import tensorflow as tf

from slt.data import features, landmarks
from slt.io import arrays, pose_files
from slt.tasks import mixing, sources, tfds_sources
from slt.tasks.fingerspelling import corpus as fingerspelling
from slt.tasks.paper import tasks as paper_tasks

VOCAB = features.byte_vocabulary()
LENGTHS = {"landmarks": 256, "inputs": 64, "targets": 64}
CONFIG = landmarks.LandmarkConfig()
_FACE_203 = [33 + int(n) for n in landmarks.HOLISTIC_LAYOUTS[203][1][1]]


def _text(ids) -> str:
    return VOCAB.decode([int(i) for i in ids])


def _letters(text: str) -> list[pose_files.HolisticPose]:
    paths = {t: p for p, _, sign, t in fingerspelling._index() if sign == "ase"}
    return [pose_files.read_pose(paths[c]) for c in text]


def _layout(pose: pose_files.HolisticPose, n: int):
    """[T, N, 3] points and [T, N] presence of a 586-point recording in layout N:
    543 = pose, 468-point face, hands; 203 = pose, the 128 face contour points, hands."""
    face = list(range(33, 33 + 468)) if n == 543 else _FACE_203
    index = list(range(33)) + face + list(range(511, 553))
    return pose.points[:, index], pose.present[:, index]


def _pose_feature(points, present, fps, path=None):
    feature = {
        "data": points[:, None].astype(np.float32),
        "conf": present[:, None].astype(np.float32),
        "fps": np.int32(fps),
    }
    if path is not None:
        feature["path"] = path
    return feature


def _empty_pose(n, path=None):
    """What PoseFeature.encode_example(None) stores: 0 frames, fps 0."""
    return _pose_feature(np.zeros([0, n, 3]), np.zeros([0, n]), 0, path)


def _pose_spec(n, d=3, path=False):
    spec = {
        "data": tf.TensorSpec([None, 1, n, d], tf.float32),
        "conf": tf.TensorSpec([None, 1, n], tf.float32),
        "fps": tf.TensorSpec([], tf.int32),
    }
    if path:
        spec["path"] = tf.TensorSpec([], tf.string)
    return spec


def _dataset(examples, signature):
    return lambda: tf.data.Dataset.from_generator(
        lambda: iter(examples), output_signature=signature
    )


def _expected(points, present, fps):
    pose = arrays.from_arrays(points[:, None], present[:, None].astype(np.float32), fps, "x")
    return landmarks.to_frames(*pose.youtube_asl(), CONFIG, fps=fps)


def _task(name, source, languages_=None):
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    paper_tasks.add_slt_task(name, source, languages_=languages_, shuffle_buffer_size=8)
    return list(
        seqio.get_mixture_or_task(name)
        .get_dataset(LENGTHS, split="train", shuffle=False)
        .as_numpy_iterator()
    )


def _skipped(dataset):
    return {
        k.split(": ", 1)[1]: v
        for k, v in sources.SKIPPED.counts.items()
        if k.startswith(dataset + ": ")
    }


TEXT = tf.TensorSpec([], tf.string)
INT = tf.TensorSpec([], tf.int32)


def test_rwth_phoenix2014_t_examples_become_slt_examples():
    # _info(), config "poses": id, signer, gloss, text; pose (None, 1, 543, 3).
    signature = {"id": TEXT, "signer": TEXT, "gloss": TEXT, "text": TEXT, "pose": _pose_spec(543)}
    poses = [_layout(p, 543) for p in _letters("AB")]
    examples = [
        {
            "id": f"25October_2010_Monday_tagesschau-{i}",
            "signer": "Signer01",
            "gloss": "REGEN",
            "text": f"es regnet {i}",
            "pose": _pose_feature(*p, 25),
        }
        for i, p in enumerate(poses)
    ]
    source = tfds_sources.InMemoryTfdsSource(
        "phoenix_t",
        "rwth_phoenix2014_t",
        {"train": _dataset(examples, signature)},
        languages=("gsg", "de"),
    )
    got = _task("phoenix_t_slt", source, ("gsg", "de"))
    assert [(_text(e["inputs"]), _text(e["targets"])) for e in got] == [
        ("<slt> <gsg> <de>", "es regnet 0"),
        ("<slt> <gsg> <de>", "es regnet 1"),
    ]
    assert got[0]["id"].decode() == "25October_2010_Monday_tagesschau-0"
    np.testing.assert_allclose(got[1]["landmarks"], _expected(*poses[1], 25), atol=1e-6)
    with pytest.raises(
        ValueError, match="is ase->en, but the rwth_phoenix2014_t builder holds gsg->de"
    ):
        tfds_sources.InMemoryTfdsSource(
            "how2sign", "rwth_phoenix2014_t", {}, languages=("ase", "en")
        )


def _eaf(path, slots, tiers):
    """An ELAN file as the DGS Corpus writes them (TIME_ORDER, time-aligned tiers)."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<ANNOTATION_DOCUMENT AUTHOR="" FORMAT="3.0" VERSION="3.0">',
        '<HEADER MEDIA_FILE="" TIME_UNITS="milliseconds"/>',
        "<TIME_ORDER>",
    ]
    for slot_id, value in slots.items():
        attr = f' TIME_VALUE="{value}"' if value is not None else ""
        lines.append(f'<TIME_SLOT TIME_SLOT_ID="{slot_id}"{attr}/>')
    lines.append("</TIME_ORDER>")
    for tier_id, tier in tiers.items():
        lines.append(f'<TIER LINGUISTIC_TYPE_REF="Translation" TIER_ID="{tier_id}">')
        for annotation_id, s, e, text in tier:
            lines.append(
                f'<ANNOTATION><ALIGNABLE_ANNOTATION ANNOTATION_ID="{annotation_id}" '
                f'TIME_SLOT_REF1="{s}" TIME_SLOT_REF2="{e}"><ANNOTATION_VALUE>{text}'
                "</ANNOTATION_VALUE></ALIGNABLE_ANNOTATION></ANNOTATION>"
            )
        lines.append("</TIER>")
    lines.append("</ANNOTATION_DOCUMENT>")
    path.write_text("\n".join(lines), encoding="utf-8")


def test_dgs_corpus_documents_are_cut_into_sentences(tmp_path):
    # _info(), data_type "document", config "holistic": id, paths {ilex, eaf, srt,
    # cmdi}, poses {a, b} (None, 1, 543, 3). Sentences live in the ELAN file.
    pieces = [_layout(p, 543) for p in _letters("ABCD")]
    points = np.concatenate([p for p, _ in pieces])
    present = np.concatenate([m for _, m in pieces])
    fps = 25  # the recordings' rate (the real corpus is 50 fps; the cut uses the pose's)
    eaf = tmp_path / "1413451-11105600-11163240.eaf"
    _eaf(
        eaf,
        {
            "ts1": 0,
            "ts2": 810,
            "ts3": 930,
            "ts4": 1690,
            "ts5": None,
            "ts6": 5000,
            "ts7": 6000,
            "ts8": 2000,
            "ts9": 2500,
        },
        {
            "Deutsche_Übersetzung_A": [
                ("a1", "ts1", "ts2", "Erster Satz."),
                ("a2", "ts3", "ts4", "Zweiter Satz."),
                ("a3", "ts5", "ts4", "Ohne Zeit."),
                ("a4", "ts6", "ts7", "Nach dem Ende."),
                ("a5", "ts8", "ts9", " "),
            ],
            "Translation_into_English_A": [("e1", "ts1", "ts2", "First sentence.")],
            "Deutsche_Übersetzung_B": [("b1", "ts1", "ts2", "B hat keine Pose.")],
        },
    )
    signature = {
        "id": TEXT,
        "paths": dict.fromkeys(("ilex", "eaf", "srt", "cmdi"), TEXT),
        "poses": {"a": _pose_spec(543), "b": _pose_spec(543)},
    }
    documents = [
        {
            "id": "1413451",
            "paths": {"ilex": "", "eaf": str(eaf), "srt": "", "cmdi": ""},
            "poses": {"a": _pose_feature(points, present, fps), "b": _empty_pose(543)},
        }
    ]
    source = tfds_sources.InMemoryTfdsSource(
        "dgs_docs", "dgs_corpus", {"train": _dataset(documents, signature)}, languages=("gsg", "de")
    )
    before = _skipped("dgs_docs")
    got = _task("dgs_docs_slt", source, ("gsg", "de"))
    assert [(e["id"].decode(), _text(e["targets"])) for e in got] == [
        ("1413451_a1", "Erster Satz."),
        ("1413451_a2", "Zweiter Satz."),
    ]
    assert _text(got[0]["inputs"]) == "<slt> <gsg> <de>"
    # floor(start * fps) .. ceil(end * fps) inclusive: 0..21 and 23..43.
    assert (math.floor(0.93 * fps), math.ceil(1.69 * fps)) == (23, 43)
    np.testing.assert_allclose(
        got[0]["landmarks"], _expected(points[0:22], present[0:22], fps), atol=1e-6
    )
    np.testing.assert_allclose(
        got[1]["landmarks"], _expected(points[23:44], present[23:44], fps), atol=1e-6
    )
    after = _skipped("dgs_docs")
    assert {k: after[k] - before.get(k, 0) for k in after} == {
        "sentence without valid timing": 1,
        "sentence with an empty frame span": 1,
        "sentence without text": 1,
        "sentence of a participant without pose": 1,
    }
    assert tfds_sources.sentence_span(0, 810, 25.0, 100) == (0, 22)
    assert tfds_sources.sentence_span(900, 800, 25.0, 100) == "sentence without valid timing"

    # A document whose ELAN file is gone says where it looked and what to do.
    documents[0]["paths"]["eaf"] = str(tmp_path / "gone.eaf")
    with pytest.raises(Exception, match="gone.eaf.*data_type='sentence'"):
        _task("dgs_docs_slt", source, ("gsg", "de"))


def test_dgs_corpus_sentence_config_examples():
    # _info(), data_type "sentence" with a pose: id, paths, document_id, sentence {id,
    # participant, start, end (int32 ms), german, english, glosses, mouthings}, pose.
    pose = _layout(_letters("C")[0], 543)
    gloss = {
        k: tf.TensorSpec([None], tf.int32 if k in ("start", "end") else tf.string)
        for k in ("start", "end", "gloss", "hand", "Lexeme_Sign", "Gebärde", "Sign")
    }
    signature = {
        "id": TEXT,
        "document_id": TEXT,
        "paths": dict.fromkeys(("ilex", "eaf", "srt", "cmdi"), TEXT),
        "sentence": {
            "id": TEXT,
            "participant": TEXT,
            "start": INT,
            "end": INT,
            "german": TEXT,
            "english": TEXT,
            "glosses": gloss,
            "mouthings": {
                "start": tf.TensorSpec([None], tf.int32),
                "end": tf.TensorSpec([None], tf.int32),
                "mouthing": tf.TensorSpec([None], tf.string),
            },
        },
        "pose": _pose_spec(543),
    }
    example = {
        "id": "1413451_a1",
        "document_id": "1413451",
        "paths": {"ilex": "", "eaf": "", "srt": "", "cmdi": ""},
        "sentence": {
            "id": "a1",
            "participant": "A",
            "start": np.int32(0),
            "end": np.int32(800),
            "german": "Guten Tag.",
            "english": "Hello.",
            "glosses": {
                "start": np.int32([0]),
                "end": np.int32([400]),
                "gloss": ["GUT1"],
                "hand": ["r"],
                "Lexeme_Sign": ["GUT1"],
                "Gebärde": ["GUT1"],
                "Sign": ["GOOD1"],
            },
            "mouthings": {
                "start": np.zeros([0], np.int32),
                "end": np.zeros([0], np.int32),
                "mouthing": np.zeros([0], str),
            },
        },
        "pose": _pose_feature(*pose, 50),
    }
    source = tfds_sources.InMemoryTfdsSource(
        "dgs_sent", "dgs_corpus", {"train": _dataset([example], signature)}
    )
    got = _task("dgs_sent_slt", source, ("gsg", "de"))
    assert [(e["id"].decode(), _text(e["targets"])) for e in got] == [("1413451_a1", "Guten Tag.")]
    np.testing.assert_allclose(got[0]["landmarks"], _expected(*pose, 50), atol=1e-6)


def test_wmt_slt_subtitles_with_holistic_203_point_poses():
    # _info() with include_pose="holistic": id, source, fps, subtitle {text, start, end},
    # video (a path: process_video is unsupported), pose (None, 1, 203, 3).
    signature = {
        "id": TEXT,
        "source": TEXT,
        "fps": INT,
        "subtitle": {"text": TEXT, "start": TEXT, "end": TEXT},
        "video": TEXT,
        "pose": _pose_spec(203),
    }
    pose = _layout(_letters("D")[0], 203)
    examples = [
        {
            "id": "srf.2020-03-13_0",
            "source": "srf",
            "fps": np.int32(25),
            "subtitle": {"text": "Guten Abend.", "start": "0:00:01", "end": "0:00:01.840000"},
            "video": "/data/srf.2020-03-13.mp4",
            "pose": _pose_feature(*pose, 25),
        },
        {
            "id": "srf.2020-03-13_1",
            "source": "srf",
            "fps": np.int32(25),
            "subtitle": {"text": "Leer.", "start": "0:00:02", "end": "0:00:02"},
            "video": "/data/srf.2020-03-13.mp4",
            "pose": _empty_pose(203),
        },
    ]
    source = tfds_sources.InMemoryTfdsSource(
        "wmt_t", "wmt_slt", {"train": _dataset(examples, signature)}, languages=("sgg", "de")
    )
    before = _skipped("wmt_t").get("example without pose frames", 0)
    got = _task("wmt_t_slt", source, ("sgg", "de"))
    assert [(_text(e["inputs"]), _text(e["targets"])) for e in got] == [
        ("<slt> <sgg> <de>", "Guten Abend.")
    ]
    np.testing.assert_allclose(got[0]["landmarks"], _expected(*pose, 25), atol=1e-6)
    assert _skipped("wmt_t")["example without pose frames"] == before + 1
    # An OpenPose config (135 points, 2-D) or one without poses is refused up front.
    openpose = dict(signature, pose=_pose_spec(135, d=2))
    with pytest.raises(ValueError, match="include_pose='holistic'"):
        tfds_sources.InMemoryTfdsSource(
            "wmt_o", "wmt_slt", {"train": _dataset([], openpose)}
        ).dataset("train", False, None, None)
    no_pose = {k: v for k, v in signature.items() if k != "pose"}
    with pytest.raises(ValueError, match="has no `pose` feature"):
        tfds_sources.InMemoryTfdsSource(
            "wmt_n", "wmt_slt", {"train": _dataset([], no_pose)}
        ).dataset("train", False, None, None)


def test_signsuisse_entries_give_sign_and_example_records_per_language():
    # _info(), config "holistic": id, name, category, spokenLanguage, signedLanguage,
    # url, paraphrase, definition, exampleText, video, exampleVideo; pose and
    # examplePose (None, 1, 543, 3) with include_path.
    keys = (
        "id",
        "name",
        "category",
        "spokenLanguage",
        "signedLanguage",
        "url",
        "paraphrase",
        "definition",
        "exampleText",
        "video",
        "exampleVideo",
    )
    signature = {
        **dict.fromkeys(keys, TEXT),
        "pose": _pose_spec(543, path=True),
        "examplePose": _pose_spec(543, path=True),
    }
    letters = [_layout(p, 543) for p in _letters("ABCDE")]

    def entry(uid, name, language, pose, example_text, example_pose):
        return {
            "id": uid,
            "name": name,
            "category": "",
            "spokenLanguage": language,
            "signedLanguage": f"ch-{language}",
            "url": "",
            "paraphrase": "",
            "definition": "",
            "exampleText": example_text,
            "video": "",
            "exampleVideo": "",
            "pose": _pose_feature(*pose, 25, path=f"{uid}.pose"),
            "examplePose": (
                _pose_feature(*example_pose, 25, path=f"{uid}e.pose")
                if example_pose is not None
                else _empty_pose(543, path="empty")
            ),
        }

    examples = [
        entry("1", "Haus", "de", letters[0], "Das Haus ist gross.", letters[1]),
        entry("2", "maison", "fr", letters[2], "La maison est grande.", letters[3]),
        entry("3", "casa", "it", letters[4], "", None),
    ]
    data = {"train": _dataset(examples, signature)}
    # Under a dataset with per-record languages (like yt_full): every language.
    got = _task("signsuisse_all", tfds_sources.InMemoryTfdsSource("ss_all", "signsuisse", data))
    assert [(e["id"].decode(), _text(e["inputs"]), _text(e["targets"])) for e in got] == [
        ("1", "<slt> <sgg> <de>", "Haus"),
        ("1_example", "<slt> <sgg> <de>", "Das Haus ist gross."),
        ("2", "<slt> <ssr> <fr>", "maison"),
        ("2_example", "<slt> <ssr> <fr>", "La maison est grande."),
        ("3", "<slt> <slf> <it>", "casa"),
    ]
    np.testing.assert_allclose(got[1]["landmarks"], _expected(*letters[1], 25), atol=1e-6)
    assert _skipped("ss_all") == {"example without pose frames": 1}
    # Under a dataset of one language pair (wmt23_lsfch: ssr -> fr): that pair only.
    got = _task(
        "signsuisse_fr",
        tfds_sources.InMemoryTfdsSource("ss_fr", "signsuisse", data, languages=("ssr", "fr")),
        ("ssr", "fr"),
    )
    assert [e["id"].decode() for e in got] == ["2", "2_example"]
    assert _skipped("ss_fr") == {"languages other than ssr->fr": 4}


def test_tfds_builder_directory_through_a_paper_mixture(tmp_path):
    """A prepared builder directory with rwth_phoenix2014_t's features, read by the
    paper's yt_full tasks (records keep their own languages)."""
    pytest.importorskip("importlib_resources")  # TFDS needs it to write a dataset
    import tensorflow_datasets as tfds

    poses = [_layout(p, 543) for p in _letters("AB")]
    pose = {
        "data": tfds.features.Tensor(shape=(None, 1, 543, 3), dtype=np.float32),
        "conf": tfds.features.Tensor(shape=(None, 1, 543), dtype=np.float32),
        "fps": tfds.features.Scalar(dtype=np.int32),
    }
    spec = tfds.features.FeaturesDict(
        {
            "id": tfds.features.Text(),
            "signer": tfds.features.Text(),
            "gloss": tfds.features.Text(),
            "text": tfds.features.Text(),
            "pose": pose,
        }
    )
    examples = [
        {
            "id": f"ex{i}",
            "signer": "Signer01",
            "gloss": "X",
            "text": f"Satz {i}",
            "pose": _pose_feature(*p, 25),
        }
        for i, p in enumerate(poses)
    ]
    builder = tfds.dataset_builders.TfDataBuilder(
        name="rwth_phoenix2014_t",
        version="3.0.0",
        features=spec,
        split_datasets={
            "train": tf.data.Dataset.from_generator(
                lambda: iter(examples), output_signature=spec.get_tensor_spec()
            )
        },
        data_dir=str(tmp_path),
    )
    builder.download_and_prepare()
    saved = mixing.SETTINGS
    try:
        mixing.configure(
            dataset_roots={
                "yt_full": f"tfds:{builder.data_dir}",
                "how2sign": f"tfds:{builder.data_dir}",
            }
        )
        got = list(
            seqio.get_mixture_or_task("yt_full_slt")
            .get_dataset(LENGTHS, split="train", shuffle=False)
            .as_numpy_iterator()
        )
        assert sorted((_text(e["inputs"]), _text(e["targets"])) for e in got) == [
            ("<slt> <gsg> <de>", "Satz 0"),
            ("<slt> <gsg> <de>", "Satz 1"),
        ]
        first = next(e for e in got if _text(e["targets"]) == "Satz 0")
        np.testing.assert_allclose(first["landmarks"], _expected(*poses[0], 25), atol=1e-6)
        with pytest.raises(ValueError, match="'how2sign' is ase->en"):
            seqio.get_mixture_or_task("how2sign_slt_ase_en").get_dataset(
                LENGTHS, split="train", shuffle=False
            )
    finally:
        mixing.SETTINGS = saved
