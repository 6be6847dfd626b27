"""Orbax checkpoints of the train state, with the metadata translation needs.

Each step directory holds the sharded `state` and a JSON `metadata` item: the
network config, the landmark preprocessing config and the input stream's position,
so a checkpoint can be used for translation without the training gin files and a
resumed run continues the exact batch sequence.

Saves are atomic: locally orbax writes a step into a temporary directory and
renames it when every item (and every host) is done; on `gs://`, which cannot
rename, it writes `commit_success.txt` into the step last. `latest_step` and
`resolve_checkpoint` only list finished steps; leftovers of a save that crashed are
deleted when the manager starts.
Keeps the newest `max_to_keep` steps plus every multiple of `keep_period`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp

from slt import storage


class Checkpointer:
    """Saves and restores `TrainState`s under `directory` (one subdirectory per step)."""

    def __init__(
        self,
        directory: str,
        max_to_keep: int | None = 3,
        async_save: bool = True,
        keep_period: int | None = None,
    ):
        self.directory = storage.absolute(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_names=("state", "metadata"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                keep_period=keep_period,
                enable_async_checkpointing=async_save,
                create=True,
                cleanup_tmp_directories=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The finished steps that retention still keeps."""
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, metadata: dict[str, Any], force: bool = False) -> bool:
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)
            ),
            force=force,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores onto the shardings of `abstract_state` (ShapeDtypeStructs with shardings).

        Raises `CheckpointMismatchError` listing every missing, unexpected or
        differently shaped array before reading any data.
        """
        check_tree_matches(
            self._stored_tree(step),
            abstract_state,
            f"checkpoint {storage.join(self.directory, str(step))}",
        )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), metadata=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.metadata

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Only the `params` of a saved state (any optimizer), onto `abstract_params`'s
        shardings; every mismatch is listed first, as in `restore`."""
        state_dir = storage.join(self.directory, str(step), "state")
        check_tree_matches(
            self._stored_tree(step)["params"], abstract_params, f"checkpoint {state_dir}"
        )
        reader = ocp.PyTreeCheckpointer()
        restore_args = jax.tree.map(
            lambda a: ocp.ArrayRestoreArgs(
                sharding=a.sharding, global_shape=a.shape, dtype=a.dtype
            ),
            abstract_params,
        )
        restored = reader.restore(
            state_dir,
            args=ocp.args.PyTreeRestore(
                item={"params": abstract_params},
                restore_args={"params": restore_args},
                partial_restore=True,
            ),
        )
        return restored["params"]

    def _stored_tree(self, step: int) -> Any:
        """The saved state's tree of array metadata (shapes), read from disk.

        (The manager's own `item_metadata` knows an item only after this instance
        saved or restored it, so a fresh process would see nothing.)"""
        state_dir = storage.join(self.directory, str(step), "state")
        return ocp.PyTreeCheckpointer().metadata(state_dir).item_metadata.tree

    def restore_metadata(self, step: int) -> dict[str, Any]:
        return self._manager.restore(
            step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
        ).metadata

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, for `Checkpointer.restore`."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


class CheckpointMismatchError(ValueError):
    """A checkpoint's arrays do not match the model being restored."""


def _path_names(tree: Any) -> dict[str, Any]:
    def key(k: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)

    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
    )[0]
    return {"/".join(key(k) for k in path): leaf for path, leaf in leaves if hasattr(leaf, "shape")}


def check_tree_matches(stored: Any, target: Any, source: str) -> None:
    """Raises one error listing every difference between two trees of arrays.

    Leaves are compared by path (`params/encoder/layers_0/.../kernel`) and shape;
    a dtype difference is converted by orbax and not an error.
    """
    have, want = _path_names(stored), _path_names(target)
    problems = [
        f"  missing in checkpoint: {p} {tuple(want[p].shape)}"
        for p in sorted(want.keys() - have.keys())
    ]
    problems += [
        f"  not in the model: {p} {tuple(have[p].shape)}" for p in sorted(have.keys() - want.keys())
    ]
    problems += [
        f"  shape differs: {p}: checkpoint {tuple(have[p].shape)}, model {tuple(want[p].shape)}"
        for p in sorted(want.keys() & have.keys())
        if tuple(have[p].shape) != tuple(want[p].shape)
    ]
    if problems:
        raise CheckpointMismatchError(
            f"{source} does not match the model ({len(problems)} difference(s)):\n"
            + "\n".join(problems)
            + "\nRestore with the network config it was trained "
            "with (its metadata item has it), or start a new MODEL_DIR."
        )


def _is_step_dir(path: str) -> bool:
    """A finished step: numbered, with its metadata item, finalised by orbax (on
    `gs://` a step being written already has its items but no commit file yet)."""
    return (
        storage.name(path).isdigit()
        and storage.isdir(storage.join(path, "metadata"))
        and ocp.path.step.is_path_finalized(path)
    )


def resolve_checkpoint(path: str) -> tuple[str, int]:
    """(checkpoints directory, step) for a MODEL_DIR, checkpoints dir or step dir."""
    path = storage.absolute(path)
    if not storage.isdir(path):
        raise FileNotFoundError(
            f"checkpoint {path}: no such directory. Pass a MODEL_DIR of "
            "slt.train, its checkpoints/ directory or one step in it."
        )
    if _is_step_dir(path):
        return storage.parent(path), int(storage.name(path))
    if storage.isdir(storage.join(path, "checkpoints")):
        path = storage.join(path, "checkpoints")
    steps = sorted(int(d) for d in storage.listdir(path) if _is_step_dir(storage.join(path, d)))
    if not steps:
        raise FileNotFoundError(
            f"checkpoint {path}: holds no finished checkpoint step "
            "(numbered directories with state/ and metadata/)."
        )
    return path, steps[-1]


def load_slt_params(path: str, abstract_params: Any) -> Any:
    """The default `CheckpointConfig.initial_params_loader`: params of an slt checkpoint.

    `path` is a MODEL_DIR, its `checkpoints` folder or one step folder in it (the
    latest step is taken). Importers of other formats (T5X, Hugging Face) have the
    same signature, `(path, abstract_params) -> params`, and plug in through gin
    (`slt.CheckpointConfig.initial_params_loader = @slt.t5x_params_loader`).
    """
    directory, step = resolve_checkpoint(path)
    reader = Checkpointer(directory, async_save=False)
    params = reader.restore_params(step, abstract_params)
    reader.close()
    return params


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
