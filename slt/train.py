r"""Train (and finally evaluate) a model on a seqio task or mixture.

  python -m slt.train --gin_file=runs/demo.gin --gin.MODEL_DIR=\"/tmp/demo\"

Everything is configured by gin: `--gin_file=F` (repeatable) and `--gin.NAME=VALUE`
bindings; docs/training.md lists the options. The operative config is written to
MODEL_DIR/config.gin, the loss of every logged step to MODEL_DIR/train/metrics.jsonl,
checkpoints to MODEL_DIR/checkpoints and final metrics to MODEL_DIR/eval/metrics.json,
with MODEL_DIR/eval/report.html to look at examples and the training curves.

`build_training` builds what the job runs (mesh, batch shapes, model, Trainer) from
its configs; `train` restores or initialises the state, opens the input stream and
runs `_train_loop`. This module prints what the job's user sees; the library modules
it wires (`slt.training`: `trainer`, `train_monitor`, `input_state`, `checkpoints`) only
log.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from slt import gin_utils

gin_utils.quiet_tensorflow()
gin_utils.add_cpu_xla_flags()

import gin  # noqa: E402
import jax  # noqa: E402
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from slt import (
    storage,
    tasks,  # noqa: E402  (registers the tasks)
)
from slt.data import features
from slt.evaluation import evaluate as evaluate_lib
from slt.evaluation import html_report, predict, trained_model
from slt.models import decoding, network  # noqa: E402
from slt.models import model as model_lib  # noqa: E402
from slt.performance import compiled as compiled_lib
from slt.training import checkpoints, input_state, partitioning, train_monitor
from slt.training import trainer as trainer_lib  # noqa: E402


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """What a training job runs, built from its configs by `build_training`."""

    mesh: Mesh
    batch_shapes: dict[str, tuple[int, ...]]
    model: model_lib.EncoderDecoderModel
    trainer: trainer_lib.Trainer


def build_training(
    *,
    task_feature_lengths: Mapping[str, int],
    batch_size: int,
    num_microbatches: int = 1,
    network_config: network.T5Config = network.T5Config(),
    optimizer_config: trainer_lib.OptimizerConfig = trainer_lib.OptimizerConfig(),
    loss_config: trainer_lib.LossConfig = trainer_lib.LossConfig(),
    decoding_config: decoding.DecodingConfig = decoding.DecodingConfig(),
    partitioning_config: partitioning.PartitioningConfig = partitioning.PartitioningConfig(),
    devices: Sequence[jax.Device] | None = None,
) -> TrainingSetup:
    """The mesh over `devices` (default: `jax.devices()`), batch shapes, model and
    Trainer of a job: `train` runs `trainer.train_step` of the result.

    Nothing is placed on a device (the state is only traced), so with the devices of
    another topology the same step can be compiled ahead of time, e.g.
    `trainer.train_step.lower(abstract_state, abstract_batch, rng).compile()`.
    """
    p = partitioning_config
    mesh = partitioning.make_mesh(
        p.mesh_shape, p.mesh_axis_names, devices=devices, dcn_mesh_shape=p.dcn_mesh_shape
    )
    # Batches carry CTC labels of their own when the loss reads the signed text.
    ctc_targets = (
        loss_config.encoder_ctc_weight > 0 and loss_config.encoder_ctc_targets == "signed_text"
    )
    batch_shapes = trained_model.batch_shapes(task_feature_lengths, batch_size, ctc_targets)
    model = model_lib.EncoderDecoderModel(
        network.Transformer(network_config),
        z_loss=loss_config.z_loss,
        label_smoothing=loss_config.label_smoothing,
        loss_normalizing_factor=loss_config.loss_normalizing_factor,
        encoder_ctc_weight=loss_config.encoder_ctc_weight,
        encoder_ctc_targets=loss_config.encoder_ctc_targets,
        decoding_config=decoding_config,
    )
    trainer = trainer_lib.Trainer(
        model,
        trainer_lib.make_optimizer(optimizer_config),
        mesh,
        p.logical_axis_rules,
        batch_shapes,
        donate_state=p.donate_state,
        explicit_fsdp_collectives=p.explicit_fsdp_collectives,
        decoder_input_dropout=loss_config.decoder_input_dropout,
        num_microbatches=num_microbatches,
    )
    return TrainingSetup(mesh, batch_shapes, model, trainer)


@gin.configurable(denylist=[])
def train(
    *,
    model_dir: str = gin.REQUIRED,
    mixture_or_task_name: str = gin.REQUIRED,
    task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
    batch_size: int = gin.REQUIRED,
    train_steps: int = gin.REQUIRED,
    seed: int = 0,
    num_microbatches: int = 1,
    log_period: int = 50,
    tensorboard: bool = True,
    network_config: network.T5Config = network.T5Config(),
    optimizer_config: trainer_lib.OptimizerConfig = trainer_lib.OptimizerConfig(),
    decoding_config: decoding.DecodingConfig = decoding.DecodingConfig(),
    loss_config: trainer_lib.LossConfig = trainer_lib.LossConfig(),
    partitioning_config: partitioning.PartitioningConfig = partitioning.PartitioningConfig(),
    checkpoint_config: checkpoints.CheckpointConfig = checkpoints.CheckpointConfig(),
    input_config: input_state.InputConfig = input_state.InputConfig(),
    eval_config: evaluate_lib.EvalConfig = evaluate_lib.EvalConfig(),
    distributed_config: partitioning.DistributedConfig = partitioning.DistributedConfig(),
    report_config: html_report.ReportConfig = html_report.ReportConfig(),
) -> dict[str, dict]:
    """Trains for `train_steps` (resuming from the latest checkpoint) and evaluates.

    `num_microbatches` accumulates gradients over that many slices of each batch;
    `log_period` is the steps between progress lines and TensorBoard summaries. Each
    option group is documented beside the code it configures (docs/training.md).

    Returns the final metrics, `{task: {metric: value}}`, as written to
    MODEL_DIR/eval/metrics.json; `{}` when stopped by SIGTERM (after saving) or with
    `EvalConfig.final=False`.
    """
    d = distributed_config
    partitioning.initialize_distributed(
        d.coordinator_address,
        d.num_processes,
        d.process_id,
        heartbeat_timeout_s=d.heartbeat_timeout_s,
    )
    model_dir = storage.absolute(model_dir)
    # Every process writes there (checkpoints, input states): fail now, not at the
    # first save, when it cannot (a missing bucket, no permission).
    storage.check_writable(model_dir, "MODEL_DIR")
    _write_config(model_dir, gin.config_str())  # the bindings, before anything can fail
    setup = build_training(
        task_feature_lengths=task_feature_lengths,
        batch_size=batch_size,
        num_microbatches=num_microbatches,
        network_config=network_config,
        optimizer_config=optimizer_config,
        loss_config=loss_config,
        decoding_config=decoding_config,
        partitioning_config=partitioning_config,
    )
    trainer = setup.trainer
    mixture = seqio.get_mixture_or_task(mixture_or_task_name)
    eval_tasks = list(eval_config.tasks or [t.name for t in seqio.get_subtasks(mixture)])
    if eval_config.final or eval_config.period:
        partitioning.check_batch_size(eval_config.batch_size, trainer.batch_sharding)
    # A split the eval tasks lack fails now, not after the training it would end.
    if eval_config.final:
        predict.check_splits(eval_tasks, eval_config.split)
    if eval_config.period:
        predict.check_splits(eval_tasks, eval_config.periodic_split)
    predict_fn = predict.make_predict_fn(
        setup.model, trainer.params_sharding, trainer.batch_sharding
    )

    def evaluate_split(
        params: Any, split: str, output_dir: str, step: int, **report: Any
    ) -> dict[str, dict]:
        # The same decoding and scoring as `python -m slt.eval`.
        return evaluate_lib.evaluate_tasks(
            predict_fn,
            params,
            eval_tasks,
            split,
            task_feature_lengths,
            eval_config.batch_size,
            trainer.batch_sharding,
            output_dir,
            step=step,
            **report,
        )

    def periodic_eval(step: int, params: Any) -> dict[str, dict]:
        output_dir = storage.join(model_dir, "eval", f"step_{step}")
        return evaluate_split(params, eval_config.periodic_split, output_dir, step)

    metadata = {  # what translation needs without the training gin files
        "network_config": gin_utils.dataclass_dict(network_config),
        "decoding_config": gin_utils.dataclass_dict(decoding_config),
        "landmark_config": gin_utils.dataclass_dict(tasks.landmark_config(mixture_or_task_name)),
        "task_feature_lengths": dict(task_feature_lengths),
        "mixture_or_task_name": mixture_or_task_name,
    }
    checkpointer = checkpoints.Checkpointer(
        storage.join(model_dir, "checkpoints"),
        max_to_keep=checkpoint_config.keep,
        keep_period=checkpoint_config.keep_period,
    )
    multi_process = jax.process_count() > 1
    step_timeout_s = d.step_timeout_s
    if step_timeout_s is None:
        step_timeout_s = 300 if multi_process else 0
    try:
        with jax.set_mesh(setup.mesh):
            state, position = _restore_or_init(trainer, checkpointer, seed, checkpoint_config)
            start_step = int(state.step)
            train_step = trainer.train_step
            if jax.default_backend() != "cpu":
                train_step = compile_train_step(trainer, state, jax.random.key(seed + 1))
            stream, store = _open_input(
                model_dir=model_dir,
                mixture_or_task_name=mixture_or_task_name,
                task_feature_lengths=task_feature_lengths,
                batch_size=batch_size,
                seed=seed,
                input_config=input_config,
                batch_sharding=trainer.batch_sharding,
                step=start_step,
                position=position,
                ctc_targets="encoder_ctc_targets" in trainer.batch_shapes,
            )
            saver = _Saver(checkpointer, metadata, stream, store)
            # A run stopped at an evaluation step (SIGTERM, or a crash while evaluating
            # after the save) resumes past it: evaluate that step now, once.
            missed = storage.join(model_dir, "eval", f"step_{start_step}", "metrics.json")
            if (
                eval_config.period
                and 0 < start_step < train_steps
                and start_step % eval_config.period == 0
                and not storage.isfile(missed)
            ):
                print(f"evaluating step {start_step}, which the stopped run did not", flush=True)
                periodic_eval(start_step, state.params)
            with (
                train_monitor.TrainLog(
                    model_dir,
                    train_steps,
                    start_step,
                    batch_size,
                    log_period,
                    write=jax.process_index() == 0,
                    tensorboard=tensorboard,
                ) as train_log,
                train_monitor.PreemptionWatcher(multi_process) as watcher,
                train_monitor.StepWatchdog(step_timeout_s, _peer_died_note) as watchdog,
            ):
                state, preempted = _train_loop(
                    state,
                    trainer,
                    stream,
                    saver,
                    train_log,
                    watcher,
                    watchdog,
                    train_step=train_step,
                    seed=seed,
                    train_steps=train_steps,
                    checkpoint_period=checkpoint_config.period,
                    eval_period=eval_config.period,
                    periodic_eval=periodic_eval,
                    wait_each_step=_queued_steps_can_deadlock(partitioning_config),
                )
            if not preempted and (train_steps > start_step or checkpointer.latest_step() is None):
                saver.save(int(state.step), state, force=True)
            saver.finish()
            if preempted or not eval_config.final:
                return {}
            results = evaluate_split(
                state.params,
                eval_config.split,
                storage.join(model_dir, "eval"),
                int(state.step),
                report_config=report_config if eval_config.html_report else None,
                training_log=storage.join(model_dir, "train", "metrics.jsonl"),
                learning_rate=trainer_lib.learning_rate_schedule(optimizer_config),
                landmark_config=tasks.landmark_config(mixture_or_task_name),
            )
    finally:
        checkpointer.close()  # waits for a pending save (the last good state)
    _write_config(model_dir, gin.operative_config_str())
    _print_results(results, eval_config.split)
    return results


def _train_loop(
    state: trainer_lib.TrainState,
    trainer: trainer_lib.Trainer,
    stream: input_state.InputStream,
    saver: _Saver,
    train_log: train_monitor.TrainLog,
    watcher: train_monitor.PreemptionWatcher,
    watchdog: train_monitor.StepWatchdog,
    *,
    train_step: Callable[..., Any],
    seed: int,
    train_steps: int,
    checkpoint_period: int,
    eval_period: int,
    periodic_eval: Callable[[int, Any], dict[str, dict]],
    wait_each_step: bool = False,
) -> tuple[trainer_lib.TrainState, bool]:
    """Steps from `state.step` to `train_steps`, saving and evaluating periodically.

    The host keeps the devices fed: it dispatches step n, then reads batch n+1 and
    places it on the devices while step n runs, and only then reads the metrics of step
    n-1 (copied to the host as soon as that step ends). So a step is always queued
    behind the running one, and the host never waits for the step it just dispatched,
    except where the state must be known good: before a checkpoint save, an evaluation,
    a SIGTERM stop and the last step, it reads this step's metrics first. The NaN guard
    therefore stops at most one step after the first non-finite loss, and a non-finite
    state is never saved. `wait_each_step` reads every step's metrics before the next
    dispatch (see `train` for when).

    `train_step` is `trainer.train_step` or its compiled executable
    (`compile_train_step`). Returns the last state and whether SIGTERM stopped the
    loop (after saving it).
    The final save and evaluation are the caller's.
    """
    dropout_rng = jax.random.key(seed + 1)  # folded with the step: resumes are exact
    pending: list[tuple[int, Any]] = []  # dispatched steps whose metrics are unread

    def read_metrics(up_to: int) -> None:
        while pending and pending[0][0] <= up_to:
            done, metrics = pending.pop(0)
            metrics = jax.device_get(metrics)
            train_monitor.check_finite(done, metrics, saver.last_saved, saver.directory)
            if line := train_log.write(done, metrics):
                print(line, flush=True)
            watchdog.step_done(done)

    def next_batch() -> dict[str, jax.Array]:
        return partitioning.global_batch(next(stream), trainer.batch_sharding)

    try:
        first = int(state.step) + 1  # the step once updated
        batch = next_batch() if first <= train_steps else None
        for step in range(first, train_steps + 1):
            state, metrics = train_step(state, batch, dropout_rng)
            for leaf in jax.tree.leaves(metrics):
                leaf.copy_to_host_async()  # ready when the host asks for it
            pending.append((step, metrics))
            stop = watcher.should_stop(step)
            save = step % checkpoint_period == 0
            evaluate = bool(eval_period) and step % eval_period == 0
            if wait_each_step or stop or save or evaluate or step == train_steps:
                read_metrics(step)  # the NaN guard passes this state before it is used
            if stop:
                saver.save(step, state, force=True)
                saver.finish()
                print(
                    f"SIGTERM: saved step {step} to {saver.directory}; exiting. "
                    "Re-run the same command to resume.",
                    flush=True,
                )
                return state, True
            if step == train_steps:
                break
            if save:
                saver.save(step, state)
            if evaluate:
                train_log.write_eval(step, periodic_eval(step, state.params))
            # Read after the save: the saved stream position is the step's own.
            batch = next_batch()
            read_metrics(step - 1)
    except jax.errors.JaxRuntimeError as error:
        if jax.process_count() == 1:
            raise
        raise train_monitor.PeerProcessError(
            f"process {jax.process_index()} of {jax.process_count()}: a step failed "
            f"({str(error).splitlines()[0][:300]}); another process of this job "
            "probably died. Restart the whole job; it resumes from the last "
            "checkpoint."
        ) from error
    return state, False


def _queued_steps_can_deadlock(partitioning_config: partitioning.PartitioningConfig) -> bool:
    """Whether the loop must wait for each step before dispatching the next: with 4 or
    more CPU devices, donated train states of queued steps can deadlock XLA:CPU's
    all-reduce rendezvous (it aborts after about a minute; docs/architecture.md, "JAX on
    CPU"). Accelerators, fewer CPU devices and steps without donation do not."""
    return (
        partitioning_config.donate_state
        and jax.default_backend() == "cpu"
        and jax.local_device_count() >= 4
    )


def compile_train_step(
    trainer: trainer_lib.Trainer, state: trainer_lib.TrainState, dropout_rng: jax.Array
) -> Callable[..., Any]:
    """`trainer.train_step` compiled before the first batch, for `state` and batches of
    `trainer.batch_shapes`; prints its memory per chip in one line (the figures
    `python -m slt.compile_check` estimates for a topology). Returns the executable."""
    batch = compiled_lib.abstract_batch(trainer.batch_shapes, trainer.batch_sharding)
    started = time.perf_counter()
    compiled = trainer.train_step.lower(state, batch, dropout_rng).compile()
    stats = compiled_lib.memory_stats(compiled)
    hbm = compiled_lib.device_hbm_bytes(jax.local_devices()[0])
    line = compiled_lib.memory_line("train step", stats, hbm)
    print(f"{line}; compiled in {time.perf_counter() - started:.1f} s", flush=True)
    return compiled


def _peer_died_note() -> str:
    return (
        f"This is process {jax.process_index()} of {jax.process_count()}; another "
        "process probably died, and collectives would wait for it forever."
    )


def _write_config(model_dir: str, config: str) -> None:
    if jax.process_index() == 0:
        storage.write_text(storage.join(model_dir, "config.gin"), config)


class _Saver:
    """The run's checkpoint saves: each holds the input stream's position and, with
    `InputConfig.save_state`, comes with the iterator state of this host's shards."""

    def __init__(
        self,
        checkpointer: checkpoints.Checkpointer,
        metadata: Mapping[str, Any],
        stream: input_state.InputStream,
        store: input_state.InputStateStore | None,
    ):
        self.checkpointer, self.metadata = checkpointer, dict(metadata)
        self.stream, self.store = stream, store
        self.directory = checkpointer.directory
        self.last_saved = checkpointer.latest_step()
        self._collect_input_states()

    def save(self, step: int, state: trainer_lib.TrainState, force: bool = False) -> None:
        metadata = {**self.metadata, "input_stream": self.stream.state()}
        if not self.checkpointer.save(step, state, metadata, force=force):
            return
        self.last_saved = step
        if self.store:
            # Synchronous, before the next batch is read: the saved iterator
            # position is the one the checkpoint's step has consumed.
            started = time.perf_counter()
            if written := self.store.save(step, self.stream):
                print(
                    f"input state: saved {written / 1e6:.1f} MB for step {step} in "
                    f"{time.perf_counter() - started:.1f} s",
                    flush=True,
                )
            self._collect_input_states(pending=step)

    def finish(self) -> None:
        """Waits for pending saves; then drops the input states orbax no longer keeps
        (its deletions can finish after `save` returns)."""
        self.checkpointer.wait()
        self._collect_input_states()

    def _collect_input_states(self, pending: int | None = None) -> None:
        if self.store and jax.process_index() == 0:
            self.store.collect_garbage(
                self.checkpointer.all_steps() + ([pending] if pending else []), below=pending
            )


def _open_input(
    *,
    model_dir: str,
    mixture_or_task_name: str,
    task_feature_lengths: Mapping[str, int],
    batch_size: int,
    seed: int,
    input_config: input_state.InputConfig,
    batch_sharding: jax.sharding.NamedSharding,
    step: int,
    position: Mapping[str, int] | None,
    ctc_targets: bool = False,
) -> tuple[input_state.InputStream, input_state.InputStateStore | None]:
    """This host's training stream at the checkpoint's `position` (`None`: a new run),
    and the store of saved iterator states when `input_config.save_state`
    (`ctc_targets`: batches also carry `encoder_ctc_targets`)."""
    # Each host reads the input shards of its position on the mesh's data axes; the
    # batch sequence depends only on `seed` and the number of input shards.
    host_shard = partitioning.host_input_shard(batch_sharding, batch_size)
    shard_ids = input_state.input_shard_ids(host_shard, input_config.num_input_shards)
    num_shards = host_shard.num_shards * len(shard_ids)
    if batch_size % num_shards:
        raise ValueError(
            f"batch_size={batch_size} does not split into {num_shards} input shards; use "
            "a multiple (gin: train.batch_size, slt.InputConfig.num_input_shards)."
        )
    if position and position.get("num_input_shards") != num_shards:
        print(
            f"WARNING: the checkpoint's input stream had {position.get('num_input_shards')} "
            f"shards, this run has {num_shards}: batches after the resume differ from an "
            "uninterrupted run.",
            flush=True,
        )
    converter = features.LandmarkEncDecFeatureConverter(ctc_targets=ctc_targets)

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

    store = None
    if input_config.save_state:
        spec = {
            "mixture_or_task_name": mixture_or_task_name,
            "seed": seed,
            "batch_size": batch_size,
            "task_feature_lengths": dict(task_feature_lengths),
        }
        store = input_state.InputStateStore(model_dir, spec)
    start_batch = (position or {}).get("batches_consumed", step)
    return _open_stream(dataset_fn, shard_ids, num_shards, step, start_batch, store), store


# What restoring a saved input state raises when the state cannot be used, so that the
# stream is replayed instead; any other error is a bug and propagates.
UNUSABLE_INPUT_STATE_ERRORS = (
    # tf.data and the checkpoint reader: a missing or damaged iterator file (NotFoundError,
    # DataLossError, a bare OpError for a short index), a state of another pipeline graph.
    tf.errors.OpError,
    # The checkpoint reader on a data file cut short: "Read less bytes than requested".
    IndexError,
    # tf.train.Checkpoint.assert_consumed: the saved objects do not match the iterator.
    AssertionError,
    # The state's directory removed between finding it and reading it.
    FileNotFoundError,
)


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
        "slt.InputConfig.save_state=False; with True, checkpoints also save the "
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
            except UNUSABLE_INPUT_STATE_ERRORS as error:  # replay gives the same batches
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
    checkpoint_config: checkpoints.CheckpointConfig,
) -> tuple[trainer_lib.TrainState, dict[str, int] | None]:
    """The latest checkpoint of MODEL_DIR (with its input-stream position), else a new
    state, with params from `checkpoint_config.initial_path` when given."""
    step = checkpointer.latest_step()
    target = checkpoints.abstract_with_shardings(trainer.abstract_state, trainer.state_sharding)
    if step is not None:
        state, metadata = checkpointer.restore(step, target)
        print(f"resuming from checkpoint step {step}", flush=True)
        return state, metadata.get("input_stream")
    state = trainer.init_state(jax.random.key(seed))
    path = checkpoint_config.initial_path
    if path:
        loader = checkpoint_config.initial_params_loader or checkpoints.load_slt_params
        params = loader(path, target.params)
        checkpoints.check_tree_matches(params, target.params, path)
        params = jax.tree.map(lambda p, s: jax.device_put(p, s), params, trainer.params_sharding)
        state = state.replace(params=params)
        print(f"initial params from {path}", flush=True)
    return state, None


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
    gin_utils.parse_gin_args(argv, train)
    try:
        train()
    except (
        train_monitor.NonFiniteLossError,
        train_monitor.PeerProcessError,
        checkpoints.CheckpointMismatchError,
        storage.StorageError,
    ) as error:
        print(f"\nERROR: {gin_utils.error_message(error)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    gin_utils.run_job(main)
