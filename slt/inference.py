"""A trained model back from its checkpoint, ready to decode on a mesh.

`restore(path)` accepts a MODEL_DIR (uses `checkpoints/`), a checkpoints directory
(latest step) or one step directory, and rebuilds the network and the preprocessing
from the checkpoint's metadata alone: no training gin files are needed. Only the
parameters are read (the optimizer state stays on disk).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from slt import features, landmarks, partitioning
from slt.models import decoding, network
from slt.models import model as model_lib


@dataclasses.dataclass
class RestoredModel:
    model: model_lib.EncoderDecoderModel
    params: Any
    step: int
    checkpoint_dir: str
    metadata: dict[str, Any]
    mesh: jax.sharding.Mesh
    params_sharding: Any
    batch_sharding: jax.sharding.NamedSharding

    @property
    def task_feature_lengths(self) -> dict[str, int]:
        return dict(self.metadata["task_feature_lengths"])

    @property
    def landmark_config(self) -> landmarks.LandmarkConfig:
        return landmarks.LandmarkConfig(**self.metadata["landmark_config"])

    @property
    def mixture_or_task_name(self) -> str:
        return self.metadata["mixture_or_task_name"]


def _is_step_dir(path: str) -> bool:
    return os.path.basename(os.path.normpath(path)).isdigit() and os.path.isdir(
        os.path.join(path, "metadata")
    )


def resolve_checkpoint(path: str) -> tuple[str, int]:
    """(checkpoints directory, step) for a MODEL_DIR, checkpoints dir or step dir."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"checkpoint {path}: no such directory. Pass a MODEL_DIR of "
            "slt.train, its checkpoints/ directory or one step in it."
        )
    if _is_step_dir(path):
        return os.path.dirname(path), int(os.path.basename(os.path.normpath(path)))
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    steps = sorted(int(d) for d in os.listdir(path) if _is_step_dir(os.path.join(path, d)))
    if not steps:
        raise FileNotFoundError(
            f"checkpoint {path}: holds no finished checkpoint step "
            "(numbered directories with state/ and metadata/)."
        )
    return path, steps[-1]


def model_from_metadata(metadata: Mapping[str, Any]) -> model_lib.EncoderDecoderModel:
    config = {
        k: tuple(v) if isinstance(v, list) else v for k, v in metadata["network_config"].items()
    }
    known = {f.name for f in dataclasses.fields(network.T5Config)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(
            f"checkpoint metadata network_config has fields {unknown} that this "
            "version's T5Config does not know; use the code it was trained with."
        )
    # The decoding the run was configured with (e.g. joint CTC/attention); older
    # checkpoints have none and decode greedily.
    decoding_config = decoding.DecodingConfig(**metadata.get("decoding_config", {}))
    return model_lib.EncoderDecoderModel(
        network.Transformer(network.T5Config(**config)), decoding_config=decoding_config
    )


def batch_shapes(
    task_feature_lengths: Mapping[str, int], batch_size: int
) -> dict[str, tuple[int, ...]]:
    lengths = features.LandmarkEncDecFeatureConverter().get_model_feature_lengths(
        task_feature_lengths
    )
    shapes = {name: (batch_size, length) for name, length in lengths.items()}
    shapes["encoder_landmarks"] += (landmarks.FRAME_DIM,)
    return shapes


def restore(
    path: str,
    mesh_shape: Sequence[int] = (-1,),
    mesh_axis_names: Sequence[str] = ("data",),
    logical_axis_rules: partitioning.LogicalRules = partitioning.DATA_PARALLEL_RULES,
) -> RestoredModel:
    """The parameters and metadata of a checkpoint, sharded onto a new mesh."""
    directory, step = resolve_checkpoint(path)
    manager = ocp.CheckpointManager(
        directory,
        item_names=("state", "metadata"),
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    metadata = manager.restore(
        step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
    ).metadata
    missing = [
        k
        for k in ("network_config", "landmark_config", "task_feature_lengths")
        if k not in metadata
    ]
    if missing:
        raise ValueError(
            f"checkpoint {directory}/{step}: metadata lacks {missing}; it was "
            "not written by slt.train."
        )
    model = model_from_metadata(metadata)
    mesh = partitioning.make_mesh(mesh_shape, mesh_axis_names)
    shapes = batch_shapes(metadata["task_feature_lengths"], 1)
    params_sharding = partitioning.param_shardings(
        model.logical_axes(shapes), mesh, logical_axis_rules
    )
    abstract = jax.eval_shape(lambda rng: model.init_params(rng, shapes), jax.random.key(0))
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, params_sharding
    )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": target},
                restore_args=ocp.checkpoint_utils.construct_restore_args({"params": target}),
                partial_restore=True,
            )
        ),
    )
    manager.close()
    return RestoredModel(
        model=model,
        params=restored.state["params"],
        step=step,
        checkpoint_dir=directory,
        metadata=dict(metadata),
        mesh=mesh,
        params_sharding=params_sharding,
        batch_sharding=partitioning.batch_sharding(mesh, logical_axis_rules),
    )


def register_prepared(data_dir: str, restored: RestoredModel) -> str:
    """Registers a prepared dataset as a task; its preprocessing must be the model's."""
    from tasks import prepared

    name = "prepared_" + re.sub(r"\W", "_", os.path.basename(os.path.normpath(data_dir)))
    dataset_config = prepared.landmark_config(data_dir)
    if dataset_config != restored.landmark_config:
        differ = sorted(
            k
            for k, v in dataclasses.asdict(dataset_config).items()
            if getattr(restored.landmark_config, k) != v
        )
        raise ValueError(
            f"{data_dir}: prepared with another landmark config than the checkpoint "
            f"{restored.checkpoint_dir} was trained with (fields {differ} differ); prepare "
            "it again with the checkpoint's landmark_config."
        )
    prepared.register_prepared_task(name, data_dir)
    return name


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
    restored_or_model: Any,
    params_sharding: Any = None,
    batch_sharding: jax.sharding.NamedSharding | None = None,
    with_scores: bool = False,
    decode_options: Mapping[str, Any] | None = None,
):
    """The jitted, sharded `predict_fn(params, batch)` of `slt.evaluation`.

    `decode_options` are passed to `EncoderDecoderModel.predict_batch` as keywords
    (empty: its default, greedy decoding).
    """
    if isinstance(restored_or_model, RestoredModel):
        model = restored_or_model.model
        params_sharding = restored_or_model.params_sharding
        batch_sharding = restored_or_model.batch_sharding
    else:
        model = restored_or_model
    options = dict(decode_options or {})
    if with_scores:
        fn = functools.partial(predict_and_score, model, decode_options=options)
        out_shardings = {"tokens": batch_sharding, "scores": batch_sharding}
    else:
        fn = functools.partial(model.predict_batch, **options)
        out_shardings = batch_sharding
    return jax.jit(fn, in_shardings=(params_sharding, batch_sharding), out_shardings=out_shardings)


# -- sharded, resumable predictions -----------------------------------------------------


def _shard_path(output_dir: str, task: str, split: str, chunk: int) -> str:
    return os.path.join(output_dir, f"{task}.{split}.predictions-{chunk:05d}.jsonl")


def write_task_predictions(
    predict_fn: Any,
    params: Any,
    task_name: str,
    split: str,
    task_feature_lengths: Mapping[str, int],
    batch_size: int,
    batch_sharding: jax.sharding.NamedSharding,
    output_dir: str,
    chunk_size: int = 1024,
    run_info: Mapping[str, Any] | None = None,
    show_progress: bool = True,
    on_chunk_written: Any | None = None,
) -> dict[str, int]:
    """Predictions of a task split as JSONL shards of `chunk_size` examples each.

    Shard k holds examples [k * chunk_size, (k + 1) * chunk_size) in dataset order, one
    JSON object per line: id, prompt, prediction, target (if the task has one) and
    score. Each shard is written to a temporary file and renamed when complete, so a
    restart skips exactly the shards that exist (their examples are read again but
    not decoded) and redoes any shard that was cut off. `<task>.<split>.done.json`
    marks a finished task; `<task>.<split>.run.json` records `chunk_size` and
    `run_info`, and a restart with other values is refused (shards would not line up).

    Returns counts: shards written and skipped, examples decoded and total.
    """
    import json

    from slt import eval_report, evaluation

    os.makedirs(output_dir, exist_ok=True)
    prefix = os.path.join(output_dir, f"{task_name}.{split}")
    # Process 0 decides what is on disk (every process must take the same branches).
    if _process_zero_says(os.path.isfile(prefix + ".done.json")):
        with open(prefix + ".done.json", encoding="utf-8") as f:
            done = json.load(f)
        return {
            **done,
            "shards_written": 0,
            "shards_skipped": done["shards"],
            "examples_decoded": 0,
        }
    run = {"chunk_size": chunk_size, **dict(run_info or {})}
    previous = None
    if jax.process_index() == 0 and os.path.isfile(prefix + ".run.json"):
        with open(prefix + ".run.json", encoding="utf-8") as f:
            previous = json.load(f)
    if _process_zero_says(previous is not None and previous != run):
        raise ValueError(
            f"{prefix}.run.json: the shards there were written with {previous or 'other settings'}, "
            f"this run has {run}; use the same settings to resume, or another output_dir."
        )
    if jax.process_index() == 0 and previous is None:
        with open(prefix + ".run.json", "w", encoding="utf-8") as f:
            json.dump(run, f)

    # Each process reads its input shard; with example-level shards, output shard k
    # (examples [k * chunk_size, (k + 1) * chunk_size)) is local chunk k of every one.
    shard_info = evaluation.host_input_shard(batch_sharding, batch_size)
    if chunk_size % shard_info.num_shards:
        raise ValueError(
            f"infer.chunk_size={chunk_size} must be a multiple of the "
            f"{shard_info.num_shards} input shards of this job's processes."
        )
    ds = evaluation.task_dataset(task_name, split, task_feature_lengths, shard_info)
    vocabulary = _target_vocabulary(task_name)
    counts = {"shards_written": 0, "shards_skipped": 0, "examples_decoded": 0, "examples": 0}
    chunk = 0
    chunks = evaluation.iterate_chunks(ds, chunk_size // shard_info.num_shards)
    show = show_progress and jax.process_index() == 0
    with eval_report.progress_bar(evaluation.num_examples(ds), f"{task_name}/{split}", show) as bar:
        while True:
            examples = next(chunks, [])
            sizes = evaluation.allgather_ints([len(examples)])[:, 0]
            if not sizes.any():
                break
            path = _shard_path(output_dir, task_name, split, chunk)
            if _process_zero_says(os.path.isfile(path)):
                counts["shards_skipped"] += 1
                counts["examples"] += int(
                    sum(sizes[p] for p in evaluation.shard_readers(batch_sharding, batch_size))
                )
                if bar is not None:
                    bar.update(len(examples))
            else:
                local = evaluation.predict_examples(
                    predict_fn,
                    params,
                    examples,
                    ds.element_spec,
                    task_feature_lengths,
                    batch_size,
                    batch_sharding,
                    vocabulary,
                    bar,
                )
                predictions = evaluation.number_missing_ids(
                    evaluation.gather_shards(local, batch_sharding, batch_size),
                    first=chunk * chunk_size,
                )
                if jax.process_index() == 0:
                    with open(path + ".tmp", "w", encoding="utf-8") as f:
                        for p in predictions:
                            f.write(json.dumps(p, ensure_ascii=False) + "\n")
                    os.replace(path + ".tmp", path)
                counts["shards_written"] += 1
                counts["examples_decoded"] += len(predictions)
                counts["examples"] += len(predictions)
                if on_chunk_written is not None:
                    on_chunk_written(chunk, path)
            chunk += 1
    if jax.process_index() == 0:
        with open(prefix + ".done.json", "w", encoding="utf-8") as f:
            json.dump({"shards": chunk, "examples": counts["examples"]}, f)
    return counts


def _process_zero_says(flag: bool) -> bool:
    """Process 0's `flag`, on every process (a collective with several)."""
    from slt import evaluation

    return bool(evaluation.allgather_ints([int(flag)])[0, 0])


def _target_vocabulary(task_name: str):
    import seqio

    return seqio.get_mixture_or_task(task_name).output_features[features.TARGETS].vocabulary


def read_predictions(output_dir: str, task_name: str, split: str) -> list[dict[str, Any]]:
    """All predictions of a task split from its shards, in order."""
    import glob
    import json

    paths = sorted(
        glob.glob(
            os.path.join(
                output_dir, glob.escape(f"{task_name}.{split}.predictions-") + "[0-9]*.jsonl"
            )
        )
    )
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return rows
