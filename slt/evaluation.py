"""Decode whole eval splits with the jitted, sharded model and score them.

One code path for the final evaluation of `slt.train`, the batch job `slt.eval` and
the prediction job `slt.infer`: examples stream from the seqio task in chunks, each
chunk goes through the training feature converter and the sharded decoder in fixed-
shape batches, and the text comes back with its id, prompt and target.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import seqio
import tensorflow as tf

from slt import eval_report, features, metrics, partitioning

# `predict_fn(params, batch)` returns token ids [B, L], or a mapping with "tokens"
# and, optionally, "scores" [B] (sum of log-probabilities of the tokens).
PredictFn = Callable[[Any, Mapping[str, jax.Array]], Any]

_PROMPT_TARGET_LANGUAGE = re.compile(r"^<\w+> <\w+> <([A-Za-z-]+)>")


def tokens_to_text(tokens: np.ndarray, vocabulary: seqio.Vocabulary) -> str:
    """Decodes ids up to (not including) the first EOS."""
    ids = [int(t) for t in tokens]
    if vocabulary.eos_id in ids:
        ids = ids[:ids.index(vocabulary.eos_id)]
    return vocabulary.decode([i for i in ids if i != 0])


def target_language(prompt: str) -> str | None:
    """The intended output language of a `<task> <src> <tgt>` prompt, else None."""
    match = _PROMPT_TARGET_LANGUAGE.match(prompt)
    return match.group(1) if match else None


def check_splits(task_names: Sequence[str], split: str) -> None:
    """Fails before any decoding if a task lacks `split`, naming task, split and fix."""
    for name in task_names:
        task = seqio.get_mixture_or_task(name)
        if split not in task.splits:
            raise ValueError(
                f"task {name} has no split {split!r}; it has {sorted(task.splits)}. Pick one "
                f"of those (e.g. --gin.evaluate.split=\"{sorted(task.splits)[0]}\") or leave "
                f"{name} out of the tasks.")


def task_dataset(task_name: str, split: str, task_feature_lengths: Mapping[str, int]
                 ) -> tf.data.Dataset:
    """Every example of a task split, in a fixed order, trimmed to the feature lengths."""
    check_splits([task_name], split)
    task = seqio.get_mixture_or_task(task_name)
    return task.get_dataset(dict(task_feature_lengths), split=split, shuffle=False,
                            num_epochs=1)


def num_examples(ds: tf.data.Dataset) -> int | None:
    n = int(ds.cardinality())
    return n if n >= 0 else None


def iterate_chunks(ds: tf.data.Dataset, chunk_size: int) -> Iterator[list[dict[str, Any]]]:
    """Lists of up to `chunk_size` numpy examples, in dataset order."""
    chunk = []
    for example in ds.as_numpy_iterator():
        chunk.append(example)
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_examples(predict_fn: PredictFn, params: Any, examples: Sequence[Mapping[str, Any]],
                     element_spec: Any, task_feature_lengths: Mapping[str, int],
                     batch_size: int, batch_sharding: jax.sharding.NamedSharding,
                     vocabulary: seqio.Vocabulary, progress: Any | None = None
                     ) -> list[dict[str, Any]]:
    """Predictions for task-level examples (as the seqio task yields them).

    The last batch is padded with empty rows (all masks zero) so one compiled program
    serves every batch; padded rows are dropped from the result.
    """
    ds = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=element_spec)
    converter = features.LandmarkEncDecFeatureConverter()
    model_ds = converter(ds, dict(task_feature_lengths)).batch(batch_size)
    results: list[dict[str, Any]] = []
    for batch in model_ds.as_numpy_iterator():
        num_real = len(batch["decoder_target_tokens"])
        if num_real < batch_size:
            batch = {k: np.concatenate([v, np.zeros((batch_size - num_real,) + v.shape[1:],
                                                    v.dtype)]) for k, v in batch.items()}
        outputs = predict_fn(params, partitioning.global_batch(batch, batch_sharding))
        if not isinstance(outputs, Mapping):
            outputs = {"tokens": outputs}
        outputs = {k: np.asarray(jax.device_get(v))[:num_real] for k, v in outputs.items()}
        for i, row in enumerate(outputs["tokens"]):
            example = examples[len(results)]
            result = {
                "id": _text(example.get("id", len(results))),
                "prompt": _text(example["inputs_pretokenized"]),
                "prediction": tokens_to_text(row, vocabulary),
            }
            if "targets_pretokenized" in example:
                result["target"] = _text(example["targets_pretokenized"])
            if "scores" in outputs:
                result["score"] = float(outputs["scores"][i])
            results.append(result)
        if progress is not None:
            progress.update(num_real)
    return results


def predict_task(predict_fn: PredictFn, params: Any, task_name: str, split: str,
                 task_feature_lengths: Mapping[str, int], batch_size: int,
                 batch_sharding: jax.sharding.NamedSharding, chunk_size: int = 1024,
                 show_progress: bool = True) -> list[dict[str, Any]]:
    """Predictions for every example of a task split, in dataset order."""
    ds = task_dataset(task_name, split, task_feature_lengths)
    vocabulary = seqio.get_mixture_or_task(task_name).output_features[
        features.TARGETS].vocabulary
    results = []
    with eval_report.progress_bar(num_examples(ds), f"{task_name}/{split}",
                                  show_progress) as bar:
        for chunk in iterate_chunks(ds, chunk_size):
            results += predict_examples(predict_fn, params, chunk, ds.element_spec,
                                        task_feature_lengths, batch_size, batch_sharding,
                                        vocabulary, bar)
    return results


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def score_predictions(predictions: Sequence[Mapping[str, Any]],
                      bleurt_scorer: Any | None = None) -> dict[str, Any]:
    """Metrics of written predictions (`prediction`, `target`, `prompt` per example).

    Language accuracy needs every prompt to name its target language (`<t> <s> <tgt>`);
    otherwise it is left out and `language_accuracy_note` says why.
    """
    languages = [target_language(p["prompt"]) for p in predictions]
    unknown = sum(lang is None or lang not in metrics.LANGUAGE_ID_CANDIDATES
                  for lang in languages)
    result = metrics.translation_metrics(
        [p["prediction"] for p in predictions], [p["target"] for p in predictions],
        target_languages=None if unknown else languages, bleurt_scorer=bleurt_scorer)
    distinct = sorted({lang or "?" for lang in languages})
    result["target_language"] = distinct[0] if len(distinct) == 1 else ",".join(distinct)
    if unknown:
        result["language_accuracy_note"] = (
            f"left out: {unknown} prompts name no target language the identifier knows "
            f"({', '.join(metrics.LANGUAGE_ID_CANDIDATES)}).")
    return result


def evaluate_tasks(predict_fn: PredictFn, params: Any, task_names: Sequence[str], split: str,
                   task_feature_lengths: Mapping[str, int], batch_size: int,
                   batch_sharding: jax.sharding.NamedSharding,
                   output_dir: str | None = None, *, bleurt_checkpoint: str | None = None,
                   step: int | None = None, show_progress: bool = True
                   ) -> dict[str, dict[str, Any]]:
    """{task: metrics}. With `output_dir` also writes, on process 0:

    `metrics.json`, `<task>.<split>.predictions.jsonl`, `metrics.md` (a Markdown
    table), `metrics.png` (metrics per task and language) and TensorBoard summaries
    (at `step`, default 0). BLEURT is computed only with `bleurt_checkpoint`.
    """
    check_splits(task_names, split)
    bleurt_scorer = None
    if bleurt_checkpoint:
        from slt import bleurt
        bleurt_scorer = bleurt.BleurtScorer(bleurt_checkpoint)
    else:
        logging.info("BLEURT not computed: no BLEURT checkpoint given.")
    write = bool(output_dir) and jax.process_index() == 0
    if write:
        os.makedirs(output_dir, exist_ok=True)
    results = {}
    for name in task_names:
        predictions = predict_task(predict_fn, params, name, split, task_feature_lengths,
                                   batch_size, batch_sharding, show_progress=show_progress)
        results[name] = score_predictions(predictions, bleurt_scorer)
        logging.info("eval %s/%s: BLEU %.2f chrF %.2f (%d examples)", name, split,
                     results[name]["bleu"], results[name]["chrf"], len(predictions))
        if write:
            with open(os.path.join(output_dir, f"{name}.{split}.predictions.jsonl"), "w",
                      encoding="utf-8") as f:
                for p in predictions:
                    f.write(json.dumps(p, ensure_ascii=False) + "\n")
    if write:
        with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, ensure_ascii=False)
        eval_report.write_reports(results, output_dir, split, step or 0)
    return results
