"""MediaPipe Holistic landmarks -> the YouTube-ASL 85-point frames the model reads.

Pure, vectorised numpy, used identically when preparing training data and when
translating a user's file, so the two can never drift apart.

The pipeline (each step configurable through `LandmarkConfig`):
  1. select the 85-point YouTube-ASL subset (6 pose, 37 face, 21 + 21 hands) by
     point name, from any MediaPipe Holistic layout pose-format writes (543, 553,
     576, 586 points, and the reduced 178 and 203); points a layout lacks (the iris
     centres without a refined face) are marked missing;
  2. normalise (default: scale the whole clip into a unit box; or per-frame or
     clip-wide shoulder normalisation; or none);
  3. reduce the frame rate (default: keep every second frame; or resample to a
     target fps) and cut at `max_frames`;
  4. set missing points to a sentinel value and flatten to [T, 255].
"""

from __future__ import annotations

import dataclasses
import functools
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
POSE_WORLD_COMPONENT = "POSE_WORLD_LANDMARKS"

# MediaPipe's point names (mp.solutions.pose.PoseLandmark / hands.HandLandmark order);
# pose-format names face points by their mesh index ("0".."477").
POSE_LANDMARK_NAMES = (
    "NOSE",
    "LEFT_EYE_INNER",
    "LEFT_EYE",
    "LEFT_EYE_OUTER",
    "RIGHT_EYE_INNER",
    "RIGHT_EYE",
    "RIGHT_EYE_OUTER",
    "LEFT_EAR",
    "RIGHT_EAR",
    "MOUTH_LEFT",
    "MOUTH_RIGHT",
    "LEFT_SHOULDER",
    "RIGHT_SHOULDER",
    "LEFT_ELBOW",
    "RIGHT_ELBOW",
    "LEFT_WRIST",
    "RIGHT_WRIST",
    "LEFT_PINKY",
    "RIGHT_PINKY",
    "LEFT_INDEX",
    "RIGHT_INDEX",
    "LEFT_THUMB",
    "RIGHT_THUMB",
    "LEFT_HIP",
    "RIGHT_HIP",
    "LEFT_KNEE",
    "RIGHT_KNEE",
    "LEFT_ANKLE",
    "RIGHT_ANKLE",
    "LEFT_HEEL",
    "RIGHT_HEEL",
    "LEFT_FOOT_INDEX",
    "RIGHT_FOOT_INDEX",
)
HAND_LANDMARK_NAMES = (
    "WRIST",
    "THUMB_CMC",
    "THUMB_MCP",
    "THUMB_IP",
    "THUMB_TIP",
    "INDEX_FINGER_MCP",
    "INDEX_FINGER_PIP",
    "INDEX_FINGER_DIP",
    "INDEX_FINGER_TIP",
    "MIDDLE_FINGER_MCP",
    "MIDDLE_FINGER_PIP",
    "MIDDLE_FINGER_DIP",
    "MIDDLE_FINGER_TIP",
    "RING_FINGER_MCP",
    "RING_FINGER_PIP",
    "RING_FINGER_DIP",
    "RING_FINGER_TIP",
    "PINKY_MCP",
    "PINKY_PIP",
    "PINKY_DIP",
    "PINKY_TIP",
)
# pose-format's `reduce_holistic`: 8 body points and the 128 face-contour points.
REDUCED_POSE_NAMES = (
    "LEFT_SHOULDER",
    "RIGHT_SHOULDER",
    "LEFT_ELBOW",
    "RIGHT_ELBOW",
    "LEFT_WRIST",
    "RIGHT_WRIST",
    "LEFT_HIP",
    "RIGHT_HIP",
)
REDUCED_FACE_INDICES = (
    0,
    7,
    10,
    13,
    14,
    17,
    21,
    33,
    37,
    39,
    40,
    46,
    52,
    53,
    54,
    55,
    58,
    61,
    63,
    65,
    66,
    67,
    70,
    78,
    80,
    81,
    82,
    84,
    87,
    88,
    91,
    93,
    95,
    103,
    105,
    107,
    109,
    127,
    132,
    133,
    136,
    144,
    145,
    146,
    148,
    149,
    150,
    152,
    153,
    154,
    155,
    157,
    158,
    159,
    160,
    161,
    162,
    163,
    172,
    173,
    176,
    178,
    181,
    185,
    191,
    234,
    246,
    249,
    251,
    263,
    267,
    269,
    270,
    276,
    282,
    283,
    284,
    285,
    288,
    291,
    293,
    295,
    296,
    297,
    300,
    308,
    310,
    311,
    312,
    314,
    317,
    318,
    321,
    323,
    324,
    332,
    334,
    336,
    338,
    356,
    361,
    362,
    365,
    373,
    374,
    375,
    377,
    378,
    379,
    380,
    381,
    382,
    384,
    385,
    386,
    387,
    388,
    389,
    390,
    397,
    398,
    400,
    402,
    405,
    409,
    415,
    454,
    466,
)

# YouTube-ASL (Uthus et al. 2023): shoulders, elbows, hips.
YOUTUBE_ASL_POSE_INDICES = (11, 12, 13, 14, 23, 24)
# Eyes, eyebrows, lips and face outline, then the two iris centres (refined mesh only).
YOUTUBE_ASL_FACE_INDICES = (
    0,
    4,
    13,
    14,
    17,
    33,
    37,
    39,
    46,
    52,
    55,
    61,
    64,
    81,
    82,
    93,
    133,
    151,
    152,
    159,
    172,
    178,
    181,
    263,
    269,
    276,
    282,
    285,
    291,
    294,
    311,
    323,
    362,
    386,
    397,
    468,
    473,
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

NORMALIZATIONS = ("unit_box", "shoulder", "shoulder_clip", "none")
# Columns of the two shoulders (pose points 11 and 12) in the 85-point subset.
LEFT_SHOULDER_COLUMN, RIGHT_SHOULDER_COLUMN = 0, 1


def _component_names(name: str, size: int) -> tuple[str, ...] | None:
    """MediaPipe's names of a full-size component, or None if the size is not full."""
    if name in (POSE_COMPONENT, POSE_WORLD_COMPONENT) and size == POSE_POINTS:
        return POSE_LANDMARK_NAMES
    if name == FACE_COMPONENT and size in (FACE_POINTS, FACE_POINTS_REFINED):
        return tuple(str(i) for i in range(size))
    if name in (LEFT_HAND_COMPONENT, RIGHT_HAND_COMPONENT) and size == HAND_POINTS:
        return HAND_LANDMARK_NAMES
    return None


def _layout(parts) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((name, tuple(points)) for name, points in parts)


_FACE = tuple(str(i) for i in range(FACE_POINTS))
_FACE_REFINED = tuple(str(i) for i in range(FACE_POINTS_REFINED))
_REDUCED_FACE = tuple(str(i) for i in REDUCED_FACE_INDICES)
_HANDS = ((LEFT_HAND_COMPONENT, HAND_LANDMARK_NAMES), (RIGHT_HAND_COMPONENT, HAND_LANDMARK_NAMES))
# Point count -> (component, point names) of the holistic layouts pose-format writes,
# used for arrays that carry no header (.npy, .npz, TFDS features). In file order.
HOLISTIC_LAYOUTS: dict[int, tuple[tuple[str, tuple[str, ...]], ...]] = {
    543: _layout([(POSE_COMPONENT, POSE_LANDMARK_NAMES), (FACE_COMPONENT, _FACE), *_HANDS]),
    553: _layout([(POSE_COMPONENT, POSE_LANDMARK_NAMES), (FACE_COMPONENT, _FACE_REFINED), *_HANDS]),
    576: _layout(
        [
            (POSE_COMPONENT, POSE_LANDMARK_NAMES),
            (FACE_COMPONENT, _FACE),
            *_HANDS,
            (POSE_WORLD_COMPONENT, POSE_LANDMARK_NAMES),
        ]
    ),
    586: _layout(
        [
            (POSE_COMPONENT, POSE_LANDMARK_NAMES),
            (FACE_COMPONENT, _FACE_REFINED),
            *_HANDS,
            (POSE_WORLD_COMPONENT, POSE_LANDMARK_NAMES),
        ]
    ),
    # pose-format's reduce_holistic (e.g. the pose repo's test files).
    178: _layout([(POSE_COMPONENT, REDUCED_POSE_NAMES), (FACE_COMPONENT, _REDUCED_FACE), *_HANDS]),
    # sign-language-datasets' wmt_slt: full pose, face contours, hands.
    203: _layout([(POSE_COMPONENT, POSE_LANDMARK_NAMES), (FACE_COMPONENT, _REDUCED_FACE), *_HANDS]),
}


def holistic_layout(
    num_points: int, source: str = "<array>"
) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, ...], ...]]:
    """(components, point names) of a header-less holistic array with N points.

    Raises:
      ValueError: N is not one of the known holistic layouts.
    """
    if num_points == NUM_POINTS:  # already the 85-point subset
        return (
            tuple((name, len(idx)) for name, idx in YOUTUBE_ASL_SUBSET),
            tuple(tuple(_subset_name(name, i) for i in idx) for name, idx in YOUTUBE_ASL_SUBSET),
        )
    if num_points not in HOLISTIC_LAYOUTS:
        raise ValueError(
            f"{source}: {num_points} points per frame is not a MediaPipe Holistic layout "
            f"this reader knows ({sorted([NUM_POINTS, *HOLISTIC_LAYOUTS])}); store "
            "landmarks in one of them, or as a .pose file whose header names the points."
        )
    layout = HOLISTIC_LAYOUTS[num_points]
    return (
        tuple((name, len(points)) for name, points in layout),
        tuple(points for _, points in layout),
    )


def _subset_name(component: str, index: int) -> str:
    if component == POSE_COMPONENT:
        return POSE_LANDMARK_NAMES[index]
    if component == FACE_COMPONENT:
        return str(index)
    return HAND_LANDMARK_NAMES[index]


@dataclasses.dataclass(frozen=True)
class LandmarkConfig:
    """How raw holistic landmarks become model frames.

    Saved next to every checkpoint and prepared dataset (`to_json`) so translation
    repeats it exactly.

    Attributes:
      normalization: "unit_box" (default, as YouTube-ASL) scales the whole clip (all
        frames, all present points) into the unit box: x and y keep their aspect
        ratio, z is scaled by the same factor. "shoulder" normalises each frame on
        its own: the shoulder midpoint goes to the origin and the shoulder distance
        becomes 1 (xyz); frames without both shoulders use the clip's mean centre and
        distance. "shoulder_clip" is pose-format's `Pose.normalize()`: one centre
        (the mean shoulder midpoint) and one scale (the mean shoulder distance) for
        the whole clip. Both shoulder modes fail on a clip where no frame has both
        shoulders. "none" keeps coordinates as they are.
      frame_step: keep every `frame_step`-th frame (YouTube-ASL drops every second).
        Used when `target_fps` is None.
      target_fps: if set, resample the clip to this frame rate instead of
        `frame_step`: each output frame is the input frame nearest in time (no
        blending, so every frame stays a real estimate). Needs the clip's fps.
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
    target_fps: float | None = None

    def __post_init__(self):
        for name in ("feature_mean", "feature_std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
                if len(getattr(self, name)) != FRAME_DIM:
                    raise ValueError(
                        f"LandmarkConfig.{name} needs {FRAME_DIM} values, got {len(value)}."
                    )
        if (self.feature_mean is None) != (self.feature_std is None):
            raise ValueError("LandmarkConfig: give both feature_mean and feature_std, or neither.")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"LandmarkConfig.normalization={self.normalization!r} is not one of "
                f"{NORMALIZATIONS}."
            )
        if self.frame_step < 1:
            raise ValueError(f"LandmarkConfig.frame_step must be >= 1, got {self.frame_step}.")
        if self.max_frames < 1:
            raise ValueError(f"LandmarkConfig.max_frames must be >= 1, got {self.max_frames}.")
        if self.target_fps is not None and not self.target_fps > 0:
            raise ValueError(
                f"LandmarkConfig.target_fps must be > 0 or None, got {self.target_fps}."
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LandmarkConfig:
        return cls(**json.loads(text))


class _LayoutError(ValueError):
    """A layout the subset cannot be read from; the message lacks the source."""


def _subset_gather(components, point_names, source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Flat indices [85] of the subset in a layout (-1: absent), and the absent names.

    Cached per layout (not per file), so a corpus of one layout computes it once.
    """
    try:
        return _subset_gather_cached(components, point_names)
    except _LayoutError as e:
        raise ValueError(f"{source}: {e}") from None


@functools.lru_cache(maxsize=64)
def _subset_gather_cached(
    components: tuple[tuple[str, int], ...], point_names: tuple[tuple[str, ...], ...] | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    offsets, names, total = {}, {}, 0
    for k, (name, size) in enumerate(components):
        offsets[name] = total
        given = point_names[k] if point_names is not None else None
        if given is not None and len(given) != size:
            raise _LayoutError(
                f"component {name} has {size} points but "
                f"{len(given)} point names; the header is inconsistent."
            )
        names[name] = given if given is not None else _component_names(name, size)
        total += size
    gather, absent = [], []
    for name, indices in YOUTUBE_ASL_SUBSET:
        if name not in offsets:
            raise _LayoutError(
                f"the pose has no {name} component (it has "
                f"{sorted(offsets)}); the YouTube-ASL subset needs MediaPipe "
                f"Holistic landmarks with pose, face and both hands."
            )
        size = dict(components)[name]
        if names[name] is None:
            raise _LayoutError(
                f"component {name} has {size} points and no point names, so "
                f"the YouTube-ASL points cannot be found in it; give a full MediaPipe "
                f"component or a .pose header that names its points."
            )
        where = {point: i for i, point in enumerate(names[name])}
        wanted = [_subset_name(name, i) for i in indices]
        lacking = [w for w in wanted if w not in where]
        if lacking and name != FACE_COMPONENT:
            raise _LayoutError(
                f"component {name} ({size} points) lacks {lacking}; the "
                f"YouTube-ASL subset needs all of {wanted}."
            )
        if len(lacking) == len(wanted):
            raise _LayoutError(
                f"{FACE_COMPONENT} holds none of the YouTube-ASL "
                "face points; it is not a MediaPipe face mesh."
            )
        for w in wanted:
            gather.append(offsets[name] + where[w] if w in where else -1)
        absent += [f"{name}:{w}" for w in lacking]
    return np.asarray(gather, np.int64), tuple(absent)


def _as_key(components, point_names):
    comps = tuple((str(n), int(s)) for n, s in components)
    names = (
        None if point_names is None else tuple(None if p is None else tuple(p) for p in point_names)
    )
    return comps, names


def absent_youtube_asl_points(
    components: Sequence[tuple[str, int]],
    point_names: Sequence[Sequence[str]] | None = None,
    source: str = "<array>",
) -> tuple[str, ...]:
    """The subset points a layout lacks, as "COMPONENT:point" (always marked missing).

    A 468-point face lacks the iris centres ("FACE_LANDMARKS:468", ":473");
    pose-format's reduced face contours (178/203-point layouts) also lack face points
    4, 64, 151 and 294.
    """
    return _subset_gather(*_as_key(components, point_names), source)[1]


def select_youtube_asl(
    points: np.ndarray,
    present: np.ndarray,
    components: Sequence[tuple[str, int]],
    source: str = "<array>",
    point_names: Sequence[Sequence[str]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Picks the 85 YouTube-ASL points out of a holistic layout.

    Points are found by name (MediaPipe's PoseLandmark and HandLandmark names, face
    mesh indices as strings), so every pose-format holistic layout works: 543/553
    (468/478-point face), 576/586 (plus world landmarks, ignored) and the reduced
    178/203-point layouts.

    What a layout may lack: pose and hand points are required (an error names the
    missing ones). Face points the layout lacks are marked missing in every frame,
    exactly like an undetected point: the two iris centres (468, 473) without a
    refined face mesh, and also face points 4, 64, 151 and 294 in the reduced
    face-contour layouts. `absent_youtube_asl_points` lists them for reporting.

    Args:
      points: float [T, N, >=3] coordinates.
      present: bool [T, N], False where the estimator found no point.
      components: (name, number of points) of each component, in file order; their
        sizes must add up to N.
      source: names the input in error messages.
      point_names: the names of each component's points (as a .pose header gives
        them); None: full-size MediaPipe components in MediaPipe order.

    Returns:
      ([T, 85, 3] float32 points, [T, 85] bool presence).
    """
    total = sum(size for _, size in components)
    if points.ndim != 3 or points.shape[1] != total or points.shape[2] < NUM_DIMS:
        raise ValueError(
            f"{source}: landmarks have shape {points.shape}, but the components "
            f"{[c for c, _ in components]} hold {total} points with at least "
            f"{NUM_DIMS} dims; the file's header and body disagree."
        )
    gather, _ = _subset_gather(*_as_key(components, point_names), source)
    have = gather >= 0
    safe = np.where(have, gather, 0)
    out_points = points[:, safe, :NUM_DIMS].astype(np.float32)
    out_present = present[:, safe] & have
    out_points[:, ~have] = 0.0
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


def normalize_shoulders(
    points: np.ndarray, present: np.ndarray, per_frame: bool = True, source: str = "<array>"
) -> np.ndarray:
    """Centres on the shoulder midpoint and scales the shoulder distance to 1.

    per_frame=False is pose-format's `Pose.normalize()` (one clip-wide centre and
    scale: the means over frames with both shoulders). per_frame=True uses each
    frame's own shoulders, and the clip-wide values where a frame lacks one.

    Raises:
      ValueError: no frame has both shoulders.
    """
    left = points[:, LEFT_SHOULDER_COLUMN].astype(np.float64)
    right = points[:, RIGHT_SHOULDER_COLUMN].astype(np.float64)
    both = present[:, LEFT_SHOULDER_COLUMN] & present[:, RIGHT_SHOULDER_COLUMN]
    if not both.any():
        raise ValueError(
            f"{source}: no frame has both shoulders, so shoulder normalisation is "
            "undefined; use normalization='unit_box' for this clip."
        )
    centre = (left + right) / 2  # [T, 3]
    distance = np.linalg.norm(left - right, axis=-1)  # [T]
    clip_centre = centre[both].mean(axis=0)
    clip_distance = max(float(distance[both].mean()), 1e-6)
    if per_frame:
        usable = both & (distance > 1e-6)
        centre = np.where(usable[:, None], centre, clip_centre)
        distance = np.where(usable, distance, clip_distance)
        out = (points - centre[:, None, :]) / distance[:, None, None]
    else:
        out = (points - clip_centre) / clip_distance
    return out.astype(np.float32)


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


def frame_indices(
    num_frames: int, config: LandmarkConfig, fps: float | None = None, source: str = "<array>"
) -> np.ndarray:
    """Which input frames the model sees, in order (before the `max_frames` cut).

    `frame_step`, or with `target_fps` the input frame nearest in time to each output
    time step k / target_fps, over the clip's duration num_frames / fps (ties go to the
    later frame).
    """
    if config.target_fps is None:
        return np.arange(0, num_frames, config.frame_step)
    if fps is None or not fps > 0:
        raise ValueError(
            f"{source}: LandmarkConfig.target_fps={config.target_fps} needs "
            f"the clip's frame rate, got fps={fps}."
        )
    count = int(np.floor(num_frames * config.target_fps / fps + 1e-9))
    times = np.arange(count) / config.target_fps
    # Nearest frame; a tie (exactly half-way) goes to the later frame.
    return np.minimum(np.floor(times * fps + 0.5 + 1e-9).astype(np.int64), num_frames - 1)


def to_frames(
    points: np.ndarray,
    present: np.ndarray,
    config: LandmarkConfig = LandmarkConfig(),
    fps: float | None = None,
    source: str = "<array>",
) -> np.ndarray:
    """Normalises, reduces the frame rate and flattens 85-point landmarks.

    Args:
      points: [T, 85, 3] coordinates from `select_youtube_asl`.
      present: [T, 85] presence.
      config: the preprocessing to apply.
      fps: the clip's frame rate; needed only with `config.target_fps`.
      source: names the input in error messages.

    Returns:
      float32 [T', 255] frames, missing points set to `config.missing_value`.
    """
    if points.shape[1:] != (NUM_POINTS, NUM_DIMS):
        raise ValueError(f"expected [T, {NUM_POINTS}, {NUM_DIMS}] points, got {points.shape}")
    low = None
    if config.normalization == "unit_box":
        # The box comes from all frames; the transform is applied only to the frames
        # kept below (element-wise, so the same values as transforming all first).
        low, high = bounds(points, present)
        if low is None:
            points = np.zeros_like(points)
    elif config.normalization in ("shoulder", "shoulder_clip"):
        points = normalize_shoulders(
            points, present, per_frame=config.normalization == "shoulder", source=source
        )
    if config.target_fps is None:
        points = points[:: config.frame_step][: config.max_frames]
        present = present[:: config.frame_step][: config.max_frames]
    else:
        keep = frame_indices(points.shape[0], config, fps, source)[: config.max_frames]
        points, present = points[keep], present[keep]
    flat = points.reshape(points.shape[0], FRAME_DIM)
    if low is not None:
        extent = high - low
        scale = max(float(extent[0]), float(extent[1]), 1e-6)
        # As normalize_unit_box, on [T, 255] rows (fast) rather than [T, 85, 3].
        flat = ((flat - np.tile(low, NUM_POINTS)) / scale).astype(np.float32)
    if config.feature_mean is not None:
        mean, std = _standardisation(config.feature_mean, config.feature_std)
        flat = (flat - mean) / std
    present = np.repeat(present, NUM_DIMS, axis=1)
    return np.where(present, flat, np.float32(config.missing_value)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _standardisation(
    mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    arrays = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    for a in arrays:
        a.setflags(write=False)
    return arrays


def feature_statistics(
    clips: Sequence[tuple[np.ndarray, np.ndarray]],
    config: LandmarkConfig = LandmarkConfig(),
    min_std: float = 1e-3,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and std of present points over (points, present) clips.

    Use them as `LandmarkConfig.feature_mean/feature_std`. Features never present
    get mean 0 and std 1.
    """
    base = dataclasses.replace(config, feature_mean=None, feature_std=None, missing_value=np.nan)
    frames = np.concatenate([to_frames(p, m, base) for p, m in clips])
    have = np.isfinite(frames)
    count = have.sum(axis=0)
    values = np.where(have, frames, 0.0)
    mean = values.sum(axis=0) / np.maximum(count, 1)
    var = (np.where(have, frames - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count, 1)
    std = np.where(count > 0, np.maximum(np.sqrt(var), min_std), 1.0)
    return tuple(mean.tolist()), tuple(std.tolist())
