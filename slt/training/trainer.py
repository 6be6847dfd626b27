"""Train state, optimizer and the partitioned train step.

The state is initialised under jit with its output shardings, so parameters are
created where they live and never gathered on one host.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from slt.models import fsdp
from slt.models.model import EncoderDecoderModel
from slt.training import partitioning


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer and learning-rate schedule.

    name: "adafactor" (T5X's default: factored second moments, decay 0.8, update
      clipping 1.0, updates scaled by parameter RMS) or "adamw".
    schedule: "constant", "rsqrt" (T5's 1/sqrt(max(step, warmup))), "linear" or
      "cosine" decay to zero at `decay_steps`; all but rsqrt warm up linearly.
    """

    name: str = "adafactor"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_steps: int = 0
    weight_decay: float = 0.0
    gradient_clip_norm: float | None = None
    # Adafactor factors the second moment of a parameter only when its two largest
    # dimensions are at least this big (T5X / optax default 128).
    min_dim_size_to_factor: int = 128


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
    lr, warmup = config.learning_rate, config.warmup_steps
    if config.schedule == "rsqrt":
        # T5: lr * 1/sqrt(max(step, warmup)), scaled so the peak equals `lr`.
        peak_step = max(warmup, 1)
        return lambda step: lr * jnp.sqrt(peak_step / jnp.maximum(step, peak_step))
    if config.schedule == "constant":
        decay = optax.constant_schedule(lr)
    elif config.schedule in ("linear", "cosine"):
        steps = max(config.decay_steps - warmup, 1)
        decay = (
            optax.linear_schedule(lr, 0.0, steps)
            if config.schedule == "linear"
            else optax.cosine_decay_schedule(lr, steps)
        )
    else:
        raise ValueError(
            f"unknown schedule {config.schedule!r}; use constant, rsqrt, linear or cosine."
        )
    if warmup <= 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(config)
    if config.name == "adafactor":
        optimizer = optax.adafactor(
            learning_rate=schedule,
            decay_rate=0.8,
            clipping_threshold=1.0,
            multiply_by_parameter_scale=True,
            weight_decay_rate=config.weight_decay or None,
            min_dim_size_to_factor=config.min_dim_size_to_factor,
        )
    elif config.name == "adamw":
        optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {config.name!r}; use adafactor or adamw.")
    if config.gradient_clip_norm:
        optimizer = optax.chain(optax.clip_by_global_norm(config.gradient_clip_norm), optimizer)
    return optimizer


class Trainer:
    """Builds the sharded state and the jitted train step for one model and mesh.

    `num_microbatches > 1` accumulates gradients over that many slices of the batch
    (rows m, m+M, m+2M, ... form microbatch m, so each stays split over all data
    shards); the summed gradient equals the full batch's (each microbatch's loss is
    weighted by its share of the target tokens, or by 1 with a fixed
    `loss_normalizing_factor`).
    """

    def __init__(
        self,
        model: EncoderDecoderModel,
        optimizer: optax.GradientTransformation,
        mesh: Mesh,
        rules: partitioning.LogicalRules,
        batch_shapes: Mapping[str, tuple[int, ...]],
        donate_state: bool = True,
        explicit_fsdp_collectives: bool = False,
        decoder_input_dropout: float = 0.0,
        unk_id: int = 2,
        num_microbatches: int = 1,
    ):
        self.model = model
        self.explicit_fsdp_collectives = explicit_fsdp_collectives
        self.decoder_input_dropout = decoder_input_dropout
        self.unk_id = unk_id
        self.optimizer = optimizer
        self.mesh = mesh
        self.rules = partitioning.restrict_rules(rules, mesh)
        self.batch_shapes = dict(batch_shapes)
        self.batch_sharding = partitioning.batch_sharding(mesh, rules)
        batch_size = next(iter(batch_shapes.values()))[0]
        partitioning.check_batch_size(batch_size, self.batch_sharding)
        if num_microbatches < 1 or batch_size % num_microbatches:
            raise ValueError(
                f"num_microbatches={num_microbatches} must divide "
                f"batch_size={batch_size} (gin: train.num_microbatches)."
            )
        if num_microbatches > 1:
            try:
                partitioning.check_batch_size(batch_size // num_microbatches, self.batch_sharding)
            except ValueError as e:
                raise ValueError(
                    f"with num_microbatches={num_microbatches}, each "
                    f"microbatch has {batch_size // num_microbatches} rows: {e}"
                ) from None
        self.num_microbatches = num_microbatches

        param_axes = model.logical_axes(batch_shapes)
        self.params_sharding = partitioning.param_shardings(param_axes, mesh, rules)
        abstract = jax.eval_shape(self._init, jax.random.key(0))
        partitioning.check_divisible(abstract.params, self.params_sharding)
        self.state_sharding = TrainState(
            step=partitioning.replicated(mesh),
            params=self.params_sharding,
            opt_state=partitioning.optimizer_state_shardings(
                abstract.opt_state, abstract.params, self.params_sharding, mesh
            ),
        )
        self.abstract_state = abstract
        self.init_state = jax.jit(self._init, out_shardings=self.state_sharding)
        self.train_step = jax.jit(
            self._train_step,
            in_shardings=(self.state_sharding, self.batch_sharding, None),
            out_shardings=(self.state_sharding, None),
            donate_argnums=(0,) if donate_state else (),
        )
        # Loss and gradients of one batch (for tests and tools), sharded like params.
        self.compute_grads = jax.jit(
            self._grads,
            in_shardings=(self.params_sharding, self.batch_sharding, None),
            out_shardings=(self.params_sharding, None),
        )

    def _init(self, rng: jax.Array) -> TrainState:
        params = self.model.init_params(rng, self.batch_shapes)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=self.optimizer.init(params)
        )

    def _loss_and_grads(
        self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array
    ) -> tuple[Any, dict[str, jax.Array]]:
        (loss, aux), grads = jax.value_and_grad(self.model.loss_fn, has_aux=True)(
            params, batch, rng
        )
        return grads, {"loss": loss, **aux}

    def _grads(
        self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array | None
    ) -> tuple[Any, dict[str, jax.Array]]:
        """Gradients and metrics of the whole batch, accumulated over microbatches."""
        gather = (
            fsdp.gather_weights(self.mesh, partitioning.BATCH_AXES)
            if self.explicit_fsdp_collectives
            else contextlib.nullcontext()
        )
        with nn.logical_axis_rules(self.rules), gather:
            if self.num_microbatches == 1:
                return self._loss_and_grads(params, batch, rng)
            return self._accumulated_grads(params, batch, rng)

    def _accumulated_grads(self, params, batch, rng):
        count = self.num_microbatches

        def split(x):
            return jnp.swapaxes(x.reshape((x.shape[0] // count, count) + x.shape[1:]), 0, 1)

        micro = {k: split(v) for k, v in batch.items()}
        targets = batch["decoder_target_tokens"]
        weights = batch.get("decoder_loss_weights", targets > 0)
        tokens = jnp.sum(split(jnp.asarray(weights, jnp.float32)), axis=(1, 2))  # [M]
        total = jnp.maximum(jnp.sum(tokens), 1.0)
        token_share = tokens / total
        loss_share = (
            token_share if self.model.loss_normalizing_factor is None else jnp.ones_like(tokens)
        )

        def body(acc, xs):
            index, microbatch = xs
            mb_rng = None if rng is None else jax.random.fold_in(rng, index)
            grads, metrics = self._loss_and_grads(params, microbatch, mb_rng)
            acc_grads, acc_metrics = acc
            acc_grads = jax.tree.map(lambda a, g: a + loss_share[index] * g, acc_grads, grads)
            acc_metrics = {
                k: acc_metrics[k] + _metric_weight(k, index, loss_share, token_share, count) * v
                for k, v in metrics.items()
            }
            return (acc_grads, acc_metrics), None

        zero_grads = jax.tree.map(jnp.zeros_like, params)
        metric_shapes = jax.eval_shape(
            lambda: self._loss_and_grads(params, jax.tree.map(lambda x: x[0], micro), rng)[1]
        )
        zero_metrics = jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metric_shapes)
        (grads, metrics), _ = jax.lax.scan(
            body, (zero_grads, zero_metrics), (jnp.arange(count), micro)
        )
        return grads, metrics

    def _train_step(
        self, state: TrainState, batch: Mapping[str, jax.Array], dropout_rng: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(dropout_rng, state.step)
        if self.decoder_input_dropout > 0:
            rng, token_rng = jax.random.split(rng)
            batch = dict(
                batch,
                decoder_input_tokens=drop_decoder_inputs(
                    batch["decoder_input_tokens"],
                    token_rng,
                    self.decoder_input_dropout,
                    self.unk_id,
                ),
            )
        grads, metrics = self._grads(state.params, batch, rng)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def _metric_weight(
    name: str, index: jax.Array, loss_share: jax.Array, token_share: jax.Array, count: int
) -> jax.Array:
    """How microbatch `index`'s value of metric `name` enters the batch's value."""
    if name == "num_tokens":
        return jnp.ones(())
    if name == "accuracy":
        return token_share[index]
    if name in ("loss", "cross_entropy", "z_loss", "encoder_ctc"):
        return loss_share[index]
    return jnp.full((), 1.0 / count)


def drop_decoder_inputs(tokens: jax.Array, rng: jax.Array, rate: float, unk_id: int) -> jax.Array:
    """Replaces teacher-forced decoder inputs by UNK with probability `rate`.

    Word dropout (Bowman et al. 2016): with a small target vocabulary (the
    fingerspelling corpus has ~1,000 training words) the decoder can otherwise
    predict most characters from the ones before and barely learn to read the
    encoder. BOS and padding are never replaced.
    """
    drop = jax.random.bernoulli(rng, rate, tokens.shape) & (tokens > 0)
    return jnp.where(drop, jnp.asarray(unk_id, tokens.dtype), tokens)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """What the train step minimises.

    `z_loss` is T5X's auxiliary `z_loss * log(Z)^2`; `loss_normalizing_factor` divides the
    summed token loss by a constant (None: by the number of target tokens);
    `encoder_ctc_weight` adds that weight times the encoder's CTC loss (needs
    `T5Config.encoder_ctc_head`), whose labels are the targets, or with
    `encoder_ctc_targets = "signed_text"` what each clip signs (the task feature
    `signed_text`: a fingerspelled clip's English word whatever language the target is
    in; MT examples have none and add nothing); `decoder_input_dropout` replaces
    teacher-forced decoder inputs by UNK at that rate (word dropout).
    """

    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    loss_normalizing_factor: float | None = None
    encoder_ctc_weight: float = 0.0
    encoder_ctc_targets: str = "targets"
    decoder_input_dropout: float = 0.0
