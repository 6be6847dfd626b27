"""Predict functions, and decoding whole task splits with them on a mesh.

One code path for the evaluation of `slt.train`, the batch job `slt.eval`, the
prediction job `slt.infer` and `slt.translate`: examples stream from the seqio task
in chunks (`predict_chunks`), each chunk goes through the training feature converter
and the jitted, sharded decoder in fixed-shape batches (`predict_examples`), and the
text comes back with its id, prompt and target.

With several processes (multi-host), each process reads only its input shard of the
split (seqio `ShardInfo` from its position on the mesh's batch axes, as in training),
feeds its rows of every global batch (ragged ends padded with empty rows, dropped
afterwards), and the predictions are gathered to every process and put back into the
split's order, so metrics equal a one-process run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import seqio
import tensorflow as tf

from slt.data import features, landmarks
from slt.models import model as model_lib
from slt.training import partitioning

log = logging.getLogger(__name__)

# `predict_fn(params, batch)` returns token ids [B, L], or a mapping with "tokens"
# and, optionally, "scores" [B] (sum of log-probabilities of the tokens).
PredictFn = Callable[[Any, Mapping[str, jax.Array]], Any]


def predict_and_score(
    model: model_lib.EncoderDecoderModel,
    params: Any,
    batch: Mapping[str, jax.Array],
    decode_options: Mapping[str, Any],
) -> dict[str, jax.Array]:
    """Decoded tokens [B, L] and their score [B]: the sum of the model's log-probs of
    the decoded tokens up to and including EOS (`model.score_batch`)."""
    tokens = model.predict_batch(params, batch, **decode_options)
    inputs = jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1]  # shift right; BOS is 0
    scored = dict(
        batch,
        decoder_target_tokens=tokens,
        decoder_input_tokens=inputs,
        decoder_loss_weights=(tokens > 0).astype(jnp.int32),
    )
    return {"tokens": tokens, "scores": model.score_batch(params, scored)}


def make_predict_fn(
    model: model_lib.EncoderDecoderModel,
    params_sharding: Any,
    batch_sharding: jax.sharding.NamedSharding,
    with_scores: bool = False,
    decode_options: Mapping[str, Any] | None = None,
) -> PredictFn:
    """The jitted, sharded `predict_fn(params, batch)` of a model.

    `decode_options` are passed to `EncoderDecoderModel.predict_batch` as keywords
    (empty: its default, the checkpoint's `DecodingConfig`). `with_scores` adds the
    score of each decoded sequence (`predict_and_score`).
    """
    options = dict(decode_options or {})
    if with_scores:
        fn = functools.partial(predict_and_score, model, decode_options=options)
        out_shardings = {"tokens": batch_sharding, "scores": batch_sharding}
    else:
        fn = functools.partial(model.predict_batch, **options)
        out_shardings = batch_sharding
    return jax.jit(fn, in_shardings=(params_sharding, batch_sharding), out_shardings=out_shardings)


@dataclasses.dataclass(frozen=True)
class Predictor:
    """What decoding needs besides the examples: a jitted `predict_fn` with its params,
    the task feature lengths the model was trained with, and the global batch (its
    size and its sharding over the mesh's batch axes)."""

    predict_fn: PredictFn
    params: Any
    task_feature_lengths: Mapping[str, int]
    batch_size: int
    batch_sharding: jax.sharding.NamedSharding


def tokens_to_text(tokens: np.ndarray, vocabulary: seqio.Vocabulary) -> str:
    """Decodes ids up to (not including) the first EOS."""
    ids = [int(t) for t in tokens]
    if vocabulary.eos_id in ids:
        ids = ids[: ids.index(vocabulary.eos_id)]
    return vocabulary.decode([i for i in ids if i != 0])


def target_vocabulary(task_name: str) -> seqio.Vocabulary:
    return seqio.get_mixture_or_task(task_name).output_features[features.TARGETS].vocabulary


def check_splits(task_names: Sequence[str], split: str) -> None:
    """Fails before any decoding if a task lacks `split`, naming task, split and fix."""
    for name in task_names:
        task = seqio.get_mixture_or_task(name)
        if split not in task.splits:
            raise ValueError(
                f"task {name} has no split {split!r}; it has {sorted(task.splits)}. Pick one "
                "of those as the split to decode (gin: evaluate.split, infer.split, or "
                "slt.EvalConfig.split / periodic_split in training; slt.EvalConfig.final = "
                f"False trains without the final evaluation) or leave {name} out of the tasks."
            )


def task_dataset(
    task_name: str,
    split: str,
    task_feature_lengths: Mapping[str, int],
    shard_info: seqio.ShardInfo | None = None,
) -> tf.data.Dataset:
    """Every example of a task split (or of one input shard of it), in a fixed order,
    trimmed to the feature lengths."""
    check_splits([task_name], split)
    task = seqio.get_mixture_or_task(task_name)
    if shard_info is not None and shard_info.num_shards <= 1:
        shard_info = None
    return task.get_dataset(
        dict(task_feature_lengths), split=split, shuffle=False, num_epochs=1, shard_info=shard_info
    )


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


@contextlib.contextmanager
def progress_bar(total: int | None, description: str, enabled: bool = True) -> Iterator[Any]:
    """A tqdm bar over examples on stderr (None when disabled)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(
        total=total,
        desc=description,
        unit="ex",
        file=sys.stderr,
        mininterval=2.0,
        dynamic_ncols=True,
    ) as bar:
        yield bar


# -- several processes: each reads its input shard, every process gets every prediction


def allgather_ints(values: Sequence[int]) -> np.ndarray:
    """[num_processes, len(values)]: every process's `values` (a collective)."""
    local = np.asarray(values, np.int32).reshape(1, -1)
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(local[0])).reshape(jax.process_count(), -1)


def allgather_json(value: Any) -> list[Any]:
    """Every process's JSON-serialisable `value`, in process order (a collective)."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value, ensure_ascii=False).encode("utf-8"), np.uint8)
    lengths = allgather_ints([len(data)])[:, 0]
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: len(data)] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
    return [json.loads(bytes(gathered[p, :n]).decode("utf-8")) for p, n in enumerate(lengths)]


def process_zero_says(flag: bool) -> bool:
    """Process 0's `flag`, on every process (a collective with several): for decisions
    every process must take alike, such as whether a file exists on process 0's disk."""
    return bool(allgather_ints([int(flag)])[0, 0])


def merge_shards(per_shard: Sequence[Sequence[Any]]) -> list[Any]:
    """The split's order from its input shards' results: example k of shard s is
    example k * num_shards + s (seqio's example-level sharding, `Dataset.shard`)."""
    sizes = [len(p) for p in per_shard]
    if sizes and (max(sizes) - min(sizes) > 1 or sizes != sorted(sizes, reverse=True)):
        # File-level sharding (a source with at least as many files as shards): every
        # example is still there once, but the split's own order is not recoverable.
        log.warning(
            "input shards hold %s examples: not an example-level split, so "
            "predictions are in shard-interleaved order, not the split's.",
            sizes,
        )
    merged = []
    for k in range(max(sizes, default=0)):
        merged += [p[k] for p in per_shard if k < len(p)]
    return merged


def shard_readers(batch_sharding: jax.sharding.NamedSharding, batch_size: int) -> list[int]:
    """One process per input shard (the first that reads it), in shard order."""
    first_of_shard: dict[int, int] = {}
    for p in range(jax.process_count()):
        first_of_shard.setdefault(
            partitioning.host_input_shard(batch_sharding, batch_size, p).index, p
        )
    return [first_of_shard[s] for s in sorted(first_of_shard)]


def gather_shards(
    local: Sequence[Any], batch_sharding: jax.sharding.NamedSharding, batch_size: int
) -> list[Any]:
    """Every input shard's results, merged into split order, on every process."""
    per_process = allgather_json(list(local))
    return merge_shards([per_process[p] for p in shard_readers(batch_sharding, batch_size)])


def number_missing_ids(predictions: list[dict[str, Any]], first: int = 0) -> list[dict[str, Any]]:
    """Gives examples without an id their position in the split (from `first`)."""
    return [p if "id" in p else {"id": first + i, **p} for i, p in enumerate(predictions)]


# -- decoding -----------------------------------------------------------------------


def padding_batch(task_feature_lengths: Mapping[str, int], rows: int) -> dict[str, np.ndarray]:
    """Model features of `rows` empty examples (every mask zero)."""
    converter = features.LandmarkEncDecFeatureConverter()
    batch = {}
    for name, length in converter.get_model_feature_lengths(task_feature_lengths).items():
        spec = converter.MODEL_FEATURES[name]
        shape = (rows, length) + ((landmarks.FRAME_DIM,) if spec.rank == 2 else ())
        batch[name] = np.zeros(shape, spec.dtype.as_numpy_dtype)
    return batch


def _host_rows(array: jax.Array, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a batch-sharded array, from this process's shards."""
    if array.is_fully_addressable:
        return np.asarray(jax.device_get(array))[start:stop]
    out = np.zeros((stop - start,) + array.shape[1:], array.dtype)
    for shard in array.addressable_shards:
        rows = shard.index[0].indices(array.shape[0])
        if start <= rows[0] and rows[1] <= stop:
            out[rows[0] - start : rows[1] - start] = np.asarray(shard.data)
    return out


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def predict_examples(
    predictor: Predictor,
    examples: Sequence[Mapping[str, Any]],
    element_spec: Any,
    vocabulary: seqio.Vocabulary,
    progress: Any | None = None,
) -> list[dict[str, Any]]:
    """Predictions for this process's task-level examples (as the task yields them).

    Each process feeds its rows of the global batch (`partitioning.host_batch_rows`)
    from its own `examples`; every process must call this together (the same number
    of decoding steps runs everywhere, agreed by a collective). A ragged last batch is
    padded with empty rows (all masks zero) so one compiled program serves every
    batch; padded rows are dropped. An example without an "id" gets none here (its
    position in the split is only known after `gather_shards`).
    """
    lengths = predictor.task_feature_lengths
    start, stop = partitioning.host_batch_rows(predictor.batch_sharding, predictor.batch_size)
    rows = stop - start
    ds = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=element_spec)
    converter = features.LandmarkEncDecFeatureConverter()
    batches = converter(ds, dict(lengths)).batch(rows).as_numpy_iterator()
    num_batches = int(allgather_ints([-(-len(examples) // rows)]).max())
    results: list[dict[str, Any]] = []
    for _ in range(num_batches):
        batch = next(batches, None)
        num_real = 0 if batch is None else len(batch["decoder_target_tokens"])
        if num_real < rows:
            pad = padding_batch(lengths, rows - num_real)
            batch = (
                pad if batch is None else {k: np.concatenate([v, pad[k]]) for k, v in batch.items()}
            )
        outputs = predictor.predict_fn(
            predictor.params, partitioning.global_batch(batch, predictor.batch_sharding)
        )
        if not isinstance(outputs, Mapping):
            outputs = {"tokens": outputs}
        outputs = {k: _host_rows(v, start, stop)[:num_real] for k, v in outputs.items()}
        for i, row in enumerate(outputs["tokens"]):
            example = examples[len(results)]
            result = {}
            if "id" in example:
                result["id"] = _text(example["id"])
            result["prompt"] = _text(example["inputs_pretokenized"])
            result["prediction"] = tokens_to_text(row, vocabulary)
            if "targets_pretokenized" in example:
                result["target"] = _text(example["targets_pretokenized"])
            if "scores" in outputs:
                result["score"] = float(outputs["scores"][i])
            results.append(result)
        if progress is not None and num_real:
            progress.update(num_real)
    return results


@dataclasses.dataclass
class Chunk:
    """Consecutive examples of a split: `size` of them from position `first` on.

    `predictions` (in the split's order, on every process) is None for a chunk that
    was skipped without decoding.
    """

    index: int
    first: int
    size: int
    predictions: list[dict[str, Any]] | None


def predict_chunks(
    predictor: Predictor,
    task_name: str,
    split: str,
    chunk_size: int = 1024,
    show_progress: bool = True,
    skip: Callable[[int], bool] | None = None,
) -> Iterator[Chunk]:
    """The predictions of a task split, chunk by chunk, in the split's order.

    Each process reads its input shard of the split and contributes
    `chunk_size // num_shards` of its examples to every chunk, so a chunk holds
    `chunk_size` examples (the last fewer) when `chunk_size` is a multiple of the
    number of input shards. Every process must iterate together (each chunk is agreed
    and gathered by collectives). `skip(k)`, as process 0 answers it, passes chunk k
    over without decoding it (its examples are still read).
    """
    sharding, batch_size = predictor.batch_sharding, predictor.batch_size
    shard_info = seqio.ShardInfo(*partitioning.host_input_shard(sharding, batch_size))
    readers = shard_readers(sharding, batch_size)
    ds = task_dataset(task_name, split, predictor.task_feature_lengths, shard_info)
    vocabulary = target_vocabulary(task_name)
    chunks = iterate_chunks(ds, max(1, chunk_size // shard_info.num_shards))
    first = 0
    show = show_progress and jax.process_index() == 0
    with progress_bar(num_examples(ds), f"{task_name}/{split}", show) as bar:
        for index in itertools.count():
            examples = next(chunks, [])
            sizes = allgather_ints([len(examples)])[:, 0]
            if not sizes.any():  # every shard is done
                return
            size = int(sum(sizes[p] for p in readers))
            if skip is not None and process_zero_says(skip(index)):
                predictions = None
                if bar is not None:
                    bar.update(len(examples))
            else:
                local = predict_examples(predictor, examples, ds.element_spec, vocabulary, bar)
                predictions = number_missing_ids(
                    gather_shards(local, sharding, batch_size), first=first
                )
            yield Chunk(index, first, size, predictions)
            first += size


def predict_task(
    predictor: Predictor, task_name: str, split: str, show_progress: bool = True
) -> list[dict[str, Any]]:
    """Predictions for every example of a task split, in the split's order, on every
    process (see `predict_chunks`)."""
    with contextlib.closing(
        predict_chunks(predictor, task_name, split, show_progress=show_progress)
    ) as chunks:
        return [p for chunk in chunks for p in chunk.predictions]
