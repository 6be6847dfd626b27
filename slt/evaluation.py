"""Decode whole eval splits with the jitted, sharded model and score them.

Used by training (periodic and final evaluation); the batch evaluation job reuses it.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import seqio

from slt import features, metrics, partitioning

PredictFn = Callable[[Any, Mapping[str, jax.Array]], jax.Array]


def tokens_to_text(tokens: np.ndarray, vocabulary: seqio.Vocabulary) -> str:
    """Decodes ids up to (not including) the first EOS."""
    ids = [int(t) for t in tokens]
    if vocabulary.eos_id in ids:
        ids = ids[:ids.index(vocabulary.eos_id)]
    return vocabulary.decode([i for i in ids if i != 0])


def predict_task(predict_fn: PredictFn, params: Any, task_name: str, split: str,
                 task_feature_lengths: Mapping[str, int], batch_size: int,
                 batch_sharding: jax.sharding.NamedSharding) -> list[dict[str, Any]]:
    """Greedy predictions for every example of a task split, in dataset order.

    The last batch is padded with empty rows (all masks zero) so one compiled
    program serves the whole split; padded rows are dropped from the result.
    """
    task = seqio.get_mixture_or_task(task_name)
    if split not in task.splits:
        raise ValueError(f"task {task_name} has no split {split!r}; it has {list(task.splits)}.")
    vocabulary = task.output_features[features.TARGETS].vocabulary
    ds = task.get_dataset(dict(task_feature_lengths), split=split, shuffle=False,
                          num_epochs=1).cache()
    examples = list(ds.as_numpy_iterator())
    converter = features.LandmarkEncDecFeatureConverter()
    model_ds = converter(ds, dict(task_feature_lengths)).batch(batch_size)

    results = []
    for batch in model_ds.as_numpy_iterator():
        num_real = len(batch["decoder_target_tokens"])
        if num_real < batch_size:
            batch = {k: np.concatenate([v, np.zeros((batch_size - num_real,) + v.shape[1:],
                                                    v.dtype)]) for k, v in batch.items()}
        tokens = np.asarray(jax.device_get(
            predict_fn(params, partitioning.global_batch(batch, batch_sharding))))
        for row in tokens[:num_real]:
            example = examples[len(results)]
            results.append({
                "id": _text(example.get("id", len(results))),
                "prompt": _text(example["inputs_pretokenized"]),
                "target": _text(example["targets_pretokenized"]),
                "prediction": tokens_to_text(row, vocabulary),
            })
    return results


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def evaluate_tasks(predict_fn: PredictFn, params: Any, task_names: Sequence[str], split: str,
                   task_feature_lengths: Mapping[str, int], batch_size: int,
                   batch_sharding: jax.sharding.NamedSharding,
                   output_dir: str | None = None) -> dict[str, dict[str, Any]]:
    """{task: metrics}; with `output_dir`, writes `metrics.json` and per-task predictions."""
    results = {}
    for name in task_names:
        predictions = predict_task(predict_fn, params, name, split, task_feature_lengths,
                                   batch_size, batch_sharding)
        results[name] = metrics.translation_metrics(
            [p["prediction"] for p in predictions], [p["target"] for p in predictions])
        logging.info("eval %s/%s: BLEU %.2f chrF %.2f (%d examples)", name, split,
                     results[name]["bleu"], results[name]["chrf"], len(predictions))
        if output_dir and jax.process_index() == 0:
            os.makedirs(output_dir, exist_ok=True)
            with open(os.path.join(output_dir, f"{name}.{split}.predictions.jsonl"), "w",
                      encoding="utf-8") as f:
                for p in predictions:
                    f.write(json.dumps(p, ensure_ascii=False) + "\n")
    if output_dir and jax.process_index() == 0:
        with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, ensure_ascii=False)
    return results
