"""One entry point for every landmark source: `read_holistic(path)`.

The reader is chosen by extension:
  .pose                          pose-format (`pose_files.read_pose`)
  .npy / .npz                    landmark arrays (`arrays.read_npy` / `read_npz`)
  .mp4 .mov .avi .mkv .webm .m4v MediaPipe Holistic in its own environment
                                 (`video.extract_holistic`)
Training (`slt.prepare`) and translation read files through this function, so both
see the same landmarks. Paths may be local or `gs://` (through `slt.storage`): pose
files and arrays are read from storage directly, a video is copied to a local
temporary file first (MediaPipe's OpenCV reader opens local files only).
"""

from __future__ import annotations

import os

import numpy as np

from slt import storage
from slt.data import errors
from slt.io import arrays, pose_files
from slt.io.pose_files import HolisticPose

POSE_EXTENSIONS = (".pose",)
ARRAY_EXTENSIONS = (".npy", ".npz")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def read_holistic(path: str) -> HolisticPose:
    """Reads the holistic landmarks of one person from a .pose, .npy, .npz or video file.

    Raises:
      BadInput (a ValueError) with a `reason` from `errors.REASONS`, and a message
      that names the file and the fix: `missing_file`, `unsupported_format`, and the
      reader's own reasons (`corrupt_pose`, `truncated_pose`, `corrupt_array`,
      `wrong_point_count`, `video_failed`, `video_backend_missing`).
    """
    path = os.fspath(path)
    if not storage.isfile(path):
        raise errors.BadInput("missing_file", f"{path}: no such file.")
    extension = storage.extension(path)
    try:
        if extension in POSE_EXTENSIONS:
            return pose_files.read_pose(path)
        if extension == ".npy":
            return arrays.read_npy(path)
        if extension == ".npz":
            return arrays.read_npz(path)
        if extension in VIDEO_EXTENSIONS:
            from slt.io import video  # imported lazily: it starts a subprocess

            return video.extract_holistic(path)
    except FileNotFoundError as e:
        raise errors.BadInput("missing_file", f"{path}: no such file ({e}).") from e
    raise errors.BadInput(
        "unsupported_format",
        f"{path}: extension {extension!r} is not one of "
        f"{POSE_EXTENSIONS + ARRAY_EXTENSIONS + VIDEO_EXTENSIONS}; convert it to .pose "
        "or .npy.",
    )


def check_holistic(pose: HolisticPose) -> None:
    """Refuses a clip that cannot be training data.

    Raises:
      BadInput: `zero_frames` (no frames), `non_finite` (a detected point with a NaN
        or Inf coordinate), `wrong_point_count` (the layout lacks needed points).
    """
    if pose.num_frames == 0:
        raise errors.BadInput("zero_frames", f"{pose.source}: the clip has no frames.")
    bad = pose.present & ~np.isfinite(pose.points).all(axis=-1)
    if bad.any():
        frame, point = np.argwhere(bad)[0]
        raise errors.BadInput(
            "non_finite",
            f"{pose.source}: {int(bad.sum())} detected points have NaN or Inf coordinates "
            f"(first: frame {frame}, point {point}); fix the extraction or mark them "
            "undetected (confidence 0).",
        )
    try:
        pose.absent_points()
    except errors.BadInput:
        raise
    except ValueError as e:
        raise errors.BadInput("wrong_point_count", str(e)) from e
