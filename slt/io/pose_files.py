"""Reads `.pose` files (pose-format) into holistic landmark arrays."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
from pose_format import Pose

from slt import landmarks


@dataclasses.dataclass(frozen=True)
class HolisticPose:
    """Landmarks of one person as read from a file, before any preprocessing."""

    points: np.ndarray                    # float32 [T, N, 3]
    present: np.ndarray                   # bool [T, N]; False: not detected
    fps: float
    components: tuple[tuple[str, int], ...]  # (name, points) in file order
    source: str
    # Each component's point names (from a .pose header or a known layout); None:
    # full-size MediaPipe components in MediaPipe order.
    point_names: tuple[tuple[str, ...], ...] | None = None

    def youtube_asl(self) -> tuple[np.ndarray, np.ndarray]:
        """The 85-point subset: ([T, 85, 3] points, [T, 85] presence)."""
        return landmarks.select_youtube_asl(
            self.points, self.present, self.components, source=self.source,
            point_names=self.point_names)

    def absent_points(self) -> tuple[str, ...]:
        """Subset points this layout lacks (always missing), e.g. the iris centres."""
        return landmarks.absent_youtube_asl_points(self.components, self.point_names,
                                                   self.source)

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])


def read_pose(path: str | os.PathLike, person: int = 0) -> HolisticPose:
    """Reads one person from a `.pose` file.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the file is not a readable pose file, or has no such person.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        buffer = f.read()
    try:
        pose = Pose.read(buffer)
    except Exception as e:  # pose-format raises struct/index errors on bad bytes
        raise ValueError(
            f"{path}: not a readable .pose file ({type(e).__name__}: {e}); "
            "re-export it with pose-format (video_to_pose).") from e
    data = pose.body.data
    num_people = data.shape[1]
    if person >= num_people:
        raise ValueError(f"{path}: asked for person {person}, the file has {num_people}.")
    coords = np.ma.getdata(data)[:, person].astype(np.float32)
    confidence = np.asarray(pose.body.confidence)[:, person]
    present = confidence > 0
    mask = np.ma.getmaskarray(data)[:, person]
    if mask.ndim == 3:
        present &= ~mask.any(axis=-1)
    components = tuple((c.name, len(c.points)) for c in pose.header.components)
    point_names = tuple(tuple(str(p) for p in c.points) for c in pose.header.components)
    return HolisticPose(points=coords, present=present, fps=float(pose.body.fps),
                        components=components, source=path, point_names=point_names)
