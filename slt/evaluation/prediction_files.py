"""Predictions of a task split as sharded, resumable JSONL files (`python -m slt.infer`).

Shard k, `<task>.<split>.predictions-0000k.jsonl`, holds examples
[k * chunk_size, (k + 1) * chunk_size) in the split's order, one JSON object per line:
id, prompt, prediction, target (if the task has one) and score. Each shard is written
whole (locally to a temporary name, renamed when complete), so a restart skips exactly the shards
that exist (their examples are read again but not decoded) and redoes any shard that
was cut off. `<task>.<split>.done.json` marks a finished task; `<task>.<split>.run.json`
records `chunk_size` and the run's settings, and a restart with other values is
refused (the shards would not line up).
"""

from __future__ import annotations

import contextlib
import glob
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax

from slt import storage
from slt.evaluation import predict
from slt.training import partitioning


def write_jsonl(path: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """One JSON object per line, written whole (`slt.storage.write_text`): a reader
    sees the complete file or none."""
    storage.write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def shard_path(output_dir: str, task: str, split: str, chunk: int) -> str:
    return storage.join(output_dir, f"{task}.{split}.predictions-{chunk:05d}.jsonl")


def _check_run(prefix: str, run: Mapping[str, Any]) -> None:
    """Records `run` beside the shards, or refuses to add to shards of another run."""
    previous = None
    if jax.process_index() == 0 and storage.isfile(prefix + ".run.json"):
        previous = json.loads(storage.read_text(prefix + ".run.json"))
    if predict.process_zero_says(previous is not None and previous != run):
        raise ValueError(
            f"{prefix}.run.json: the shards there were written with "
            f"{previous or 'other settings'}, this run has {dict(run)}; use the same "
            "settings to resume, or another output_dir."
        )
    if jax.process_index() == 0 and previous is None:
        storage.write_text(prefix + ".run.json", json.dumps(run))


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
    storage.makedirs(output_dir)
    prefix = storage.join(output_dir, f"{task_name}.{split}")
    # Process 0 decides what is on disk (every process must take the same branches).
    if predict.process_zero_says(storage.isfile(prefix + ".done.json")):
        done = json.loads(storage.read_text(prefix + ".done.json"))
        return {
            **done,
            "shards_written": 0,
            "shards_skipped": done["shards"],
            "examples_decoded": 0,
        }
    _check_run(prefix, {"chunk_size": chunk_size, **dict(run_info or {})})
    num_shards = partitioning.host_input_shard(
        predictor.batch_sharding, predictor.batch_size
    ).num_shards
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
            skip=lambda k: storage.isfile(shard_path(output_dir, task_name, split, k)),
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
        done = {"shards": num_chunks, "examples": counts["examples"]}
        storage.write_text(prefix + ".done.json", json.dumps(done))
    return counts


def read_predictions(output_dir: str, task_name: str, split: str) -> list[dict[str, Any]]:
    """All predictions of a task split from its shards, in order."""
    pattern = glob.escape(f"{task_name}.{split}.predictions-") + "[0-9]*.jsonl"
    rows = []
    for path in storage.glob(output_dir, pattern):
        rows += [json.loads(line) for line in storage.read_text(path).splitlines()]
    return rows
