"""A trained model back from its checkpoint, ready to decode on a mesh.

`load_trained_model(path)` accepts a MODEL_DIR (uses `checkpoints/`), a checkpoints directory
(latest step) or one step directory, and rebuilds the network and the preprocessing
from the checkpoint's metadata alone: no training gin files are needed. Only the
parameters are read (the optimizer state stays on disk), through a read-only orbax
manager, so a training run still writing to the directory is left alone.
`read_metadata(path)` reads the metadata alone (e.g. the landmark config, to prepare a
dataset the way the model was trained).

`load_for_tasks` is the common start of `python -m slt.eval` and `slt.infer`: join
the job's other processes, restore, and name the tasks to decode (a mixture's tasks,
or a prepared dataset registered as a task).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

from slt import storage
from slt.data import features, landmarks
from slt.evaluation import predict
from slt.models import decoding, network
from slt.models import model as model_lib
from slt.training import checkpoints, partitioning

METADATA_FIELDS = ("network_config", "landmark_config", "task_feature_lengths")


@dataclasses.dataclass
class TrainedModel:
    """A checkpoint's model and parameters, sharded onto `mesh`, with its metadata."""

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

    def __str__(self) -> str:
        return f"step {self.step} of {self.checkpoint_dir}"

    def predictor(
        self,
        batch_size: int,
        with_scores: bool = False,
        decode_options: Mapping[str, Any] | None = None,
    ) -> predict.Predictor:
        """Decoding with these params in global batches of `batch_size` (see
        `predict.make_predict_fn` for `with_scores` and `decode_options`)."""
        predict_fn = predict.make_predict_fn(
            self.model, self.params_sharding, self.batch_sharding, with_scores, decode_options
        )
        return predict.Predictor(
            predict_fn, self.params, self.task_feature_lengths, batch_size, self.batch_sharding
        )

    @property
    def model_dir(self) -> str:
        """The run directory: the parent of `checkpoints/`, else the checkpoints dir."""
        if storage.name(self.checkpoint_dir) == "checkpoints":
            return storage.parent(self.checkpoint_dir)
        return self.checkpoint_dir


def model_from_metadata(metadata: Mapping[str, Any]) -> model_lib.EncoderDecoderModel:
    """The network and decoding a checkpoint's metadata describe."""
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
    # The decoding the run was configured with (e.g. joint CTC/attention); a checkpoint
    # without one decodes greedily.
    decoding_config = decoding.DecodingConfig(**metadata.get("decoding_config", {}))
    return model_lib.EncoderDecoderModel(
        network.Transformer(network.T5Config(**config)), decoding_config=decoding_config
    )


def batch_shapes(
    task_feature_lengths: Mapping[str, int], batch_size: int, ctc_targets: bool = False
) -> dict[str, tuple[int, ...]]:
    """Shapes of the model features of a batch (what `init_params` needs; with
    `ctc_targets`, also the CTC labels a training batch carries)."""
    converter = features.LandmarkEncDecFeatureConverter(ctc_targets=ctc_targets)
    lengths = converter.get_model_feature_lengths(task_feature_lengths)
    shapes = {name: (batch_size, length) for name, length in lengths.items()}
    shapes["encoder_landmarks"] += (landmarks.FRAME_DIM,)
    return shapes


def _read_only_manager(directory: str) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        directory,
        item_names=("state", "metadata"),
        # create and save_interval_steps as read_only implies (orbax warns otherwise).
        options=ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0),
    )


def _metadata(manager: ocp.CheckpointManager, directory: str, step: int) -> dict[str, Any]:
    metadata = manager.restore(
        step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
    ).metadata
    missing = [k for k in METADATA_FIELDS if k not in metadata]
    if missing:
        raise ValueError(
            f"checkpoint {directory}/{step}: metadata lacks {missing}; it was "
            "not written by slt.train."
        )
    return dict(metadata)


def read_metadata(path: str) -> dict[str, Any]:
    """A checkpoint's metadata without its parameters: `network_config`,
    `decoding_config`, `landmark_config`, `task_feature_lengths`,
    `mixture_or_task_name` and the input stream's position."""
    directory, step = checkpoints.resolve_checkpoint(path)
    manager = _read_only_manager(directory)
    try:
        return _metadata(manager, directory, step)
    finally:
        manager.close()


def load_trained_model(
    path: str,
    partitioning_config: partitioning.PartitioningConfig = partitioning.PartitioningConfig(),
) -> TrainedModel:
    """The parameters and metadata of a checkpoint, sharded onto a new mesh.

    The default `partitioning_config` is data parallelism over every device: the
    parameters are replicated and each batch is split over the devices.
    """
    directory, step = checkpoints.resolve_checkpoint(path)
    manager = _read_only_manager(directory)
    metadata = _metadata(manager, directory, step)
    model = model_from_metadata(metadata)
    mesh = partitioning.make_mesh(
        partitioning_config.mesh_shape,
        partitioning_config.mesh_axis_names,
        dcn_mesh_shape=partitioning_config.dcn_mesh_shape,
    )
    rules = partitioning_config.logical_axis_rules
    shapes = batch_shapes(metadata["task_feature_lengths"], 1)
    params_sharding = partitioning.param_shardings(model.logical_axes(shapes), mesh, rules)
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
    return TrainedModel(
        model=model,
        params=restored.state["params"],
        step=step,
        checkpoint_dir=directory,
        metadata=metadata,
        mesh=mesh,
        params_sharding=params_sharding,
        batch_sharding=partitioning.batch_sharding(mesh, rules),
    )


def load_for_tasks(
    checkpoint: str,
    mixture_or_task_name: str | None,
    split: str,
    batch_size: int,
    partitioning_config: partitioning.PartitioningConfig,
    distributed_config: partitioning.DistributedConfig,
    prepared_task: Callable[[TrainedModel], str] | None = None,
) -> tuple[TrainedModel, list[str]]:
    """The restored checkpoint and the tasks a decoding job runs on.

    Joins the job's other processes first (`distributed_config`, or the SLT_*
    environment variables as for `slt.train`). The tasks are those of
    `mixture_or_task_name` (default: what the checkpoint was trained on), or the one
    task `prepared_task(model)` registers and names (a prepared dataset, checked
    against the model: `slt.tasks.prepared.register_for_model`). Fails before any decoding when a
    task lacks `split` or `batch_size` does not split over the mesh.
    """
    import seqio

    partitioning.initialize_distributed(
        distributed_config.coordinator_address,
        distributed_config.num_processes,
        distributed_config.process_id,
        heartbeat_timeout_s=distributed_config.heartbeat_timeout_s,
    )
    restored = load_trained_model(checkpoint, partitioning_config)
    if prepared_task is not None:
        task_names = [prepared_task(restored)]
    else:
        name = mixture_or_task_name or restored.mixture_or_task_name
        task_names = [t.name for t in seqio.get_subtasks(seqio.get_mixture_or_task(name))]
    predict.check_splits(task_names, split)
    partitioning.check_batch_size(batch_size, restored.batch_sharding)
    return restored, task_names
