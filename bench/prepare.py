"""How fast does `slt.prepare` turn real .pose files into shards?

Measures, in one run on this machine, on the real fingerspelling .pose files that
ship with `spoken-to-signed` (586 points, 6-258 frames each):
  1. prepare throughput: clips/s with 1 worker and with one worker per core, and
     clips/s per core (the 1-worker run; the parent writes the shards);
  2. frame processing alone, from an in-memory pose-format `Pose`: our vectorised
     `select_youtube_asl` + `to_frames` against a straightforward peer that selects
     the points with pose-format's `Pose.get_components` and normalises in a Python
     loop over frames and points. Both give the same frames (checked), and the
     ratio is peer time / ours.
Prints a final JSON line with the figures and the ratio.

  python bench/prepare.py [--clips 300] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from pose_format import Pose  # noqa: E402

from slt import prepare  # noqa: E402
from slt.data import landmarks  # noqa: E402
from slt.io import (
    clips,  # noqa: E402
    pose_files,  # noqa: E402
)

# `tasks` (seqio, TensorFlow) is imported inside functions: prepare's fork server
# imports this script, and its workers should stay light.


def _files(count: int, spoken) -> list[tuple[str, str, str]]:
    from slt.tasks.fingerspelling import corpus as fingerspelling

    rows = [(path, sign, text) for path, _, sign, text in fingerspelling._index() if sign in spoken]
    return [rows[i % len(rows)] for i in range(count)]


def prepare_rate(files, workers: int, spoken) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = os.path.join(tmp, "m.jsonl")
        with open(manifest, "w") as f:
            for path, sign, text in files:
                f.write(
                    json.dumps(
                        {
                            "path": path,
                            "text": text,
                            "sign_language": sign,
                            "spoken_language": spoken[sign],
                        }
                    )
                    + "\n"
                )
        start = time.perf_counter()
        result = prepare.prepare(
            manifest,
            os.path.join(tmp, "out"),
            clips.PrepareOptions(),
            examples_per_shard=100,
            num_workers=workers,
            progress=False,
        )
        seconds = time.perf_counter() - start
    assert result.num_inputs == len(files) == result.num_written + result.num_reported
    return len(files) / seconds, result.num_written


def _subset_names():
    names = {}
    for component, indices in landmarks.YOUTUBE_ASL_SUBSET:
        names[component] = [landmarks._subset_name(component, i) for i in indices]
    return names


def peer_frames(pose: Pose, config: landmarks.LandmarkConfig) -> np.ndarray:
    """The straightforward way: pose-format selection, then loops over frames/points."""
    names = _subset_names()
    subset = pose.get_components(list(names), names)
    data = subset.body.data
    confidence = subset.body.confidence
    num_frames, num_points = data.shape[0], data.shape[2]
    low = [np.inf] * 3
    high = [-np.inf] * 3
    for t in range(num_frames):
        for p in range(num_points):
            if confidence[t, 0, p] > 0:
                for d in range(3):
                    value = float(data.data[t, 0, p, d])
                    low[d] = min(low[d], value)
                    high[d] = max(high[d], value)
    scale = max(high[0] - low[0], high[1] - low[1], 1e-6)
    frames = []
    for t in range(0, num_frames, config.frame_step)[: config.max_frames]:
        row = []
        for p in range(num_points):
            if confidence[t, 0, p] > 0:
                row.extend((float(data.data[t, 0, p, d]) - low[d]) / scale for d in range(3))
            else:
                row.extend([config.missing_value] * 3)
        frames.append(row)
    return np.asarray(frames, np.float32)


def our_frames(pose: Pose, config: landmarks.LandmarkConfig) -> np.ndarray:
    points = np.ma.getdata(pose.body.data)[:, 0]
    present = np.asarray(pose.body.confidence)[:, 0] > 0
    components = tuple((c.name, len(c.points)) for c in pose.header.components)
    names = tuple(tuple(c.points) for c in pose.header.components)
    subset, subset_present = landmarks.select_youtube_asl(
        points, present, components, point_names=names
    )
    return landmarks.to_frames(subset, subset_present, config)


def frame_processing(files, repeats: int = 3) -> dict:
    config = landmarks.LandmarkConfig()
    poses = []
    for path, _, _ in files:
        with open(path, "rb") as f:
            poses.append(Pose.read(f.read()))
    for pose in poses[:20]:  # same output
        np.testing.assert_allclose(our_frames(pose, config), peer_frames(pose, config), atol=1e-5)
    timings = {}
    for name, fn in (("vectorised", our_frames), ("per_frame_loop", peer_frames)):
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            for pose in poses:
                fn(pose, config)
            best = min(best, time.perf_counter() - start)
        timings[name] = best / len(poses) * 1e3
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--frame_clips", type=int, default=100)
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    args = parser.parse_args()
    from slt.tasks.fingerspelling import tasks as fingerspelling_tasks

    spoken = fingerspelling_tasks.SIGN_TO_SPOKEN
    files = _files(args.clips, spoken)
    frames = sum(pose_files.read_pose(p).num_frames for p, _, _ in files[:50]) / 50
    workers = args.workers or os.cpu_count() or 1
    one, written = prepare_rate(files, 1, spoken)
    many, _ = prepare_rate(files, workers, spoken)
    timings = frame_processing(files[: args.frame_clips])
    result = {
        "clips": len(files),
        "written": written,
        "mean_input_frames": round(frames, 1),
        "cores": os.cpu_count(),
        "workers": workers,
        "prepare_clips_per_s_1_worker": round(one, 1),
        f"prepare_clips_per_s_{workers}_workers": round(many, 1),
        "prepare_clips_per_s_per_core": round(one, 1),
        "parallel_speedup": round(many / one, 2),
        "vectorised_ms_per_clip": round(timings["vectorised"], 3),
        "per_frame_loop_ms_per_clip": round(timings["per_frame_loop"], 3),
        "vectorised_speedup": round(timings["per_frame_loop"] / timings["vectorised"], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
