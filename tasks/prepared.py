"""seqio tasks over datasets written by `python -m slt.prepare`.

    from tasks import prepared
    prepared.register_prepared_task("mycorpus_slt", "data/mycorpus")
    # then: python -m slt.train ... --gin.train.mixture_or_task_name=\"mycorpus_slt\"

The source is file-sharded: with a `seqio.ShardInfo(index, num_shards)` (what the
trainer derives from each host's position on the mesh) every host reads a disjoint
subset of the shard files, so prepare at least as many shards per split as hosts
(`--examples_per_shard`). Examples get the prompt `<slt> <sign> <spoken>` from
`tasks/languages.py::prompt`, one per language pair found in the dataset, and the
landmark config the dataset was prepared with is recorded in
`tasks.LANDMARK_CONFIGS`, so checkpoints save it and translation repeats it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import seqio
import tensorflow as tf

from slt import features, landmarks, shards
from tasks import languages, paper_tasks, preprocessors


def dataset_info(data_dir: str) -> dict:
    """The prepared dataset's `dataset_info.json`; an error says how to make it."""
    path = os.path.join(data_dir, shards.INFO_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: {data_dir} is not a complete prepared dataset. Run "
            "`python -m slt.prepare --manifest=... --output_dir=" + data_dir + "` (without "
            "--strict failures) first."
        )
    with open(path) as f:
        info = json.load(f)
    if info.get("format") != shards.FORMAT:
        raise ValueError(f"{path}: format {info.get('format')!r}, expected {shards.FORMAT!r}.")
    return info


def landmark_config(data_dir: str) -> landmarks.LandmarkConfig:
    """The preprocessing the dataset's frames went through."""
    return landmarks.LandmarkConfig(**dataset_info(data_dir)["landmark_config"])


class PreparedDataSource(seqio.FileDataSource):
    """Reads the shards of a prepared dataset; file-sharded under a ShardInfo."""

    def __init__(self, data_dir: str, splits: Sequence[str] | None = None):
        info = dataset_info(data_dir)
        available = info["splits"]
        splits = list(splits or available)
        unknown = [s for s in splits if s not in available]
        if unknown:
            raise ValueError(
                f"{data_dir}: no prepared split {unknown}; it has {sorted(available)}."
            )
        self._data_dir = data_dir
        self._files = {
            s: [os.path.join(data_dir, n) for n in available[s]["shards"]] for s in splits
        }
        super().__init__(
            read_file_fn=lambda path: tf.data.TFRecordDataset(path).map(
                shards.parse, num_parallel_calls=tf.data.AUTOTUNE
            ),
            split_to_filepattern=self._files,
            num_input_examples={s: available[s]["num_examples"] for s in splits},
        )

    def list_shards(self, split: str) -> Sequence[str]:
        # The exact files of dataset_info.json (no glob, no stale leftovers).
        return list(self._files[split])


def _slt_examples(prompts: Mapping[str, str]):
    """A preprocessor: parsed shard examples -> {landmarks, inputs, targets, id}."""
    keys = tf.constant(list(prompts))
    values = tf.constant([prompts[k] for k in prompts])
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, values), default_value=""
    )

    def to_task_features(dataset: tf.data.Dataset) -> tf.data.Dataset:
        def convert(ex):
            pair = tf.strings.join([ex["sign_language"], "-", ex["spoken_language"]])
            return {
                features.LANDMARKS: ex["landmarks"],
                features.INPUTS: table.lookup(pair),
                features.TARGETS: ex["text"],
                "id": ex["id"],
            }

        return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    return to_task_features


def register_prepared_task(
    name: str,
    data_dir: str,
    splits: Sequence[str] | None = None,
    vocabulary: seqio.Vocabulary | None = None,
    shuffle_buffer_size: int = 10_000,
) -> seqio.Task:
    """Registers a seqio SLT task over a prepared dataset, in one call.

    Args:
      name: the task name (replaces a task of that name).
      data_dir: a `python -m slt.prepare` output directory.
      splits: which prepared splits to expose; default all.
      vocabulary: of `inputs` and `targets`; default ByT5 bytes.
      shuffle_buffer_size: examples to shuffle over (files are shuffled too).

    Returns:
      The registered task, with features `landmarks`, `inputs`, `targets` (and `id`).
    """
    info = dataset_info(data_dir)
    pairs = sorted(
        {pair for s in (splits or info["splits"]) for pair in info["splits"][s]["languages"]}
    )
    prompts = {pair: languages.prompt("slt", *pair.split("-", 1)) for pair in pairs}
    config = landmark_config(data_dir)
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    task = seqio.TaskRegistry.add(
        name,
        source=PreparedDataSource(data_dir, splits),
        preprocessors=[
            _slt_examples(prompts),
            preprocessors.tokenize_text,
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=features.task_output_features(vocabulary),
        shuffle_buffer_size=shuffle_buffer_size,
    )
    paper_tasks.LANDMARK_CONFIGS[name] = lambda: config
    return task


def prepared_task(name: str, data_dir: str) -> str:
    """`register_prepared_task` that returns the name, for gin files:

    train.mixture_or_task_name = @slt.prepared_task()
    slt.prepared_task.name = "mycorpus_slt"
    slt.prepared_task.data_dir = "data/mycorpus"
    """
    register_prepared_task(name, data_dir)
    return name
