"""Reads landmark arrays: `.npy`, `.npz` and TFDS sign-language-datasets pose features.

Arrays carry no header, so the layout comes from the point count N: one of the
MediaPipe Holistic layouts pose-format writes (543, 553, 576, 586, reduced 178 and
203; see `landmarks.HOLISTIC_LAYOUTS`) or the 85-point subset itself.

Accepted shapes (D >= 3; only x, y, z are read; person 0 when there is a people axis):
  .npy   float [T, N, D] or [T, 1, N, D]. No confidence: a point whose coordinates
         are all exactly 0 counts as not detected (how zero-filled extraction scripts
         store a missing hand). fps is unknown (0.0).
  .npz   `data` (or `points`) as above; optional `conf` (or `confidence`) [T, N] or
         [T, 1, N] (> 0: detected; without it the all-zero rule applies); optional
         scalar `fps`. This is exactly a TFDS `PoseFeature` saved with
         `np.savez(path, **example["pose"])`, and what `slt.io.video` writes.
  TFDS   `from_tfds_pose({"data": [T,1,N,D], "conf": [T,1,N], "fps": ...})`, for a
         decoded sign-language-datasets example (`tfds.as_numpy`).
NaN/Inf coordinates of detected points are kept so `readers.check_holistic` can
refuse them.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping

import numpy as np

from slt import storage
from slt.data import errors, landmarks
from slt.io.pose_files import HolisticPose

DATA_KEYS = ("data", "points")
CONFIDENCE_KEYS = ("conf", "confidence")


def _person_zero(array: np.ndarray, rank: int, name: str, source: str) -> np.ndarray:
    """[T, 1, N, ...] or [T, N, ...] -> [T, N, ...] (person 0)."""
    if array.ndim == rank + 1:
        if array.shape[1] < 1:
            raise errors.BadInput("zero_frames", f"{source}: `{name}` has no person.")
        return array[:, 0]
    if array.ndim != rank:
        raise errors.BadInput(
            "corrupt_array",
            f"{source}: `{name}` has shape {array.shape}; expected [T, N, D] or "
            f"[T, 1, N, D] landmarks (T frames, N points, D >= 3 coordinates).",
        )
    return array


def from_arrays(
    data: np.ndarray, confidence: np.ndarray | None, fps: float, source: str
) -> HolisticPose:
    """Builds a HolisticPose from header-less arrays (see the module docstring)."""
    if not np.issubdtype(data.dtype, np.number):
        raise errors.BadInput(
            "corrupt_array", f"{source}: landmarks have dtype {data.dtype}, expected floats."
        )
    points = _person_zero(np.asarray(data), 3, "data", source)
    if points.shape[-1] < landmarks.NUM_DIMS:
        raise errors.BadInput(
            "corrupt_array",
            f"{source}: landmarks have {points.shape[-1]} coordinates per "
            f"point; x, y and z are needed (shape {data.shape}).",
        )
    points = points[..., : landmarks.NUM_DIMS].astype(np.float32)
    if confidence is None:
        present = (points != 0).any(axis=-1)
    else:
        confidence = _person_zero(np.asarray(confidence), 2, "conf", source)
        if confidence.shape != points.shape[:2]:
            raise errors.BadInput(
                "corrupt_array",
                f"{source}: `conf` has shape {confidence.shape}, the "
                f"landmarks {points.shape[:2]} frames x points.",
            )
        present = confidence > 0
    try:
        components, names = landmarks.holistic_layout(points.shape[1], source)
    except ValueError as e:
        raise errors.BadInput("wrong_point_count", str(e)) from e
    return HolisticPose(
        points=points,
        present=present,
        fps=float(fps),
        components=components,
        source=source,
        point_names=names,
    )


def from_tfds_pose(feature: Mapping[str, np.ndarray], source: str = "<tfds>") -> HolisticPose:
    """A decoded sign-language-datasets `PoseFeature`: data [T,1,N,D], conf, fps."""
    missing = [k for k in ("data", "conf") if k not in feature]
    if missing:
        raise errors.BadInput(
            "corrupt_array",
            f"{source}: the pose feature lacks {missing}; "
            "expected sign-language-datasets' {data, conf, fps}.",
        )
    fps = float(np.asarray(feature.get("fps", 0.0)))
    return from_arrays(np.asarray(feature["data"]), np.asarray(feature["conf"]), fps, source)


def read_npy(path: str | os.PathLike) -> HolisticPose:
    path = os.fspath(path)
    raw = storage.read_bytes(path)  # a local path or gs://...; FileNotFoundError if missing
    try:
        data = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as e:
        raise errors.BadInput(
            "corrupt_array", f"{path}: numpy cannot load it ({type(e).__name__}: {e})."
        ) from e
    if not isinstance(data, np.ndarray):
        raise errors.BadInput(
            "corrupt_array", f"{path}: holds an archive, not one array; name it .npz."
        )
    return from_arrays(data, None, 0.0, path)


def read_npz(path: str | os.PathLike) -> HolisticPose:
    path = os.fspath(path)
    raw = storage.read_bytes(path)  # a local path or gs://...; FileNotFoundError if missing
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise errors.BadInput(
            "corrupt_array", f"{path}: numpy cannot load it ({type(e).__name__}: {e})."
        ) from e
    data_key = next((k for k in DATA_KEYS if k in arrays), None)
    if data_key is None:
        raise errors.BadInput(
            "corrupt_array",
            f"{path}: has arrays {sorted(arrays)} but none named "
            f"{DATA_KEYS}; store the landmarks as `data` [T, N, 3].",
        )
    conf_key = next((k for k in CONFIDENCE_KEYS if k in arrays), None)
    fps = float(arrays["fps"]) if "fps" in arrays else 0.0
    return from_arrays(arrays[data_key], arrays.get(conf_key) if conf_key else None, fps, path)


def write_npz(
    path: str | os.PathLike, points: np.ndarray, confidence: np.ndarray, fps: float
) -> None:
    """Writes [T, N, 3] points, [T, N] confidence and fps as `read_npz` reads them
    (to a local path or gs://..., whole)."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        data=np.asarray(points, np.float32),
        conf=np.asarray(confidence, np.float32),
        fps=np.float32(fps),
    )
    storage.write_bytes(path, buffer.getvalue())
