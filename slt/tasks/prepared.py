"""seqio tasks over datasets written by `python -m slt.prepare`.

    from slt.tasks import prepared
    prepared.register_prepared_task("mycorpus_slt", "data/mycorpus")
    # then: python -m slt.train ... --gin.train.mixture_or_task_name=\"mycorpus_slt\"

The task reads `slt.tasks.sources.PreparedClipSource`, the reader of the paper's clip
datasets. With a `seqio.ShardInfo(index, num_shards)` (what the trainer derives from
each host's position on the mesh) every host reads a disjoint subset of the shard
files; with fewer files than hosts, every host reads all of them and keeps every n-th
example, so prepare at least as many shards per split as hosts
(`--examples_per_shard`). Examples get the prompt `<slt> <sign> <spoken>` of their
own languages (`slt/tasks/languages.py`), and the landmark config the dataset was
prepared with is recorded in `tasks.LANDMARK_CONFIGS`, so checkpoints save it and
translation repeats it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

import seqio

from slt import storage
from slt.data import features, landmarks, shards
from slt.tasks import languages, sources
from slt.tasks.paper import tasks as paper_tasks


def dataset_info(data_dir: str) -> dict:
    """The prepared dataset's `dataset_info.json`; an error says how to make it."""
    path = storage.join(data_dir, shards.INFO_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: {data_dir} is not a complete prepared dataset. Run "
            "`python -m slt.prepare --manifest=... --output_dir=" + data_dir + "` (without "
            "--strict failures) first."
        )
    info = json.loads(storage.read_text(path))
    if info.get("format") != shards.FORMAT:
        raise ValueError(f"{path}: format {info.get('format')!r}, expected {shards.FORMAT!r}.")
    return info


def landmark_config(data_dir: str) -> landmarks.LandmarkConfig:
    """The preprocessing the dataset's frames went through."""
    return landmarks.LandmarkConfig(**dataset_info(data_dir)["landmark_config"])


def register_prepared_task(
    name: str,
    data_dir: str,
    splits: Sequence[str] | None = None,
    vocabulary: seqio.Vocabulary | None = None,
    shuffle_buffer_size: int = 10_000,
) -> seqio.Task:
    """Registers a seqio SLT task over a prepared dataset, in one call.

    The task reads `sources.PreparedClipSource` through `paper_tasks.add_slt_task`, as
    the paper's clip datasets do; each example's prompt names its own languages.

    Args:
      name: the task name (replaces a task of that name).
      data_dir: a `python -m slt.prepare` output directory.
      splits: which prepared splits to expose; default all.
      vocabulary: of `inputs` and `targets`; default ByT5 bytes.
      shuffle_buffer_size: examples to shuffle over (files are shuffled too).

    Returns:
      The registered task, with features `landmarks`, `inputs`, `targets` (and `id`).
    """
    available = dataset_info(data_dir)["splits"]
    splits = list(splits or available)
    unknown = [s for s in splits if s not in available]
    if unknown:
        raise ValueError(f"{data_dir}: no prepared split {unknown}; it has {sorted(available)}.")
    pairs = {pair for s in splits for pair in available[s]["languages"]}
    languages.check_codes({code for pair in pairs for code in pair.split("-", 1)}, data_dir)
    config = landmark_config(data_dir)
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    source = sources.PreparedClipSource(
        name,
        data_dir,
        "python -m slt.prepare --manifest=<manifest> --output_dir={root} --split={split}",
        splits,
    )
    return paper_tasks.add_slt_task(
        name,
        source,
        output_features=features.task_output_features(vocabulary),
        splits=splits,
        landmark_config=lambda: config,
        shuffle_buffer_size=shuffle_buffer_size,
    )


def prepared_task(name: str, data_dir: str) -> str:
    """`register_prepared_task` that returns the name, for gin files:

    train.mixture_or_task_name = @slt.prepared_task()
    slt.prepared_task.name = "mycorpus_slt"
    slt.prepared_task.data_dir = "data/mycorpus"
    """
    register_prepared_task(name, data_dir)
    return name


def register_for_model(data_dir: str, model: Any) -> str:
    """Registers the prepared dataset `data_dir` as task `prepared_<dir name>` for a
    trained model (`slt.evaluation.trained_model.TrainedModel`) and returns the name.
    The dataset's landmark preprocessing must be the one the model was trained with."""
    name = "prepared_" + re.sub(r"\W", "_", storage.name(data_dir))
    dataset_config = landmark_config(data_dir)
    if dataset_config != model.landmark_config:
        differ = sorted(
            k
            for k, v in dataclasses.asdict(dataset_config).items()
            if getattr(model.landmark_config, k) != v
        )
        raise ValueError(
            f"{data_dir}: prepared with another landmark config than the checkpoint "
            f"{model.checkpoint_dir} was trained with (fields {differ} differ); prepare "
            "it again with the checkpoint's landmark_config."
        )
    register_prepared_task(name, data_dir)
    return name
