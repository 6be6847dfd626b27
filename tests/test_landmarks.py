import glob
import os

import numpy as np
import pytest

from slt import landmarks
from slt.io import pose_files
from tasks import fingerspelling

from conftest import SHARED_DATA


def _letter_file(sign_language="ase", letter="A"):
    for path, _, sign, text in fingerspelling._index():
        if sign == sign_language and text == letter:
            return path
    raise AssertionError("letter not found")


def test_subset_is_85_points_255_floats():
    assert landmarks.NUM_POINTS == 85
    assert landmarks.FRAME_DIM == 255
    assert len(landmarks.YOUTUBE_ASL_FACE_INDICES) == 37


def test_select_from_real_holistic_pose_picks_the_right_points():
    pose = pose_files.read_pose(_letter_file())
    assert dict(pose.components)["FACE_LANDMARKS"] == 478
    points, present = pose.youtube_asl()
    assert points.shape == (pose.points.shape[0], 85, 3)
    # Column 0 is pose point 11 (left shoulder); column 6 is face point 0, which sits
    # after the 33 pose points in the file; the last column is right-hand point 20.
    np.testing.assert_array_equal(points[:, 0], pose.points[:, 11])
    np.testing.assert_array_equal(points[:, 6], pose.points[:, 33 + 0])
    np.testing.assert_array_equal(points[:, 41], pose.points[:, 33 + 468])  # iris centre
    right_hand_start = 33 + 478 + 21
    np.testing.assert_array_equal(points[:, 84], pose.points[:, right_hand_start + 20])
    # spoken-to-signed removed the left hand of ASL letters: it must be missing.
    assert not present[:, 43:64].any()
    assert present[:, 64:].all()


def test_unrefined_face_marks_iris_missing():
    t, n = 4, 33 + 468 + 21 + 21
    points = np.random.default_rng(0).random((t, n, 3)).astype(np.float32)
    present = np.ones((t, n), bool)
    comps = [("POSE_LANDMARKS", 33), ("FACE_LANDMARKS", 468),
             ("LEFT_HAND_LANDMARKS", 21), ("RIGHT_HAND_LANDMARKS", 21)]
    out, out_present = landmarks.select_youtube_asl(points, present, comps)
    assert out_present[:, 6:41].all()
    assert not out_present[:, 41:43].any()
    frames = landmarks.to_frames(out, out_present, landmarks.LandmarkConfig(frame_step=1))
    assert (frames.reshape(t, 85, 3)[:, 41:43] == -10.0).all()


def test_nan_points_count_as_missing():
    t, n = 2, 33 + 478 + 42
    points = np.zeros((t, n, 3), np.float32)
    points[0, 11, 0] = np.nan
    comps = [("POSE_LANDMARKS", 33), ("FACE_LANDMARKS", 478),
             ("LEFT_HAND_LANDMARKS", 21), ("RIGHT_HAND_LANDMARKS", 21)]
    _, present = landmarks.select_youtube_asl(points, np.ones((t, n), bool), comps)
    assert not present[0, 0] and present[1, 0]


def test_reduced_face_layout_gives_a_clear_error():
    pose = pose_files.read_pose(os.path.join(SHARED_DATA, "mediapipe_reduced.pose"))
    with pytest.raises(ValueError, match="POSE_LANDMARKS has 8 points"):
        pose.youtube_asl()


def test_missing_component_error_names_the_source():
    with pytest.raises(ValueError, match=r"clip\.npy: the pose has no FACE_LANDMARKS"):
        landmarks.select_youtube_asl(np.zeros((1, 33, 3)), np.ones((1, 33), bool),
                                     [("POSE_LANDMARKS", 33)], source="clip.npy")


def test_unit_box_normalisation_and_frame_reduction():
    rng = np.random.default_rng(1)
    points = rng.normal(5.0, 3.0, (9, 85, 3)).astype(np.float32)
    present = rng.random((9, 85)) > 0.1
    frames = landmarks.to_frames(points, present)
    assert frames.shape == (5, 255)  # every second of 9 frames
    xyz = frames.reshape(5, 85, 3)
    kept_present = present[::2]
    real = xyz[kept_present]
    assert real[:, :2].min() >= 0.0 and real[:, :2].max() <= 1.0 + 1e-6
    assert (xyz[~kept_present] == -10.0).all()
    # The clip-wide transform is a translation and one scale: distances keep ratios.
    full = landmarks.normalize_unit_box(points, present)
    scale = (points[1, 3] - points[0, 3]) / (full[1, 3] - full[0, 3])
    np.testing.assert_allclose(scale, scale[0], rtol=1e-4)


def test_max_frames_and_config_roundtrip():
    config = landmarks.LandmarkConfig(frame_step=1, max_frames=3, missing_value=-5.0)
    frames = landmarks.to_frames(np.zeros((10, 85, 3), np.float32), np.zeros((10, 85), bool),
                                 config)
    assert frames.shape == (3, 255) and (frames == -5.0).all()
    assert landmarks.LandmarkConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="normalization"):
        landmarks.LandmarkConfig(normalization="zscore")


def test_corrupt_pose_file_error(tmp_path):
    bad = tmp_path / "bad.pose"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="bad.pose: not a readable .pose file"):
        pose_files.read_pose(bad)


def test_feature_statistics_standardise_present_points():
    rng = np.random.default_rng(3)
    clips = [(rng.normal(2.0, 0.5, (20, 85, 3)).astype(np.float32), rng.random((20, 85)) > 0.2)
             for _ in range(4)]
    clips[0][1][:, 50] = False
    for _, present in clips:
        present[:, 60] = False  # never present
    base = landmarks.LandmarkConfig(frame_step=1)
    mean, std = landmarks.feature_statistics(clips, base)
    config = landmarks.LandmarkConfig(frame_step=1, feature_mean=mean, feature_std=std)
    frames = np.concatenate([landmarks.to_frames(p, m, config) for p, m in clips])
    present = np.concatenate([np.repeat(m, 3, axis=1) for _, m in clips])
    real = np.where(present, frames, np.nan)
    np.testing.assert_allclose(np.nanmean(real[:, :150], axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.nanstd(real[:, :150], axis=0), 1.0, atol=1e-3)
    assert mean[180] == 0.0 and std[180] == 1.0  # point 60 x: never seen
    assert (frames[~present] == -10.0).all()
    assert landmarks.LandmarkConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="both feature_mean and feature_std"):
        landmarks.LandmarkConfig(feature_mean=mean)
    with pytest.raises(ValueError, match="needs 255 values"):
        landmarks.LandmarkConfig(feature_mean=(0.0,), feature_std=(1.0,))
