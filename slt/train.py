r"""Train (and finally evaluate) a model on a seqio task or mixture.

  python -m slt.train --gin_file=gin/runs/demo.gin --gin.MODEL_DIR=\"/tmp/demo\"

Everything is configured by gin: `--gin_file=F` (repeatable) and `--gin.NAME=VALUE`
bindings. The operative config is written to MODEL_DIR/config.gin, the loss of
every logged step to MODEL_DIR/train/metrics.jsonl, checkpoints to
MODEL_DIR/checkpoints and final metrics to MODEL_DIR/eval/metrics.json.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from slt import gin_utils

gin_utils.quiet_tensorflow()
gin_utils.add_cpu_xla_flags()

import jax  # noqa: E402
import seqio  # noqa: E402

import gin  # noqa: E402
import tasks  # noqa: E402  (registers the tasks)
from slt import (  # noqa: E402  # noqa: E402
    checkpoints,
    evaluation,
    features,
    inference,
    input_state,
    landmarks,
    partitioning,
    training,  # noqa: E402
)
from slt import trainer as trainer_lib  # noqa: E402
from slt.models import (
    decoding,  # noqa: E402
    network,  # noqa: E402
)
from slt.models import model as model_lib  # noqa: E402


@gin.configurable(denylist=[])
def train(
    *,
    model_dir: str = gin.REQUIRED,
    mixture_or_task_name: str = gin.REQUIRED,
    task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
    batch_size: int = gin.REQUIRED,
    train_steps: int = gin.REQUIRED,
    network_config: network.T5Config = network.T5Config(),
    optimizer_config: trainer_lib.OptimizerConfig = trainer_lib.OptimizerConfig(),
    z_loss: float = 1e-4,
    label_smoothing: float = 0.0,
    decoder_input_dropout: float = 0.0,
    encoder_ctc_weight: float = 0.0,
    decoding_config: decoding.DecodingConfig = decoding.DecodingConfig(),
    loss_normalizing_factor: float | None = None,
    mesh_shape: Sequence[int] = (-1, 1, 1),
    mesh_axis_names: Sequence[str] = partitioning.MESH_AXES,
    dcn_mesh_shape: Sequence[int] | None = None,
    logical_axis_rules: partitioning.LogicalRules = partitioning.DATA_PARALLEL_RULES,
    donate_state: bool = True,
    checkpoint_period: int = 1000,
    keep_checkpoints: int = 3,
    log_period: int = 50,
    eval_tasks: Sequence[str] | None = None,
    eval_split: str = "test",
    eval_batch_size: int = 64,
    seed: int = 0,
    num_microbatches: int = 1,
    keep_period: int | None = None,
    eval_period: int = 0,
    periodic_eval_split: str = "validation",
    final_eval: bool = True,
    num_input_shards: int | None = None,
    checkpoint_input_state: bool = False,
    initial_checkpoint_path: str | None = None,
    initial_params_loader: Callable[[str, Any], Any] | None = None,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    heartbeat_timeout_s: int = 100,
    step_timeout_s: float | None = None,
    tensorboard: bool = True,
) -> dict[str, dict]:
    """Trains for `train_steps` (resuming from the latest checkpoint) and evaluates.

    Returns the final metrics, `{task: {metric: value}}`, as written to
    MODEL_DIR/eval/metrics.json. `eval_tasks` defaults to the tasks of the mixture.
    Returns `{}` when stopped by SIGTERM (after saving) or with `final_eval=False`.

    Trainer-issue options (README "Training at scale"): `num_microbatches`
    (gradient accumulation), `keep_period` (also keep every multiple of it),
    `eval_period` (evaluate `periodic_eval_split` every that many steps; 0 = off),
    `num_input_shards` (fixes the data stream across host counts; default: one per
    host position on the data axes), `checkpoint_input_state` (save the tf.data
    iterator state of every input shard with each checkpoint, so a resume restores
    it instead of replaying the batches already used; README "Checkpoints"),
    `initial_checkpoint_path` +
    `initial_params_loader(path, abstract_params) -> params` (start from other
    weights when MODEL_DIR has no checkpoint; the default loader reads an slt orbax
    checkpoint), `coordinator_address`/`num_processes`/`process_id` (multi-host; or
    SLT_* environment variables), `step_timeout_s` (exit if no step finishes in that
    time; default 300 s with several processes, off with one).
    """
    partitioning.initialize_distributed(
        coordinator_address, num_processes, process_id, heartbeat_timeout_s=heartbeat_timeout_s
    )
    model_dir = os.path.abspath(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(model_dir, "config.gin"), "w") as f:
            f.write(gin.config_str())

    mixture = seqio.get_mixture_or_task(mixture_or_task_name)
    landmark_config = tasks.landmark_config(mixture_or_task_name)
    eval_tasks = list(eval_tasks or [t.name for t in seqio.get_subtasks(mixture)])

    mesh = partitioning.make_mesh(mesh_shape, mesh_axis_names, dcn_mesh_shape=dcn_mesh_shape)
    converter = features.LandmarkEncDecFeatureConverter()
    model_lengths = converter.get_model_feature_lengths(task_feature_lengths)
    batch_shapes = {name: (batch_size, length) for name, length in model_lengths.items()}
    batch_shapes["encoder_landmarks"] += (landmarks.FRAME_DIM,)
    model = model_lib.EncoderDecoderModel(
        network.Transformer(network_config),
        z_loss=z_loss,
        label_smoothing=label_smoothing,
        loss_normalizing_factor=loss_normalizing_factor,
        encoder_ctc_weight=encoder_ctc_weight,
        decoding_config=decoding_config,
    )
    trainer = trainer_lib.Trainer(
        model,
        trainer_lib.make_optimizer(optimizer_config),
        mesh,
        logical_axis_rules,
        batch_shapes,
        donate_state=donate_state,
        decoder_input_dropout=decoder_input_dropout,
        num_microbatches=num_microbatches,
    )
    checkpointer = checkpoints.Checkpointer(
        os.path.join(model_dir, "checkpoints"),
        max_to_keep=keep_checkpoints,
        keep_period=keep_period,
    )
    metadata = {
        "network_config": gin_utils.dataclass_dict(network_config),
        "decoding_config": gin_utils.dataclass_dict(decoding_config),
        "landmark_config": gin_utils.dataclass_dict(landmark_config),
        "task_feature_lengths": dict(task_feature_lengths),
        "mixture_or_task_name": mixture_or_task_name,
    }

    with jax.set_mesh(mesh):
        state, stream_position = _restore_or_init(
            trainer, checkpointer, seed, initial_checkpoint_path, initial_params_loader
        )
        start_step = int(state.step)
        # Each host reads the input shards of its position on the mesh's data axes; the
        # batch sequence depends only on `seed` and the number of input shards.
        host_shard, num_host_shards = partitioning.host_shard_info(
            trainer.batch_sharding, batch_size
        )
        shard_ids = input_state.host_input_shards(host_shard, num_host_shards, num_input_shards)
        total_shards = num_host_shards * len(shard_ids)
        if batch_size % total_shards:
            raise ValueError(
                f"batch_size={batch_size} does not split into {total_shards} "
                "input shards; use a multiple (gin: train.batch_size)."
            )
        if stream_position and stream_position.get("num_input_shards") != total_shards:
            print(
                f"WARNING: the checkpoint's input stream had "
                f"{stream_position.get('num_input_shards')} shards, this run has "
                f"{total_shards}: batches after the resume differ from an "
                "uninterrupted run.",
                flush=True,
            )

        def dataset_fn(index: int, count: int):
            return seqio.get_dataset(
                mixture_or_task_name,
                task_feature_lengths,
                dataset_split="train",
                shuffle=True,
                num_epochs=None,
                feature_converter=converter,
                shard_info=seqio.ShardInfo(index, count),
                seed=seed,
                batch_size=batch_size // count,
            )

        start_batch = (stream_position or {}).get("batches_consumed", start_step)
        state_store = (
            input_state.InputStateStore(
                model_dir,
                {
                    "mixture_or_task_name": mixture_or_task_name,
                    "seed": seed,
                    "batch_size": batch_size,
                    "task_feature_lengths": dict(task_feature_lengths),
                },
            )
            if checkpoint_input_state
            else None
        )
        stream = _open_stream(
            dataset_fn, shard_ids, total_shards, start_step, start_batch, state_store
        )
        if state_store and jax.process_index() == 0:
            state_store.collect_garbage(checkpointer.all_steps())
        dropout_rng = jax.random.key(seed + 1)
        multi_process = jax.process_count() > 1
        log = training.TrainLog(
            model_dir,
            train_steps,
            start_step,
            batch_size,
            log_period,
            write=jax.process_index() == 0,
            tensorboard=tensorboard,
        )
        watcher = training.PreemptionWatcher(multi_process=multi_process)
        timeout = step_timeout_s if step_timeout_s is not None else (300 if multi_process else 0)
        watchdog = (
            training.StepWatchdog(
                timeout,
                lambda: (
                    f"This is process {jax.process_index()} of {jax.process_count()}; another "
                    "process probably died, and collectives would wait for it forever."
                ),
            )
            if timeout
            else None
        )
        last_saved = checkpointer.latest_step()
        periodic_predict = None

        def save(step: int, force: bool = False) -> None:
            saved = checkpointer.save(
                step, state, {**metadata, "input_stream": stream.state()}, force=force
            )
            if saved and state_store:
                # Synchronous, before the next batch is read: the saved iterator
                # position is the one the checkpoint's step has consumed.
                started = time.perf_counter()
                if written := state_store.save(step, stream):
                    print(
                        f"input state: saved {written / 1e6:.1f} MB for step {step} in "
                        f"{time.perf_counter() - started:.1f} s",
                        flush=True,
                    )
                collect_input_states(pending=step)

        def collect_input_states(pending: int | None = None) -> None:
            """Drops input states of steps orbax no longer keeps (its deletions can
            finish after `save` returns, so this also runs once saves are done)."""
            if state_store and jax.process_index() == 0:
                state_store.collect_garbage(
                    checkpointer.all_steps() + ([pending] if pending else []), below=pending
                )

        preempted = False
        try:
            for step in range(start_step, train_steps):
                batch = partitioning.global_batch(next(stream), trainer.batch_sharding)
                state, step_metrics = trainer.train_step(state, batch, dropout_rng)
                # Blocking here every step: the NaN guard, the per-step JSONL loss, and
                # no queue of donated steps (see ENVIRONMENT notes on CPU deadlocks).
                step_metrics = jax.device_get(step_metrics)
                training.check_finite(step + 1, step_metrics, last_saved, checkpointer.directory)
                log.write(step + 1, step_metrics)
                if watchdog:
                    watchdog.step_done(step + 1)
                if watcher.should_stop(step + 1):
                    save(step + 1, force=True)
                    checkpointer.wait()
                    print(
                        f"SIGTERM: saved step {step + 1} to {checkpointer.directory}; "
                        "exiting. Re-run the same command to resume.",
                        flush=True,
                    )
                    preempted = True
                    break
                if (step + 1) % checkpoint_period == 0 and step + 1 < train_steps:
                    save(step + 1)
                    last_saved = step + 1
                if eval_period and (step + 1) % eval_period == 0 and step + 1 < train_steps:
                    # The final evaluation's decoding, on `periodic_eval_split`.
                    periodic_predict = periodic_predict or inference.make_predict_fn(
                        model, trainer.params_sharding, trainer.batch_sharding
                    )
                    log.write_eval(
                        step + 1,
                        evaluation.evaluate_tasks(
                            periodic_predict,
                            state.params,
                            eval_tasks,
                            periodic_eval_split,
                            task_feature_lengths,
                            eval_batch_size,
                            trainer.batch_sharding,
                            os.path.join(model_dir, "eval", f"step_{step + 1}"),
                            step=step + 1,
                        ),
                    )
        except jax.errors.JaxRuntimeError as error:
            if not multi_process:
                raise
            raise training.PeerProcessError(
                f"process {jax.process_index()} of {jax.process_count()}: a step failed "
                f"({str(error).splitlines()[0][:300]}); another process of this job "
                "probably died. Restart the whole job; it resumes from the last "
                "checkpoint."
            ) from error
        finally:
            watcher.close()
            if watchdog:
                watchdog.close()
            log.close()
            checkpointer.wait()  # a pending save (the last good state) completes
        if preempted:
            collect_input_states()
            checkpointer.close()
            return {}
        if train_steps > start_step or checkpointer.latest_step() is None:
            save(int(state.step), force=True)
        checkpointer.wait()
        collect_input_states()
        if not final_eval:
            checkpointer.close()
            return {}

        # The same decoding and scoring as `python -m slt.eval` (slt.inference/evaluation).
        predict_fn = inference.make_predict_fn(
            model, trainer.params_sharding, trainer.batch_sharding
        )
        partitioning.check_batch_size(eval_batch_size, trainer.batch_sharding)
        results = evaluation.evaluate_tasks(
            predict_fn,
            state.params,
            eval_tasks,
            eval_split,
            task_feature_lengths,
            eval_batch_size,
            trainer.batch_sharding,
            os.path.join(model_dir, "eval"),
            step=int(state.step),
        )
    checkpointer.close()
    with open(os.path.join(model_dir, "config.gin"), "w") as f:
        f.write(gin.operative_config_str())
    _print_results(results, eval_split)
    return results


def _open_stream(
    dataset_fn: input_state.DatasetFn,
    shard_ids: Sequence[int],
    num_shards: int,
    step: int,
    start_batch: int,
    store: input_state.InputStateStore | None,
) -> input_state.InputStream:
    """The input stream at `start_batch`: restored from the iterator states saved with
    checkpoint `step` when they exist and match, else replayed; prints which and why."""
    if not start_batch:
        return input_state.InputStream(dataset_fn, shard_ids, num_shards)
    started = time.perf_counter()
    why = (
        "train.checkpoint_input_state=False; with True, checkpoints also save the "
        "input position and a resume skips this replay"
    )
    if store:
        dirs, why = store.find(step, shard_ids, num_shards, start_batch)
        if dirs:
            try:
                stream = input_state.InputStream(
                    dataset_fn, shard_ids, num_shards, start_batch, restore_dirs=dirs
                )
                print(
                    f"input: restored the iterator state of input shards {list(shard_ids)} "
                    f"of {num_shards} at batch {start_batch} from {store.directory}/"
                    f"step_{step} in {time.perf_counter() - started:.1f} s",
                    flush=True,
                )
                return stream
            except Exception as error:  # noqa: BLE001 (replay gives the same batches;
                # a damaged file raises IndexError, a changed pipeline AssertionError...)
                why = f"reading {dirs[0]} failed: {str(error).splitlines()[0][:300]}"
    print(
        f"input: replaying {start_batch} batches of input shards {list(shard_ids)} of "
        f"{num_shards} (no iterator state restored: {why})",
        flush=True,
    )
    stream = input_state.InputStream(dataset_fn, shard_ids, num_shards, start_batch)
    print(
        f"input: replayed {start_batch} batches in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return stream


def _restore_or_init(
    trainer: trainer_lib.Trainer,
    checkpointer: checkpoints.Checkpointer,
    seed: int,
    initial_checkpoint_path: str | None = None,
    initial_params_loader: Callable[[str, Any], Any] | None = None,
) -> tuple[trainer_lib.TrainState, dict[str, int] | None]:
    """The latest checkpoint of MODEL_DIR (with its input-stream position), else a new
    state, with params from `initial_checkpoint_path` when given."""
    step = checkpointer.latest_step()
    target = checkpoints.abstract_with_shardings(trainer.abstract_state, trainer.state_sharding)
    if step is not None:
        state, metadata = checkpointer.restore(step, target)
        logging.info("restored step %d from %s", step, checkpointer.directory)
        print(f"resuming from checkpoint step {step}", flush=True)
        return state, metadata.get("input_stream")
    state = trainer.init_state(jax.random.key(seed))
    if initial_checkpoint_path:
        loader = initial_params_loader or load_slt_params
        params = loader(initial_checkpoint_path, target.params)
        checkpoints.check_tree_matches(params, target.params, initial_checkpoint_path)
        params = jax.tree.map(lambda p, s: jax.device_put(p, s), params, trainer.params_sharding)
        state = state.replace(params=params)
        print(f"initial params from {initial_checkpoint_path}", flush=True)
    return state, None


def load_slt_params(path: str, abstract_params: Any) -> Any:
    """The default `initial_params_loader`: params of an slt run's orbax checkpoint.

    `path` is a MODEL_DIR, its `checkpoints` folder or one step folder in it (the
    latest step is taken). Importers of other formats (T5X, Hugging Face) have the
    same signature, `(path, abstract_params) -> params`, and plug in through gin
    (`train.initial_params_loader = @some_importer`).
    """
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    directory, step = path, None
    if os.path.basename(path).isdigit():
        directory, step = os.path.dirname(path), int(os.path.basename(path))
    reader = checkpoints.Checkpointer(directory, async_save=False)
    step = reader.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(
            f"initial_checkpoint_path {path}: no finished checkpoint "
            "there (expected an slt MODEL_DIR or checkpoints/<step>)."
        )
    params = reader.restore_params(step, abstract_params)
    reader.close()
    return params


def _print_results(results: Mapping[str, Mapping], split: str) -> None:
    print(f"\nfinal evaluation ({split} split)")
    print(f"{'task':40s} {'BLEU':>7s} {'chrF':>7s} {'exact':>7s} {'n':>5s}")
    for name, m in results.items():
        print(
            f"{name:40s} {m['bleu']:7.2f} {m['chrf']:7.2f} {m['exact_match']:7.3f} "
            f"{m['num_examples']:5d}"
        )
    first = next(iter(results.values()))
    print(f"BLEU signature: {first['bleu_signature']}\nchrF signature: {first['chrf_signature']}")


def main(argv: Sequence[str]) -> None:
    gin_utils.parse_gin_args(argv)
    try:
        train()
    except (
        training.NonFiniteLossError,
        training.PeerProcessError,
        checkpoints.CheckpointMismatchError,
    ) as error:
        print(f"\nERROR: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(sys.argv[1:])
