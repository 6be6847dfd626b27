"""Predictions of a task split as sharded, resumable JSONL files (`python -m slt.infer`).

Shard k, `<task>.<split>.predictions-0000k.jsonl`, holds examples
[k * chunk_size, (k + 1) * chunk_size) in the split's order, one JSON object per line:
id, prompt, prediction, target (if the task has one) and score. Each shard is written
to a temporary file and renamed when complete, so a restart skips exactly the shards
that exist (their examples are read again but not decoded) and redoes any shard that
was cut off. `<task>.<split>.done.json` marks a finished task; `<task>.<split>.run.json`
records `chunk_size` and the run's settings, and a restart with other values is
refused (the shards would not line up).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax

from slt import predict


def write_jsonl(path: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """One JSON object per line, written to `path.tmp` and renamed when complete."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def shard_path(output_dir: str, task: str, split: str, chunk: int) -> str:
    return os.path.join(output_dir, f"{task}.{split}.predictions-{chunk:05d}.jsonl")


def _check_run(prefix: str, run: Mapping[str, Any]) -> None:
    """Records `run` beside the shards, or refuses to add to shards of another run."""
    previous = None
    if jax.process_index() == 0 and os.path.isfile(prefix + ".run.json"):
        with open(prefix + ".run.json", encoding="utf-8") as f:
            previous = json.load(f)
    if predict.process_zero_says(previous is not None and previous != run):
        raise ValueError(
            f"{prefix}.run.json: the shards there were written with "
            f"{previous or 'other settings'}, this run has {dict(run)}; use the same "
            "settings to resume, or another output_dir."
        )
    if jax.process_index() == 0 and previous is None:
        with open(prefix + ".run.json", "w", encoding="utf-8") as f:
            json.dump(run, f)


def write_task_predictions(
    predictor: predict.Predictor,
    task_name: str,
    split: str,
    output_dir: str,
    chunk_size: int = 1024,
    run_info: Mapping[str, Any] | None = None,
    show_progress: bool = True,
    on_chunk_written: Callable[[int, str], None] | None = None,
) -> dict[str, int]:
    """Writes the prediction shards of a task split that are not there yet (process 0
    writes; every process decodes its part).

    `run_info` (e.g. checkpoint, step, decoding options) is recorded with `chunk_size`;
    `on_chunk_written(k, path)` is called after shard k is written. Returns counts:
    shards written and skipped, examples decoded and in total.
    """
    os.makedirs(output_dir, exist_ok=True)
    prefix = os.path.join(output_dir, f"{task_name}.{split}")
    # Process 0 decides what is on disk (every process must take the same branches).
    if predict.process_zero_says(os.path.isfile(prefix + ".done.json")):
        with open(prefix + ".done.json", encoding="utf-8") as f:
            done = json.load(f)
        return {
            **done,
            "shards_written": 0,
            "shards_skipped": done["shards"],
            "examples_decoded": 0,
        }
    _check_run(prefix, {"chunk_size": chunk_size, **dict(run_info or {})})
    num_shards = predict.host_input_shard(predictor.batch_sharding, predictor.batch_size).num_shards
    if chunk_size % num_shards:
        raise ValueError(
            f"infer.chunk_size={chunk_size} must be a multiple of the "
            f"{num_shards} input shards of this job's processes."
        )

    counts = {"shards_written": 0, "shards_skipped": 0, "examples_decoded": 0, "examples": 0}
    num_chunks = 0
    with contextlib.closing(
        predict.predict_chunks(
            predictor,
            task_name,
            split,
            chunk_size,
            show_progress,
            skip=lambda k: os.path.isfile(shard_path(output_dir, task_name, split, k)),
        )
    ) as chunks:
        for chunk in chunks:
            num_chunks += 1
            counts["examples"] += chunk.size
            if chunk.predictions is None:
                counts["shards_skipped"] += 1
                continue
            path = shard_path(output_dir, task_name, split, chunk.index)
            if jax.process_index() == 0:
                write_jsonl(path, chunk.predictions)
            counts["shards_written"] += 1
            counts["examples_decoded"] += len(chunk.predictions)
            if on_chunk_written is not None:
                on_chunk_written(chunk.index, path)
    if jax.process_index() == 0:
        with open(prefix + ".done.json", "w", encoding="utf-8") as f:
            json.dump({"shards": num_chunks, "examples": counts["examples"]}, f)
    return counts


def read_predictions(output_dir: str, task_name: str, split: str) -> list[dict[str, Any]]:
    """All predictions of a task split from its shards, in order."""
    pattern = glob.escape(f"{task_name}.{split}.predictions-") + "[0-9]*.jsonl"
    rows = []
    for path in sorted(glob.glob(os.path.join(output_dir, pattern))):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return rows
