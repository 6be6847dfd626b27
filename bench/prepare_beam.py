"""`slt.prepare` locally and on Apache Beam's DirectRunner, and YouTube-ASL on paper.

Measures, in one run on this machine, on the same manifest of real fingerspelling
.pose files (shipped with `spoken-to-signed`):
  1. clips/s and frames/s of the local path (1 worker process);
  2. the same with the Beam DirectRunner in multi-process mode, 1 and 2 workers
     (wall time, worker start-up included), and the ratio to the local path;
  3. MediaPipe Holistic's frames/s per core on the test video (if its environment is
     installed): what extracting videos costs, by far the largest per-frame cost.
Then projects, from the measured per-frame costs, the core-hours and the wall time on
N workers (one core each) for YouTube-ASL: 984 hours of video, taken at 30 frames/s.
Every output is checked: the Beam runs write the same shards as the local one.
Prints a final JSON line.

  python bench/prepare_beam.py [--clips 2000] [--workers_projection 100 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from slt import prepare, prepare_beam  # noqa: E402
from slt.io import (  # noqa: E402
    clips,  # noqa: E402
    pose_files,
    video,
)

YOUTUBE_ASL_HOURS = 984  # Uthus et al. 2023: 11,093 videos, 610,193 captions
ASSUMED_FPS = 30.0


def _manifest(directory: str, count: int) -> tuple[str, int]:
    from slt.tasks.fingerspelling import corpus as fingerspelling
    from slt.tasks.fingerspelling import tasks as fingerspelling_tasks

    spoken = fingerspelling_tasks.SIGN_TO_SPOKEN
    rows = [(p, sign, text) for p, _, sign, text in fingerspelling._index() if sign in spoken]
    rows = [rows[i % len(rows)] for i in range(count)]
    frames = {p: pose_files.read_pose(p).num_frames for p in {r[0] for r in rows}}
    path = os.path.join(directory, "clips.jsonl")
    with open(path, "w") as f:
        for file, sign, text in rows:
            row = {"path": file, "text": text, "sign_language": sign}
            f.write(json.dumps({**row, "spoken_language": spoken[sign]}) + "\n")
    return path, sum(frames[r[0]] for r in rows)


def _shards(directory: str) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in pathlib.Path(directory).iterdir() if ".tfrecord-" in p.name
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--workers_projection", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    options = clips.PrepareOptions()
    result: dict = {"clips": args.clips, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        manifest, input_frames = _manifest(tmp, args.clips)
        result["input_frames"] = input_frames
        start = time.perf_counter()
        local = prepare.prepare(
            manifest,
            os.path.join(tmp, "local"),
            options,
            examples_per_shard=250,
            num_workers=1,
            progress=False,
        )
        seconds = {"local_1_worker": time.perf_counter() - start}
        expected = _shards(os.path.join(tmp, "local"))
        for workers in (1, 2):
            out = os.path.join(tmp, f"beam{workers}")
            start = time.perf_counter()
            beam, _ = prepare_beam.prepare_beam(
                manifest,
                out,
                options,
                [
                    "--runner=DirectRunner",
                    "--direct_running_mode=multi_processing",
                    f"--direct_num_workers={workers}",
                ],
                examples_per_shard=250,
            )
            seconds[f"beam_direct_{workers}_workers"] = time.perf_counter() - start
            assert beam.num_written == local.num_written and _shards(out) == expected
    for name, s in seconds.items():
        result[f"{name}_clips_per_s"] = round(args.clips / s, 1)
        result[f"{name}_frames_per_s"] = round(input_frames / s)
    local_s = seconds["local_1_worker"]
    for workers in (1, 2):
        ratio = local_s / seconds[f"beam_direct_{workers}_workers"]
        result[f"beam_{workers}_workers_over_local"] = round(ratio, 3)
    # Per input frame, one core: reading .pose files and making model frames.
    convert_s_per_frame = local_s / input_frames
    if video.backend_available():
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        test_video = os.path.join(repo, "tests", "data", "test_video.mp4")
        start = time.perf_counter()
        frames = video.extract_holistic(test_video).num_frames
        mediapipe_s_per_frame = (time.perf_counter() - start) / frames
        result["mediapipe_frames_per_s_per_core"] = round(1 / mediapipe_s_per_frame, 2)
    else:
        mediapipe_s_per_frame = None
        result["mediapipe_frames_per_s_per_core"] = "not installed"
    frames_youtube_asl = YOUTUBE_ASL_HOURS * 3600 * ASSUMED_FPS
    per_frame = convert_s_per_frame + (mediapipe_s_per_frame or 0.0)
    core_hours = frames_youtube_asl * per_frame / 3600
    result["youtube_asl_frames"] = int(frames_youtube_asl)
    result["youtube_asl_core_hours"] = round(core_hours)
    result["youtube_asl_core_hours_from_poses"] = round(
        frames_youtube_asl * convert_s_per_frame / 3600, 1
    )
    for workers in args.workers_projection:
        result[f"youtube_asl_wall_hours_{workers}_workers"] = round(core_hours / workers, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
