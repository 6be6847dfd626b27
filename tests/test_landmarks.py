import os

import numpy as np
import pytest
from helpers import TEST_DATA

from slt.data import landmarks
from slt.io import pose_files
from slt.tasks.fingerspelling import corpus as fingerspelling


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
    comps = [
        ("POSE_LANDMARKS", 33),
        ("FACE_LANDMARKS", 468),
        ("LEFT_HAND_LANDMARKS", 21),
        ("RIGHT_HAND_LANDMARKS", 21),
    ]
    out, out_present = landmarks.select_youtube_asl(points, present, comps)
    assert out_present[:, 6:41].all()
    assert not out_present[:, 41:43].any()
    frames = landmarks.to_frames(out, out_present, landmarks.LandmarkConfig(frame_step=1))
    assert (frames.reshape(t, 85, 3)[:, 41:43] == -10.0).all()


def test_nan_points_count_as_missing():
    t, n = 2, 33 + 478 + 42
    points = np.zeros((t, n, 3), np.float32)
    points[0, 11, 0] = np.nan
    comps = [
        ("POSE_LANDMARKS", 33),
        ("FACE_LANDMARKS", 478),
        ("LEFT_HAND_LANDMARKS", 21),
        ("RIGHT_HAND_LANDMARKS", 21),
    ]
    _, present = landmarks.select_youtube_asl(points, np.ones((t, n), bool), comps)
    assert not present[0, 0] and present[1, 0]


REDUCED_ABSENT = (
    "FACE_LANDMARKS:4",
    "FACE_LANDMARKS:64",
    "FACE_LANDMARKS:151",
    "FACE_LANDMARKS:294",
    "FACE_LANDMARKS:468",
    "FACE_LANDMARKS:473",
)


def test_reduced_178_layout_selects_points_by_name():
    pose = pose_files.read_pose(os.path.join(TEST_DATA, "mediapipe_reduced.pose"))
    assert pose.points.shape == (170, 178, 3)
    points, present = pose.youtube_asl()
    assert points.shape == (170, 85, 3)
    # Pose: 8 reduced points (shoulders, elbows, wrists, hips); hips are file 6 and 7.
    np.testing.assert_array_equal(points[:, 0], pose.points[:, 0])  # LEFT_SHOULDER
    np.testing.assert_array_equal(points[:, 5], pose.points[:, 7])  # RIGHT_HIP
    # Face column 6 is mesh point 0 = file point 8; column 7 is mesh point 4 (absent).
    np.testing.assert_array_equal(points[:, 6], pose.points[:, 8 + 0])
    face_names = pose.point_names[1]
    np.testing.assert_array_equal(points[:, 8], pose.points[:, 8 + face_names.index("13")])
    assert pose.absent_points() == REDUCED_ABSENT
    absent_columns = [7, 18, 23, 35, 41, 42]  # face 4, 64, 151, 294, 468, 473
    assert not present[:, absent_columns].any()
    assert (points[:, absent_columns] == 0).all()
    assert present[:, :6].all() and present[:, [6, 8, 40]].all()
    # The header-less 178 layout (for .npy files) names the same points.
    components, names = landmarks.holistic_layout(178)
    assert components == pose.components and names == pose.point_names
    frames = landmarks.to_frames(points, present)
    assert frames.shape == (85, 255)
    assert (frames.reshape(85, 85, 3)[:, absent_columns] == -10.0).all()


def _real_586():
    return pose_files.read_pose(_letter_file("ase", "B"))


@pytest.mark.parametrize("num_points", [543, 553, 576, 586, 203, 178])
def test_every_holistic_layout_gives_the_same_subset(num_points):
    full = _real_586()
    full_components, full_names = landmarks.holistic_layout(586)
    assert full_components == full.components and full_names == full.point_names
    # Build the layout from the real 586-point recording by point name.
    flat_index = {}
    offset = 0
    for (name, _), names in zip(full.components, full.point_names):
        for i, point in enumerate(names):
            flat_index[(name, point)] = offset + i
        offset += len(names)
    components, names = landmarks.holistic_layout(num_points)
    take = [flat_index[(name, point)] for (name, _), pts in zip(components, names) for point in pts]
    assert len(take) == num_points
    pose = pose_files.HolisticPose(
        points=full.points[:, take],
        present=full.present[:, take],
        fps=full.fps,
        components=components,
        source="x.npy",
        point_names=names,
    )
    expected_points, expected_present = full.youtube_asl()
    points, present = pose.youtube_asl()
    absent = set(pose.absent_points())
    columns = {
        f"{c}:{landmarks._subset_name(c, i)}": k
        for k, (c, i) in enumerate((c, i) for c, idx in landmarks.YOUTUBE_ASL_SUBSET for i in idx)
    }
    missing_columns = sorted(columns[a] for a in absent)
    expected_absent = {
        553: set(),
        586: set(),
        543: set(REDUCED_ABSENT[4:]),
        576: set(REDUCED_ABSENT[4:]),
    }.get(num_points, set(REDUCED_ABSENT))
    assert absent == expected_absent
    keep = np.ones(85, bool)
    keep[missing_columns] = False
    np.testing.assert_array_equal(points[:, keep], expected_points[:, keep])
    np.testing.assert_array_equal(present[:, keep], expected_present[:, keep])
    assert not present[:, ~keep].any()
    # Without names, only full-size components can be read.
    if num_points in (543, 553, 576, 586):
        unnamed = landmarks.select_youtube_asl(pose.points, pose.present, components)
        np.testing.assert_array_equal(unnamed[0], points)


def test_reduced_component_without_names_is_an_error():
    with pytest.raises(ValueError, match="POSE_LANDMARKS has 8 points and no point names"):
        landmarks.select_youtube_asl(
            np.zeros((1, 178, 3)),
            np.ones((1, 178), bool),
            landmarks.holistic_layout(178)[0],
            source="clip.npy",
        )
    with pytest.raises(ValueError, match=r"x.npy: 100 points per frame is not"):
        landmarks.holistic_layout(100, source="x.npy")


def test_shoulder_clip_matches_pose_format_normalize():
    from pose_format import Pose

    path = _letter_file("ase", "C")
    with open(path, "rb") as f:
        reference = Pose.read(f.read())
    reference.normalize()  # pose-format: mean shoulder midpoint, mean shoulder distance
    pose = pose_files.read_pose(path)
    points, present = pose.youtube_asl()
    config = landmarks.LandmarkConfig(normalization="shoulder_clip", frame_step=1)
    frames = landmarks.to_frames(points, present, config).reshape(-1, 85, 3)
    normalised = pose_files.HolisticPose(
        points=np.ma.getdata(reference.body.data)[:, 0].astype(np.float32),
        present=pose.present,
        fps=pose.fps,
        components=pose.components,
        source=path,
        point_names=pose.point_names,
    )
    expected, _ = normalised.youtube_asl()
    np.testing.assert_allclose(frames[present], expected[present], atol=2e-4)
    # The mean shoulder distance is 1 afterwards.
    distance = np.linalg.norm(frames[:, 0] - frames[:, 1], axis=-1)
    assert abs(distance.mean() - 1.0) < 1e-4


def test_per_frame_shoulder_normalisation():
    rng = np.random.default_rng(5)
    points = rng.normal(100.0, 30.0, (6, 85, 3)).astype(np.float32)
    present = np.ones((6, 85), bool)
    present[4, 1] = False  # frame 4 lacks the right shoulder
    config = landmarks.LandmarkConfig(normalization="shoulder", frame_step=1)
    out = landmarks.to_frames(points, present, config).reshape(6, 85, 3)
    both = [0, 1, 2, 3, 5]
    np.testing.assert_allclose((out[both, 0] + out[both, 1]) / 2, 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out[both, 0] - out[both, 1], axis=-1), 1.0, rtol=1e-5)
    # Frame 4 uses the clip-wide centre and distance of the other frames.
    centre = ((points[both, 0] + points[both, 1]) / 2).mean(axis=0)
    distance = np.linalg.norm(points[both, 0] - points[both, 1], axis=-1).mean()
    np.testing.assert_allclose(out[4, 10], (points[4, 10] - centre) / distance, rtol=1e-4)
    assert (out[4, 1] == -10.0).all()
    present[:, 0] = False
    with pytest.raises(ValueError, match="clip.pose: no frame has both shoulders"):
        landmarks.to_frames(points, present, config, source="clip.pose")


def test_resampling_to_a_target_fps():
    points = np.zeros((30, 85, 3), np.float32)
    points[:, :, 0] = np.arange(30)[:, None]  # x encodes the frame index
    present = np.ones((30, 85), bool)
    config = landmarks.LandmarkConfig(normalization="none", target_fps=25.0)
    frames = landmarks.to_frames(points, present, config, fps=30.0)
    assert frames.shape == (25, 255)  # one second at 25 fps
    taken = frames[:, 0].astype(int)
    np.testing.assert_array_equal(taken, np.floor(np.arange(25) * 30 / 25 + 0.5))
    # 50 -> 25 fps is exactly every second frame.
    half = landmarks.to_frames(
        points, present, landmarks.LandmarkConfig(normalization="none", target_fps=25.0), fps=50.0
    )
    np.testing.assert_array_equal(
        half, landmarks.to_frames(points, present, landmarks.LandmarkConfig(normalization="none"))
    )
    # Upsampling repeats the nearest frame; max_frames still cuts.
    up = landmarks.to_frames(
        points[:3],
        present[:3],
        landmarks.LandmarkConfig(normalization="none", target_fps=20.0, max_frames=5),
        fps=10.0,
    )
    np.testing.assert_array_equal(up[:, 0], [0, 1, 1, 2, 2])  # ties: the later frame
    with pytest.raises(ValueError, match="needs the clip's frame rate"):
        landmarks.to_frames(points, present, config)
    assert landmarks.LandmarkConfig.from_json(config.to_json()) == config
    # Old configs (saved before target_fps existed) still load with the default.
    old = (
        '{"feature_mean": null, "feature_std": null, "frame_step": 2, "max_frames": 256,'
        ' "missing_value": -10.0, "normalization": "unit_box"}'
    )
    assert landmarks.LandmarkConfig.from_json(old) == landmarks.LandmarkConfig()


def test_missing_component_error_names_the_source():
    with pytest.raises(ValueError, match=r"clip\.npy: the pose has no FACE_LANDMARKS"):
        landmarks.select_youtube_asl(
            np.zeros((1, 33, 3)),
            np.ones((1, 33), bool),
            [("POSE_LANDMARKS", 33)],
            source="clip.npy",
        )


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
    frames = landmarks.to_frames(
        np.zeros((10, 85, 3), np.float32), np.zeros((10, 85), bool), config
    )
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
    clips = [
        (rng.normal(2.0, 0.5, (20, 85, 3)).astype(np.float32), rng.random((20, 85)) > 0.2)
        for _ in range(4)
    ]
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
