"""Train state, optimizer and the partitioned train step.

The state is initialised under jit with its output shardings, so parameters are
created where they live and never gathered on one host.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from slt import partitioning
from slt.models.model import EncoderDecoderModel


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
        decay = (optax.linear_schedule(lr, 0.0, steps) if config.schedule == "linear"
                 else optax.cosine_decay_schedule(lr, steps))
    else:
        raise ValueError(f"unknown schedule {config.schedule!r}; use constant, rsqrt, "
                         "linear or cosine.")
    if warmup <= 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(config)
    if config.name == "adafactor":
        optimizer = optax.adafactor(
            learning_rate=schedule, decay_rate=0.8, clipping_threshold=1.0,
            multiply_by_parameter_scale=True, weight_decay_rate=config.weight_decay or None)
    elif config.name == "adamw":
        optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {config.name!r}; use adafactor or adamw.")
    if config.gradient_clip_norm:
        optimizer = optax.chain(optax.clip_by_global_norm(config.gradient_clip_norm), optimizer)
    return optimizer


class Trainer:
    """Builds the sharded state and the jitted train step for one model and mesh."""

    def __init__(self, model: EncoderDecoderModel, optimizer: optax.GradientTransformation,
                 mesh: Mesh, rules: partitioning.LogicalRules,
                 batch_shapes: Mapping[str, tuple[int, ...]], donate_state: bool = True,
                 decoder_input_dropout: float = 0.0, unk_id: int = 2):
        self.model = model
        self.decoder_input_dropout = decoder_input_dropout
        self.unk_id = unk_id
        self.optimizer = optimizer
        self.mesh = mesh
        self.batch_shapes = dict(batch_shapes)
        self.batch_sharding = partitioning.batch_sharding(mesh, rules)
        partitioning.check_batch_size(next(iter(batch_shapes.values()))[0], self.batch_sharding)

        param_axes = model.logical_axes(batch_shapes)
        self.params_sharding = partitioning.param_shardings(param_axes, mesh, rules)
        abstract = jax.eval_shape(self._init, jax.random.key(0))
        # Optimizer slots follow their parameter's sharding when they have its shape
        # (Adam moments, unfactored Adafactor statistics); factored statistics and
        # scalars are small and stay replicated.
        self.state_sharding = TrainState(
            step=partitioning.replicated(mesh),
            params=self.params_sharding,
            opt_state=_match_sharding(optimizer, abstract.opt_state, abstract.params,
                                      self.params_sharding, mesh),
        )
        self.init_state = jax.jit(self._init, out_shardings=self.state_sharding)
        self.train_step = jax.jit(
            self._train_step,
            in_shardings=(self.state_sharding, self.batch_sharding, None),
            out_shardings=(self.state_sharding, None),
            donate_argnums=(0,) if donate_state else ())

    def _init(self, rng: jax.Array) -> TrainState:
        params = self.model.init_params(rng, self.batch_shapes)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=self.optimizer.init(params))

    def _train_step(self, state: TrainState, batch: Mapping[str, jax.Array],
                    dropout_rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(dropout_rng, state.step)
        if self.decoder_input_dropout > 0:
            rng, token_rng = jax.random.split(rng)
            batch = dict(batch, decoder_input_tokens=drop_decoder_inputs(
                batch["decoder_input_tokens"], token_rng, self.decoder_input_dropout,
                self.unk_id))
        (loss, aux), grads = jax.value_and_grad(self.model.loss_fn, has_aux=True)(
            state.params, batch, rng)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def drop_decoder_inputs(tokens: jax.Array, rng: jax.Array, rate: float,
                        unk_id: int) -> jax.Array:
    """Replaces teacher-forced decoder inputs by UNK with probability `rate`.

    Word dropout (Bowman et al. 2016): with a small target vocabulary (the
    fingerspelling corpus has ~1,000 training words) the decoder can otherwise
    predict most characters from the ones before and barely learn to read the
    encoder. BOS and padding are never replaced.
    """
    drop = jax.random.bernoulli(rng, rate, tokens.shape) & (tokens > 0)
    return jnp.where(drop, jnp.asarray(unk_id, tokens.dtype), tokens)


def _match_sharding(optimizer: optax.GradientTransformation, opt_state: Any, params: Any,
                    params_sharding: Any, mesh: Mesh) -> Any:
    replicated = partitioning.replicated(mesh)

    def pick(slot, sharding, param):
        return sharding if getattr(slot, "shape", None) == param.shape else replicated

    return optax.tree_map_params(
        optimizer, pick, opt_state, params_sharding, params,
        transform_non_params=lambda _: replicated)
