"""Reads `.pose` files (pose-format) into holistic landmark arrays."""

from __future__ import annotations

import dataclasses
import os
import struct

import numpy as np
from pose_format import Pose
from pose_format.pose_header import PoseHeader
from pose_format.utils.reader import BufferReader

from slt import storage
from slt.data import errors, landmarks


@dataclasses.dataclass(frozen=True)
class HolisticPose:
    """Landmarks of one person as read from a file, before any preprocessing."""

    points: np.ndarray  # float32 [T, N, 3]
    present: np.ndarray  # bool [T, N]; False: not detected
    fps: float  # 0.0: unknown (a bare .npy array)
    components: tuple[tuple[str, int], ...]  # (name, points) in file order
    source: str
    # Each component's point names (from a .pose header or a known layout); None:
    # full-size MediaPipe components in MediaPipe order.
    point_names: tuple[tuple[str, ...], ...] | None = None

    def youtube_asl(self) -> tuple[np.ndarray, np.ndarray]:
        """The 85-point subset: ([T, 85, 3] points, [T, 85] presence)."""
        return landmarks.select_youtube_asl(
            self.points,
            self.present,
            self.components,
            source=self.source,
            point_names=self.point_names,
        )

    def absent_points(self) -> tuple[str, ...]:
        """Subset points this layout lacks (always missing), e.g. the iris centres."""
        return landmarks.absent_youtube_asl_points(self.components, self.point_names, self.source)

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])


def read_pose(path: str | os.PathLike, person: int = 0) -> HolisticPose:
    """Reads one person from a `.pose` file (pose-format, any holistic layout).

    Raises:
      FileNotFoundError: the file does not exist.
      BadInput (a ValueError): the file is not a readable pose file
        (`corrupt_pose`), it is shorter than its header says (`truncated_pose`;
        pose-format itself silently drops the missing frames), or it has no such
        person.
    """
    path = os.fspath(path)
    buffer = storage.read_bytes(path)  # a local path or gs://...
    try:
        _check_complete(buffer, path)
        pose = Pose.read(buffer)
    except errors.BadInput:
        raise
    except Exception as e:  # pose-format raises struct/index errors on bad bytes
        raise errors.BadInput(
            "corrupt_pose",
            f"{path}: not a readable .pose file ({type(e).__name__}: {e}); "
            "re-export it with pose-format (video_to_pose).",
        ) from e
    data = pose.body.data
    num_people = data.shape[1]
    if person >= num_people:
        raise errors.BadInput(
            "zero_frames" if data.shape[0] == 0 else "corrupt_pose",
            f"{path}: asked for person {person}, the file has {num_people}.",
        )
    coords = np.ma.getdata(data)[:, person].astype(np.float32)
    confidence = np.asarray(pose.body.confidence)[:, person]
    present = confidence > 0
    mask = np.ma.getmaskarray(data)[:, person]
    if mask.ndim == 3:
        present &= ~mask.any(axis=-1)
    components = tuple((c.name, len(c.points)) for c in pose.header.components)
    point_names = tuple(tuple(str(p) for p in c.points) for c in pose.header.components)
    return HolisticPose(
        points=coords,
        present=present,
        fps=float(pose.body.fps),
        components=components,
        source=path,
        point_names=point_names,
    )


def _check_complete(buffer: bytes, path: str) -> None:
    """Raises `truncated_pose` if the body holds other than the frames the header says.

    pose-format reads a short v0.2 file as fewer frames, and a short v0.1 file as
    misaligned data and confidence, without an error.
    """
    reader = BufferReader(buffer)
    header = PoseHeader.read(reader)
    version = round(header.version, 3)
    if version not in (0.1, 0.2):
        return  # v0.0 bodies have per-frame people counts; pose-format checks those
    offset = reader.read_offset
    points, dims = header.total_points(), header.num_dims()
    if version == 0.2:
        if len(buffer) >= offset + 10:
            _, frames, people = struct.unpack_from("<fIH", buffer, offset)
            expected = offset + 10 + 4 * frames * people * points * (dims + 1)
            if len(buffer) >= expected:
                return
        else:
            frames, expected = "some", offset + 10
    else:  # v0.1: ushort fps, ushort frames (modulo 2**16), ushort people
        if len(buffer) >= offset + 6:
            _, frames, people = struct.unpack_from("<HHH", buffer, offset)
            body = len(buffer) - offset - 6
            frame_bytes = 4 * max(people, 1) * points * (dims + 1)
            if body % frame_bytes == 0 and (body // frame_bytes) % 2**16 == frames:
                return
            expected = offset + 6 + frames * frame_bytes
        else:
            frames, expected = "some", offset + 6
    raise errors.BadInput(
        "truncated_pose",
        f"{path}: the header promises {frames} frames ({expected} bytes), the file has "
        f"{len(buffer)} bytes; it is truncated. Re-export it.",
    )
