"""Readers on real files: .pose (full and reduced layouts), .npy, .npz, TFDS features."""

import os

import numpy as np
import pytest
from helpers import TEST_DATA

from slt.data import errors
from slt.io import arrays, pose_files, readers
from slt.tasks.fingerspelling import corpus as fingerspelling

REDUCED = os.path.join(TEST_DATA, "mediapipe_reduced.pose")


def _letter_file(sign_language="ase", letter="D"):
    for path, _, sign, text in fingerspelling._index():
        if sign == sign_language and text == letter:
            return path
    raise AssertionError("letter not found")


def _same_subset(a, b):
    pa, ma = a.youtube_asl()
    pb, mb = b.youtube_asl()
    np.testing.assert_array_equal(ma, mb)
    np.testing.assert_array_equal(pa[ma], pb[mb])


def test_read_holistic_dispatches_pose_files():
    letter = readers.read_holistic(_letter_file())
    assert letter.points.shape[1] == 586 and letter.fps > 0
    reduced = readers.read_holistic(REDUCED)
    assert reduced.points.shape == (170, 178, 3) and reduced.fps == 24.0
    readers.check_holistic(reduced)


@pytest.mark.parametrize("path_fn", [_letter_file, lambda: REDUCED])
def test_npy_and_npz_round_trip_real_landmarks(tmp_path, path_fn):
    pose = pose_files.read_pose(path_fn())
    confidence = pose.present.astype(np.float32)
    npz = tmp_path / "clip.npz"
    arrays.write_npz(npz, pose.points, confidence, pose.fps)
    from_npz = readers.read_holistic(str(npz))
    assert from_npz.fps == pose.fps and from_npz.components == pose.components
    _same_subset(pose, from_npz)
    # .npy: missing points are stored as zeros (no confidence array).
    npy = tmp_path / "clip.npy"
    np.save(npy, np.where(pose.present[..., None], pose.points, 0.0))
    from_npy = readers.read_holistic(str(npy))
    assert from_npy.fps == 0.0
    _same_subset(pose, from_npy)
    # [T, 1, N, D] with a fourth (visibility) coordinate reads the same.
    np.save(
        npy,
        np.where(
            pose.present[..., None],
            np.concatenate([pose.points, np.ones_like(pose.points[..., :1])], -1),
            0.0,
        )[:, None],
    )
    _same_subset(pose, readers.read_holistic(str(npy)))


def test_tfds_pose_feature():
    pose = pose_files.read_pose(_letter_file("gsg", "B"))
    # sign-language-datasets' PoseFeature, as tfds.as_numpy yields it.
    feature = {
        "data": pose.points[:, None].astype(np.float32),
        "conf": pose.present[:, None].astype(np.float32),
        "fps": np.int32(round(pose.fps)),
    }
    from_tfds = arrays.from_tfds_pose(feature, source="tfds:example")
    assert from_tfds.points.shape == pose.points.shape
    assert from_tfds.fps == round(pose.fps)
    _same_subset(pose, from_tfds)
    with pytest.raises(errors.BadInput, match=r"lacks \['conf'\]"):
        arrays.from_tfds_pose({"data": feature["data"]})


def test_85_point_arrays_are_the_subset_itself(tmp_path):
    pose = pose_files.read_pose(_letter_file())
    points, present = pose.youtube_asl()
    path = tmp_path / "subset.npz"
    arrays.write_npz(path, points, present, 30.0)
    again = readers.read_holistic(str(path))
    p2, m2 = again.youtube_asl()
    np.testing.assert_array_equal(m2, present)
    np.testing.assert_array_equal(p2[m2], points[present])


def _reason(path):
    with pytest.raises(errors.BadInput) as info:
        pose = readers.read_holistic(str(path))
        readers.check_holistic(pose)
    return info.value.reason, str(info.value)


def test_bad_inputs_each_have_a_reason(tmp_path):
    with open(REDUCED, "rb") as f:
        real = f.read()
    cases = {}
    cases["missing_file"] = tmp_path / "nope.pose"
    (tmp_path / "garbage.pose").write_bytes(b"\x00\x01garbage")
    cases["corrupt_pose"] = tmp_path / "garbage.pose"
    (tmp_path / "half.pose").write_bytes(real[: len(real) // 2])
    cases["truncated_pose"] = tmp_path / "half.pose"
    np.save(tmp_path / "empty.npy", np.zeros((0, 553, 3), np.float32))
    cases["zero_frames"] = tmp_path / "empty.npy"
    nan = np.ones((4, 543, 3), np.float32)
    nan[2, 100, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    cases["non_finite"] = tmp_path / "nan.npy"
    np.save(tmp_path / "wrong.npy", np.ones((4, 137, 3), np.float32))
    cases["wrong_point_count"] = tmp_path / "wrong.npy"
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    cases["corrupt_array"] = tmp_path / "bad.npy"
    (tmp_path / "clip.txt").write_text("x")
    cases["unsupported_format"] = tmp_path / "clip.txt"
    for reason, path in cases.items():
        got, message = _reason(path)
        assert got == reason, (path, got, message)
        assert os.path.basename(str(path)) in message
        assert reason in errors.REASONS


def test_tfds_examples_export_to_a_manifest_that_prepares(tmp_path):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from slt import prepare
    from slt.data import landmarks
    from slt.io import clips

    letters = {"E": _letter_file("gsg", "E"), "F": _letter_file("gsg", "F")}
    poses = {k: pose_files.read_pose(v) for k, v in letters.items()}

    def generate():  # the shape of sign-language-datasets examples
        for text, pose in poses.items():
            yield {
                "id": f"ex-{text}",
                "text": text,
                "pose": {
                    "data": pose.points[:, None],
                    "conf": pose.present[:, None].astype(np.float32),
                    "fps": np.int32(round(pose.fps)),
                },
            }
        yield {
            "id": "no-text",
            "text": "",
            "pose": {
                "data": poses["E"].points[:, None],
                "conf": poses["E"].present[:, None].astype(np.float32),
                "fps": np.int32(25),
            },
        }

    n = poses["E"].points.shape[1]
    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature={
            "id": tf.TensorSpec([], tf.string),
            "text": tf.TensorSpec([], tf.string),
            "pose": {
                "data": tf.TensorSpec([None, 1, n, 3], tf.float32),
                "conf": tf.TensorSpec([None, 1, n], tf.float32),
                "fps": tf.TensorSpec([], tf.int32),
            },
        },
    )
    from slt.io import tfds_export

    manifest, rows = tfds_export.export_examples(
        tfds.as_numpy(dataset), str(tmp_path), "train", "gsg", "de"
    )
    assert rows == 3
    out = str(tmp_path / "prepared")
    result = prepare.prepare(manifest, out, clips.PrepareOptions(), num_workers=1, progress=False)
    assert (result.num_written, result.num_reported) == (2, 1)
    assert result.reported_by_reason == {"empty_caption": 1}
    from_npz = readers.read_holistic(str(tmp_path / "train" / "0000000.npz"))
    assert from_npz.fps == round(poses["E"].fps)
    _same_subset(poses["E"], from_npz)
    np.testing.assert_array_equal(
        landmarks.to_frames(*from_npz.youtube_asl()), landmarks.to_frames(*poses["E"].youtube_asl())
    )
