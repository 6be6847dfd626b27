"""MediaPipe Holistic landmarks -> the YouTube-ASL 85-point frames the model reads.

Pure, vectorised numpy, used identically when preparing training data and when
translating a user's file, so the two can never drift apart.

The pipeline (each step configurable through `LandmarkConfig`):
  1. select the 85-point YouTube-ASL subset (6 pose, 37 face, 21 + 21 hands);
  2. normalise the clip (default: scale the whole clip into a unit box);
  3. reduce the frame rate (default: keep every second frame);
  4. set missing points to a sentinel value and flatten to [T, 255].
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np

# Holistic component sizes (MediaPipe): the face has 478 points when refined
# (468-477 are iris points; 468 and 473 are the iris centres).
POSE_POINTS = 33
FACE_POINTS = 468
FACE_POINTS_REFINED = 478
HAND_POINTS = 21

# Component names as pose-format writes them for holistic poses.
POSE_COMPONENT = "POSE_LANDMARKS"
FACE_COMPONENT = "FACE_LANDMARKS"
LEFT_HAND_COMPONENT = "LEFT_HAND_LANDMARKS"
RIGHT_HAND_COMPONENT = "RIGHT_HAND_LANDMARKS"

# YouTube-ASL (Uthus et al. 2023): shoulders, elbows, hips.
YOUTUBE_ASL_POSE_INDICES = (11, 12, 13, 14, 23, 24)
# Eyes, eyebrows, lips and face outline, then the two iris centres (refined mesh only).
YOUTUBE_ASL_FACE_INDICES = (
    0, 4, 13, 14, 17, 33, 37, 39, 46, 52, 55, 61, 64, 81, 82, 93, 133, 151, 152,
    159, 172, 178, 181, 263, 269, 276, 282, 285, 291, 294, 311, 323, 362, 386,
    397, 468, 473,
)
HAND_INDICES = tuple(range(HAND_POINTS))

# (component, indices within it) in the order the model sees them.
YOUTUBE_ASL_SUBSET: tuple[tuple[str, tuple[int, ...]], ...] = (
    (POSE_COMPONENT, YOUTUBE_ASL_POSE_INDICES),
    (FACE_COMPONENT, YOUTUBE_ASL_FACE_INDICES),
    (LEFT_HAND_COMPONENT, HAND_INDICES),
    (RIGHT_HAND_COMPONENT, HAND_INDICES),
)
NUM_POINTS = sum(len(idx) for _, idx in YOUTUBE_ASL_SUBSET)  # 85
NUM_DIMS = 3
FRAME_DIM = NUM_POINTS * NUM_DIMS  # 255

NORMALIZATIONS = ("unit_box", "none")


@dataclasses.dataclass(frozen=True)
class LandmarkConfig:
    """How raw holistic landmarks become model frames.

    Saved next to every checkpoint (`to_json`) so translation repeats it exactly.

    Attributes:
      normalization: "unit_box" scales the whole clip (all frames, all present
        points) into the unit box: x and y keep their aspect ratio, z is scaled by
        the same factor. "none" keeps coordinates as they are.
      frame_step: keep every `frame_step`-th frame (YouTube-ASL drops every second).
      max_frames: frames beyond this are cut (after frame-rate reduction).
      missing_value: the value of every coordinate of a point the pose estimator
        did not find (zero confidence, NaN, or a point the layout lacks, such as
        the iris centres of an unrefined 468-point face). It lies far outside the
        unit box so the model can tell "missing" from "at the origin".
    """

    normalization: str = "unit_box"
    frame_step: int = 2
    max_frames: int = 256
    missing_value: float = -10.0
    # Optional per-feature standardisation [255] applied to present points after
    # normalisation. Handshape differences are ~0.02 of the unit box, next to means
    # of ~0.5: without it a small model does not learn to read hands in a CPU budget.
    feature_mean: tuple[float, ...] | None = None
    feature_std: tuple[float, ...] | None = None

    def __post_init__(self):
        for name in ("feature_mean", "feature_std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
                if len(getattr(self, name)) != FRAME_DIM:
                    raise ValueError(f"LandmarkConfig.{name} needs {FRAME_DIM} values, "
                                     f"got {len(value)}.")
        if (self.feature_mean is None) != (self.feature_std is None):
            raise ValueError("LandmarkConfig: give both feature_mean and feature_std, or neither.")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"LandmarkConfig.normalization={self.normalization!r} is not one of "
                f"{NORMALIZATIONS}.")
        if self.frame_step < 1:
            raise ValueError(f"LandmarkConfig.frame_step must be >= 1, got {self.frame_step}.")
        if self.max_frames < 1:
            raise ValueError(f"LandmarkConfig.max_frames must be >= 1, got {self.max_frames}.")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LandmarkConfig":
        return cls(**json.loads(text))


def select_youtube_asl(
    points: np.ndarray,
    present: np.ndarray,
    components: Sequence[tuple[str, int]],
    source: str = "<array>",
) -> tuple[np.ndarray, np.ndarray]:
    """Picks the 85 YouTube-ASL points out of a holistic layout.

    Args:
      points: float [T, N, 3] coordinates.
      present: bool [T, N], False where the estimator found no point.
      components: (name, number of points) of each component, in file order; their
        sizes must add up to N.
      source: names the input in error messages.

    Returns:
      ([T, 85, 3] float32 points, [T, 85] bool presence). Points the layout does not
      have (the iris centres of a 468-point face) are marked missing.
    """
    offsets, total = {}, 0
    for name, size in components:
        offsets[name] = (total, size)
        total += size
    if points.ndim != 3 or points.shape[1] != total or points.shape[2] < NUM_DIMS:
        raise ValueError(
            f"{source}: landmarks have shape {points.shape}, but the components "
            f"{[c for c, _ in components]} hold {total} points with at least "
            f"{NUM_DIMS} dims; the file's header and body disagree.")
    num_frames = points.shape[0]
    out_points = np.zeros((num_frames, NUM_POINTS, NUM_DIMS), np.float32)
    out_present = np.zeros((num_frames, NUM_POINTS), bool)
    column = 0
    for name, indices in YOUTUBE_ASL_SUBSET:
        if name not in offsets:
            raise ValueError(
                f"{source}: the pose has no {name} component (it has "
                f"{sorted(offsets)}); the YouTube-ASL subset needs MediaPipe "
                f"Holistic landmarks with pose, face and both hands.")
        start, size = offsets[name]
        idx = np.asarray(indices)
        have = idx < size
        if name != FACE_COMPONENT and not have.all():
            raise ValueError(
                f"{source}: component {name} has {size} points, the YouTube-ASL "
                f"subset needs indices up to {idx.max()}.")
        if name == FACE_COMPONENT and size < FACE_POINTS:
            raise ValueError(
                f"{source}: {FACE_COMPONENT} has {size} points; the YouTube-ASL "
                f"subset needs the full {FACE_POINTS}- or {FACE_POINTS_REFINED}-point "
                f"face mesh (reduced face contours lack the eye and lip points).")
        cols = column + np.flatnonzero(have)
        out_points[:, cols] = points[:, start + idx[have], :NUM_DIMS]
        out_present[:, cols] = present[:, start + idx[have]]
        column += len(idx)
    # NaN/Inf coordinates count as missing, never as data.
    out_present &= np.isfinite(out_points).all(axis=-1)
    return out_points, out_present


def normalize_unit_box(points: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Translates and scales a clip so its present points fill the unit box.

    One transform for the whole clip (not per frame), so motion is preserved: the
    per-axis minimum goes to 0 and the larger of the x and y extents becomes 1.
    """
    low, high = bounds(points, present)
    if low is None:
        return np.zeros_like(points)
    extent = high - low
    scale = max(float(extent[0]), float(extent[1]), 1e-6)
    return ((points - low) / scale).astype(np.float32)


def bounds(points: np.ndarray, present: np.ndarray):
    """Per-axis (min, max) over present points, or (None, None) if there are none.

    This is the hot path when composing training clips, hence the care for speed.
    """
    if not present.any():
        return None, None
    # Axis-major copy: numpy reduces a contiguous [3, N] ~20x faster than [N, 3].
    by_axis = np.ascontiguousarray(np.moveaxis(points, -1, 0)).reshape(points.shape[-1], -1)
    keep = present.reshape(-1)
    low = np.where(keep, by_axis, np.inf).min(axis=1)
    high = np.where(keep, by_axis, -np.inf).max(axis=1)
    return low, high


def to_frames(points: np.ndarray, present: np.ndarray,
              config: LandmarkConfig = LandmarkConfig()) -> np.ndarray:
    """Normalises, reduces the frame rate and flattens 85-point landmarks.

    Args:
      points: [T, 85, 3] coordinates from `select_youtube_asl`.
      present: [T, 85] presence.
      config: the preprocessing to apply.

    Returns:
      float32 [T', 255] frames, missing points set to `config.missing_value`.
    """
    if points.shape[1:] != (NUM_POINTS, NUM_DIMS):
        raise ValueError(f"expected [T, {NUM_POINTS}, {NUM_DIMS}] points, got {points.shape}")
    if config.normalization == "unit_box":
        points = normalize_unit_box(points, present)
    points = points[::config.frame_step][:config.max_frames]
    present = present[::config.frame_step][:config.max_frames]
    flat = points.reshape(points.shape[0], FRAME_DIM)
    if config.feature_mean is not None:
        flat = (flat - np.asarray(config.feature_mean, np.float32)) / np.asarray(
            config.feature_std, np.float32)
    present = np.repeat(present, NUM_DIMS, axis=1)
    return np.where(present, flat, np.float32(config.missing_value)).astype(np.float32)


def feature_statistics(clips: Sequence[tuple[np.ndarray, np.ndarray]],
                       config: LandmarkConfig = LandmarkConfig(),
                       min_std: float = 1e-3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and std of present points over (points, present) clips.

    Use them as `LandmarkConfig.feature_mean/feature_std`. Features never present
    get mean 0 and std 1.
    """
    base = dataclasses.replace(config, feature_mean=None, feature_std=None,
                               missing_value=np.nan)
    frames = np.concatenate([to_frames(p, m, base) for p, m in clips])
    have = np.isfinite(frames)
    count = have.sum(axis=0)
    values = np.where(have, frames, 0.0)
    mean = values.sum(axis=0) / np.maximum(count, 1)
    var = (np.where(have, frames - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count, 1)
    std = np.where(count > 0, np.maximum(np.sqrt(var), min_std), 1.0)
    return tuple(mean.tolist()), tuple(std.tolist())

