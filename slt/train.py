r"""Train (and finally evaluate) a model on a seqio task or mixture.

  python -m slt.train --gin_file=gin/runs/demo.gin --gin.MODEL_DIR=\"/tmp/demo\"

Everything is configured by gin: `--gin_file=F` (repeatable) and `--gin.NAME=VALUE`
bindings. The operative config is written to MODEL_DIR/config.gin, the loss of
every logged step to MODEL_DIR/train/metrics.jsonl, checkpoints to
MODEL_DIR/checkpoints and final metrics to MODEL_DIR/eval/metrics.json.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence

from slt import gin_utils

gin_utils.quiet_tensorflow()
gin_utils.add_cpu_xla_flags()

import gin  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import seqio  # noqa: E402

import tasks  # noqa: E402  (registers the tasks)
from slt import checkpoints, evaluation, features, landmarks, partitioning  # noqa: E402
from slt import inference  # noqa: E402
from slt import trainer as trainer_lib  # noqa: E402
from slt.models import decoding  # noqa: E402
from slt.models import model as model_lib  # noqa: E402
from slt.models import network  # noqa: E402


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
    mesh_shape: Sequence[int] = (-1,),
    mesh_axis_names: Sequence[str] = ("data",),
    logical_axis_rules: partitioning.LogicalRules = partitioning.DATA_PARALLEL_RULES,
    donate_state: bool = True,
    checkpoint_period: int = 1000,
    keep_checkpoints: int = 3,
    log_period: int = 50,
    eval_tasks: Sequence[str] | None = None,
    eval_split: str = "test",
    eval_batch_size: int = 64,
    seed: int = 0,
) -> dict[str, dict]:
    """Trains for `train_steps` (resuming from the latest checkpoint) and evaluates.

    Returns the final metrics, `{task: {metric: value}}`, as written to
    MODEL_DIR/eval/metrics.json. `eval_tasks` defaults to the tasks of the mixture.
    """
    model_dir = os.path.abspath(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.gin"), "w") as f:
        f.write(gin.config_str())

    mixture = seqio.get_mixture_or_task(mixture_or_task_name)
    landmark_config = tasks.landmark_config(mixture_or_task_name)
    eval_tasks = list(eval_tasks or [t.name for t in seqio.get_subtasks(mixture)])

    mesh = partitioning.make_mesh(mesh_shape, mesh_axis_names)
    converter = features.LandmarkEncDecFeatureConverter()
    model_lengths = converter.get_model_feature_lengths(task_feature_lengths)
    batch_shapes = {name: (batch_size, length) for name, length in model_lengths.items()}
    batch_shapes["encoder_landmarks"] += (landmarks.FRAME_DIM,)
    model = model_lib.EncoderDecoderModel(
        network.Transformer(network_config), z_loss=z_loss, label_smoothing=label_smoothing,
        loss_normalizing_factor=loss_normalizing_factor, encoder_ctc_weight=encoder_ctc_weight,
        decoding_config=decoding_config)
    trainer = trainer_lib.Trainer(model, trainer_lib.make_optimizer(optimizer_config), mesh,
                                  logical_axis_rules, batch_shapes, donate_state=donate_state,
                                  decoder_input_dropout=decoder_input_dropout)
    checkpointer = checkpoints.Checkpointer(os.path.join(model_dir, "checkpoints"),
                                            max_to_keep=keep_checkpoints)
    metadata = {"network_config": gin_utils.dataclass_dict(network_config),
                "decoding_config": gin_utils.dataclass_dict(decoding_config),
                "landmark_config": gin_utils.dataclass_dict(landmark_config),
                "task_feature_lengths": dict(task_feature_lengths),
                "mixture_or_task_name": mixture_or_task_name}

    with jax.set_mesh(mesh):
        state = _restore_or_init(trainer, checkpointer, seed)
        start_step = int(state.step)
        # Each host reads its own shard of the data (one shard per process here; the
        # data-axis-aware layout for model parallelism across hosts is the trainer issue).
        shard = seqio.ShardInfo(jax.process_index(), jax.process_count())
        # A resumed run re-seeds the stream so it does not replay the first batches.
        dataset = seqio.get_dataset(
            mixture_or_task_name, task_feature_lengths, dataset_split="train", shuffle=True,
            num_epochs=None, feature_converter=converter, shard_info=shard,
            seed=seed + start_step, batch_size=batch_size // jax.process_count())
        batches = dataset.as_numpy_iterator()
        dropout_rng = jax.random.key(seed + 1)
        log = _TrainLog(model_dir, train_steps, start_step, batch_size)
        for step in range(start_step, train_steps):
            batch = partitioning.global_batch(next(batches), trainer.batch_sharding)
            state, step_metrics = trainer.train_step(state, batch, dropout_rng)
            if (step + 1) % log_period == 0 or step + 1 == train_steps:
                log.write(step + 1, jax.device_get(step_metrics))
            if (step + 1) % checkpoint_period == 0 and step + 1 < train_steps:
                checkpointer.save(step + 1, state, metadata)
        if train_steps > start_step or checkpointer.latest_step() is None:
            checkpointer.save(int(state.step), state, metadata, force=True)
        checkpointer.wait()

        # The same decoding and scoring as `python -m slt.eval` (slt.inference/evaluation).
        predict_fn = inference.make_predict_fn(model, trainer.params_sharding,
                                               trainer.batch_sharding)
        partitioning.check_batch_size(eval_batch_size, trainer.batch_sharding)
        results = evaluation.evaluate_tasks(
            predict_fn, state.params, eval_tasks, eval_split, task_feature_lengths,
            eval_batch_size, trainer.batch_sharding, os.path.join(model_dir, "eval"),
            step=int(state.step))
    checkpointer.close()
    with open(os.path.join(model_dir, "config.gin"), "w") as f:
        f.write(gin.operative_config_str())
    _print_results(results, eval_split)
    return results


def _restore_or_init(trainer: trainer_lib.Trainer, checkpointer: checkpoints.Checkpointer,
                     seed: int) -> trainer_lib.TrainState:
    step = checkpointer.latest_step()
    if step is None:
        return trainer.init_state(jax.random.key(seed))
    abstract = jax.eval_shape(trainer.init_state, jax.random.key(seed))
    target = checkpoints.abstract_with_shardings(abstract, trainer.state_sharding)
    state, _ = checkpointer.restore(step, target)
    logging.info("restored step %d from %s", step, checkpointer.directory)
    print(f"resuming from checkpoint step {step}", flush=True)
    return state


class _TrainLog:
    """Progress lines on stdout and every logged step's metrics in a JSONL file."""

    def __init__(self, model_dir: str, train_steps: int, start_step: int, batch_size: int):
        os.makedirs(os.path.join(model_dir, "train"), exist_ok=True)
        self._file = open(os.path.join(model_dir, "train", "metrics.jsonl"), "a")
        self._train_steps, self._batch_size = train_steps, batch_size
        self._last_step, self._last_time = start_step, time.time()

    def write(self, step: int, step_metrics: Mapping[str, np.ndarray]) -> None:
        now = time.time()
        steps_per_s = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        record = {"step": step, **{k: float(v) for k, v in step_metrics.items()},
                  "steps_per_second": steps_per_s}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        eta = (self._train_steps - step) / max(steps_per_s, 1e-9)
        print(f"step {step}/{self._train_steps} loss {record['loss']:.4f} "
              f"token_acc {record['accuracy']:.3f} "
              + (f"ctc {record['encoder_ctc']:.3f} " if "encoder_ctc" in record else "")
              + f"{steps_per_s:.2f} step/s "
              f"{steps_per_s * self._batch_size:.0f} ex/s eta {eta / 60:.1f} min", flush=True)


def _print_results(results: Mapping[str, Mapping], split: str) -> None:
    print(f"\nfinal evaluation ({split} split)")
    print(f"{'task':40s} {'BLEU':>7s} {'chrF':>7s} {'exact':>7s} {'n':>5s}")
    for name, m in results.items():
        print(f"{name:40s} {m['bleu']:7.2f} {m['chrf']:7.2f} {m['exact_match']:7.3f} "
              f"{m['num_examples']:5d}")
    first = next(iter(results.values()))
    print(f"BLEU signature: {first['bleu_signature']}\nchrF signature: {first['chrf_signature']}")


def main(argv: Sequence[str]) -> None:
    gin_utils.parse_gin_args(argv)
    train()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(sys.argv[1:])
