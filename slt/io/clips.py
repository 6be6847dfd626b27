"""One manifest clip -> model frames, or the reason it cannot be used.

Runs in `slt.prepare`'s worker processes, so it imports numpy and the readers only
(no TensorFlow): a worker starts in well under a second.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from slt.data import errors, landmarks
from slt.data.manifest import ClipSpec
from slt.io import readers


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """What `slt.prepare` does with each clip besides the landmark config."""

    config: landmarks.LandmarkConfig = landmarks.LandmarkConfig()
    min_frames: int = 2  # fewer output frames: reported `too_short`
    truncate_long: bool = False  # False: clips over config.max_frames are `too_long`


@dataclasses.dataclass(frozen=True)
class PreparedClip:
    spec: ClipSpec
    frames: np.ndarray  # float32 [T, 255]
    fps: float  # of the output frames; 0.0 if unknown
    caption_frames: np.ndarray  # int64 [C, 2]: start, end output frame per caption
    absent_points: tuple[str, ...]  # subset points this file's layout lacks
    truncated_from: int  # output frames before a --truncate_long cut, else 0


def _output_fps(fps: float, config: landmarks.LandmarkConfig) -> float:
    if config.target_fps is not None:
        return float(config.target_fps)
    return fps / config.frame_step if fps > 0 else 0.0


def prepare_clip(spec: ClipSpec, options: PrepareOptions) -> PreparedClip:
    """Reads, checks, crops and converts one clip.

    Raises:
      BadInput: with one of `errors.REASONS` and a message naming the file.
    """
    config = options.config
    pose = readers.read_holistic(spec.path)
    readers.check_holistic(pose)
    fps = spec.fps if spec.fps else pose.fps
    needs_fps = (
        spec.start is not None
        or spec.end is not None
        or spec.captions
        or config.target_fps is not None
    )
    if needs_fps and not fps > 0:
        raise errors.BadInput(
            "no_fps",
            f"{spec.path}: the file stores no frame rate, and start/end, "
            "captions or target_fps need one; add `fps` to the manifest row.",
        )
    points, present = pose.youtube_asl()
    first = 0
    if spec.start is not None or spec.end is not None:
        first = int(round((spec.start or 0.0) * fps))
        last = pose.num_frames if spec.end is None else int(round(spec.end * fps))
        points, present = points[first:last], present[first:last]
        if points.shape[0] == 0:
            raise errors.BadInput(
                "zero_frames",
                f"{spec.path}: no frames in [{spec.start}, {spec.end}) s; "
                f"the file has {pose.num_frames} frames at {fps} fps.",
            )
    num_out = len(landmarks.frame_indices(points.shape[0], config, fps, spec.path))
    if num_out < options.min_frames:
        raise errors.BadInput(
            "too_short",
            f"{spec.path}: {num_out} frames after frame-rate reduction, fewer "
            f"than --min_frames={options.min_frames}.",
        )
    truncated_from = 0
    if num_out > config.max_frames:
        if not options.truncate_long:
            raise errors.BadInput(
                "too_long",
                f"{spec.path}: {num_out} frames after frame-rate reduction, more "
                f"than max_frames={config.max_frames}; split the clip, raise --max_frames, "
                "or pass --truncate_long to cut it.",
            )
        truncated_from = num_out
    if (
        config.normalization in ("shoulder", "shoulder_clip")
        and not (
            present[:, landmarks.LEFT_SHOULDER_COLUMN] & present[:, landmarks.RIGHT_SHOULDER_COLUMN]
        ).any()
    ):
        raise errors.BadInput(
            "no_shoulders",
            f"{spec.path}: no frame has both shoulders; shoulder "
            "normalisation is undefined. Use --normalization=unit_box.",
        )
    frames = landmarks.to_frames(points, present, config, fps=fps, source=spec.path)
    out_fps = _output_fps(fps, config)
    clip_start = first / fps if fps > 0 else 0.0
    caption_frames = np.asarray(
        [
            [
                int(np.floor((c.start - clip_start) * out_fps)),
                int(np.ceil((c.end - clip_start) * out_fps)),
            ]
            for c in spec.captions
        ],
        np.int64,
    ).reshape(-1, 2)
    caption_frames = np.clip(caption_frames, 0, frames.shape[0])
    return PreparedClip(
        spec=spec,
        frames=frames,
        fps=out_fps,
        caption_frames=caption_frames,
        absent_points=pose.absent_points(),
        truncated_from=truncated_from,
    )


def prepare_or_reason(
    job: tuple[int, ClipSpec, PrepareOptions],
) -> tuple[int, PreparedClip | tuple[str, str]]:
    """Worker entry: (index, clip or (reason, message)). Never raises on bad input."""
    index, spec, options = job
    try:
        return index, prepare_clip(spec, options)
    except errors.BadInput as e:
        return index, (e.reason, str(e))
    except MemoryError:
        raise
    # An unexpected failure of one file must not stop the run: it is reported instead.
    except Exception as e:  # noqa: BLE001
        return index, ("read_failed", f"{spec.path}: unexpected {type(e).__name__}: {e}")
