"""The one exception readers and `slt.prepare` raise for an input they cannot use."""

from __future__ import annotations

# Every reason an input can be refused, with what to do about it. `slt.prepare`
# reports each refused input with one of these codes in `report.jsonl`.
REASONS = {
    "missing_file": "the file does not exist; fix the path in the manifest",
    "unsupported_format": "the extension is not .pose, .npy, .npz or a video",
    "corrupt_pose": "pose-format cannot parse the file; re-export it",
    "truncated_pose": "the file ends before the frames its header promises; re-export it",
    "corrupt_array": "numpy cannot load the file, or its arrays have the wrong shape",
    "video_failed": "MediaPipe could not read or process the video",
    "video_backend_missing": "the MediaPipe environment is not installed (docs/data.md, Videos)",
    "zero_frames": "the clip has no frames (or none in [start, end])",
    "non_finite": "a detected point has a NaN or Inf coordinate",
    "wrong_point_count": "the layout is not MediaPipe Holistic (or lacks needed points)",
    "too_short": "fewer frames than --min_frames after frame-rate reduction",
    "too_long": "more frames than --max_input_frames after frame-rate reduction",
    "no_shoulders": "shoulder normalisation needs a frame with both shoulders",
    "empty_caption": "the caption is empty or only whitespace",
    "caption_not_utf8": "the caption is not valid UTF-8",
    "unknown_sign_language": "the sign language code is not in slt/tasks/languages.py",
    "unknown_spoken_language": "the spoken language code is not in slt/tasks/languages.py",
    "start_after_end": "the clip's start time is not before its end time",
    "bad_manifest_row": "the manifest row is not valid JSON/TSV or lacks a field",
    "unknown_field": (
        "the manifest row has a field slt/data/manifest.py does not define; rename it to the "
        "field the message suggests, or prefix it with x_ to keep it as your own"
    ),
    "read_failed": "an unexpected error while reading or converting the file (see message)",
    "no_fps": "start/end times or target_fps need the clip's frame rate; give fps",
    "worker_lost": (
        "the worker preparing the clip died on every try (e.g. MediaPipe aborted the "
        "process); check the file, or extract it alone with python -m slt.io.video"
    ),
}


class BadInput(ValueError):
    """An input that cannot become training data; `reason` is a key of REASONS."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise KeyError(f"unknown BadInput reason {reason!r}")
        super().__init__(message)
        self.reason = reason
