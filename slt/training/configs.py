"""The option groups of a training job, as plain frozen dataclasses.

`slt.train.train` takes one of each besides the model, optimizer and decoding configs
(`T5Config`, `OptimizerConfig`, `DecodingConfig`). Gin binds them as `slt.<Name>`; the
entry points bind the job's parameter to `@slt.<Name>()` before the user's files, so a
binding such as `slt.CheckpointConfig.period = 500` works on its own. Library code gets
the objects as plain arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from slt.training import partitioning


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """What the train step minimises.

    `z_loss` is T5X's auxiliary `z_loss * log(Z)^2`; `loss_normalizing_factor` divides the
    summed token loss by a constant (None: by the number of target tokens);
    `encoder_ctc_weight` adds that weight times the encoder's CTC loss (needs
    `T5Config.encoder_ctc_head`); `decoder_input_dropout` replaces teacher-forced decoder
    inputs by UNK at that rate (word dropout).
    """

    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    loss_normalizing_factor: float | None = None
    encoder_ctc_weight: float = 0.0
    decoder_input_dropout: float = 0.0


@dataclasses.dataclass(frozen=True)
class PartitioningConfig:
    """How params, optimizer state and batches are laid out over the devices.

    `mesh_shape` is over `mesh_axis_names` (a -1 takes the remaining devices);
    `dcn_mesh_shape` is the part of the mesh across slices (multislice TPU);
    `logical_axis_rules` map the model's logical axes onto the mesh axes.
    """

    mesh_shape: Sequence[int] = (-1, 1, 1)
    mesh_axis_names: Sequence[str] = partitioning.MESH_AXES
    dcn_mesh_shape: Sequence[int] | None = None
    logical_axis_rules: partitioning.LogicalRules = partitioning.DATA_PARALLEL_RULES
    donate_state: bool = True


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When checkpoints are saved and kept, and where a new run's params come from.

    The newest `keep` steps are kept, plus every multiple of `keep_period`.
    `initial_path` starts a run that has no checkpoint of its own from other weights,
    read by `initial_params_loader(path, abstract_params) -> params` (default: an slt
    MODEL_DIR or checkpoint step).
    """

    period: int = 1000
    keep: int = 3
    keep_period: int | None = None
    initial_path: str | None = None
    initial_params_loader: Callable[[str, Any], Any] | None = None


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """How the training stream is split over hosts and resumed.

    `num_input_shards` fixes the stream across host counts (default: one shard per host
    position on the mesh's data axes). `save_state` saves each input shard's tf.data
    iterator state with every checkpoint, so a resume restores it instead of replaying
    the batches already consumed.
    """

    num_input_shards: int | None = None
    save_state: bool = False


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation during and after training.

    `tasks` defaults to the tasks of the training mixture. `period` > 0 evaluates
    `periodic_split` every that many steps; `final` evaluates `split` at the end.
    """

    tasks: Sequence[str] | None = None
    split: str = "test"
    batch_size: int = 64
    period: int = 0
    periodic_split: str = "validation"
    final: bool = True


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Several processes in one job (`jax.distributed`).

    Unset fields come from `SLT_COORDINATOR_ADDRESS`, `SLT_NUM_PROCESSES` and
    `SLT_PROCESS_ID`, or from JAX's own cluster detection with `SLT_DISTRIBUTED_AUTO=1`.
    A process exits when no step finishes within `step_timeout_s` (default: 300 s with
    several processes, off with one): a peer probably died.
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_timeout_s: int = 100
    step_timeout_s: float | None = None
