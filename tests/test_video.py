"""Video -> MediaPipe Holistic landmarks in the separate mediapipe environment.

Needs that environment (`python -m slt.io.video --install`, or SLT_MEDIAPIPE_PYTHON);
the tests that run MediaPipe skip, saying so, where it is absent.
"""

import json
import os

import pytest
from helpers import TEST_DATA

from slt import prepare
from slt.data import errors, landmarks
from slt.io import clips, readers, video
from slt.tasks.fingerspelling import corpus as fingerspelling

VIDEO = os.path.join(TEST_DATA, "test_video.mp4")
needs_mediapipe = pytest.mark.skipif(
    not video.backend_available(),
    reason=f"no MediaPipe environment at {video.mediapipe_python()}; install it with "
    f"`{video.INSTALL_COMMAND}` (CI does this in .ci/run)",
)


def test_missing_backend_is_a_reported_reason(monkeypatch, tmp_path):
    monkeypatch.setenv(video.PYTHON_ENV_VAR, str(tmp_path / "no" / "python"))
    with pytest.raises(
        errors.BadInput, match="Install it with `python -m slt.io.video --install`"
    ) as info:
        readers.read_holistic(VIDEO)
    assert info.value.reason == "video_backend_missing"


@pytest.fixture(scope="module")
def extracted():
    return readers.read_holistic(VIDEO)


@needs_mediapipe
def test_video_gives_holistic_landmarks(extracted):
    pose = extracted
    assert pose.source == VIDEO
    assert pose.points.shape == (58, 553, 3) and pose.fps > 0
    readers.check_holistic(pose)
    assert pose.absent_points() == ()  # refined face: iris centres present
    points, present = pose.youtube_asl()
    # A real signer facing the camera: pose and face in every frame; MediaPipe finds
    # the right hand in 20 of the 58 frames and the left hand in none.
    assert present[:, :43].all()
    assert 0.25 < present[:, 64:].any(axis=1).mean() < 0.5
    assert not present[:, 43:64].any()
    # x, y in pixels of the 720x540 video: the face lies inside the frame (the hips,
    # below it, are extrapolated off-screen).
    face = points[:, 6:43, :2]
    assert face[..., 0].min() > 0 and face[..., 0].max() < 720
    assert face[..., 1].min() > 0 and face[..., 1].max() < 540
    assert points[:, 4:6, 1].min() > 540
    frames = landmarks.to_frames(points, present)
    assert frames.shape == (29, 255)


# A second MediaPipe run (about 20 s): a video, a .pose file, a broken video and a missing
# file prepared together, end to end.
@needs_mediapipe
def test_prepare_mixes_video_pose_and_broken_inputs(extracted, tmp_path):
    letter = next(
        p for p, _, sign, text in fingerspelling._index() if sign == "ase" and text == "A"
    )
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    rows = [
        {
            "id": "video",
            "path": VIDEO,
            "text": "hello",
            "sign_language": "ase",
            "spoken_language": "en",
        },
        {
            "id": "pose",
            "path": letter,
            "text": "A",
            "sign_language": "ase",
            "spoken_language": "en",
        },
        {
            "id": "broken-video",
            "path": "broken.mp4",
            "text": "x",
            "sign_language": "ase",
            "spoken_language": "en",
        },
        {
            "id": "missing",
            "path": "missing.mp4",
            "text": "x",
            "sign_language": "ase",
            "spoken_language": "en",
        },
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = prepare.prepare(
        str(manifest), str(tmp_path / "out"), clips.PrepareOptions(), num_workers=1, progress=False
    )
    assert (result.num_inputs, result.num_written, result.num_reported) == (4, 2, 2)
    assert result.reported_by_reason == {"video_failed": 1, "missing_file": 1}
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["splits"]["train"]["frames"]["max"] == 29  # the video, every 2nd frame
