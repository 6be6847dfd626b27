"""The training input stream and its checkpointed position (tf.data iterator state).

A resumed run must see exactly the batches an uninterrupted run would have seen.
Two ways get there, with the same batches:

- replay: rebuild the pipeline and read (and drop) the `start_batch` batches
  already used. Costs `start_batch` batches of input pipeline time.
- restore: read the tf.data iterator state saved with the checkpoint (t5x's
  `CheckpointConfig(save_dataset=True)`). Costs one read; the state holds the
  shuffle and prefetch buffers, so it can be large (docs/training.md, "Resume").

States are saved per *input shard*, by the host that reads it, under
`MODEL_DIR/input_state/step_<N>/shard_<i>-of-<n>/` (the iterator checkpoint and an
`input_state.json` describing it), so a restore with another number of hosts but
the same number of input shards still restores. tf.data writes the iterator into a
local staging directory, which is copied into the run directory through
`slt.storage` (so `gs://` works wherever epath does); `input_state.json` is written
last and only a state that has it is ever read, so a save cut off mid-write is
never restored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from slt import storage

DatasetFn = Callable[[int, int], Any]  # (shard index, number of shards) -> tf.data batches
STATE_DIR = "input_state"
SPEC_FILE = "input_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")

log = logging.getLogger(__name__)


def checkpointable(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` with the option that lets tf.data save its iterator despite numpy functions.

    tf.data refuses to save an iterator whose pipeline calls `tf.numpy_function`
    (state it cannot see). IGNORE is safe here: our numpy functions are pure (clip
    composition is seeded per word and variant) or only count skipped/truncated
    examples for reports, so re-running them after a restore gives the same data.
    """
    options = tf.data.Options()
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return ds.with_options(options)


class InputStream:
    """Training batches of one host, resumable at any batch.

    The data are split into `num_shards` input shards; shard `i` is
    `dataset_fn(i, num_shards)`, a deterministic tf.data stream of
    `global_batch // num_shards` rows per batch (seqio with a fixed seed). A host
    reads the shards `shard_ids` and concatenates their rows, in order. So the
    global batch sequence depends only on the seed and `num_shards`, never on how
    many hosts read it.

    The stream starts at batch `start_batch`: restored from `restore_dirs` (one
    saved state per shard, `InputStateStore.find`) when given, else by replaying
    (reading and dropping) the first `start_batch` batches of every shard.
    """

    def __init__(
        self,
        dataset_fn: DatasetFn,
        shard_ids: Sequence[int],
        num_shards: int,
        start_batch: int = 0,
        restore_dirs: Sequence[str] | None = None,
    ):
        self.shard_ids, self.num_shards = list(shard_ids), num_shards
        self.position = start_batch
        # The same pipeline graph whether restored, replayed or fresh: a saved state
        # fits only the graph it was saved from.
        self.iterators = [
            iter(checkpointable(dataset_fn(i, num_shards)).prefetch(2)) for i in self.shard_ids
        ]
        if restore_dirs is not None:
            if len(restore_dirs) != len(self.iterators):
                raise ValueError(
                    f"{len(restore_dirs)} input states for {len(self.iterators)} input shards"
                )
            for it, directory in zip(self.iterators, restore_dirs):
                with storage.staging_dir("input-state") as local:
                    storage.download_dir(directory, local)
                    tf.train.Checkpoint(iterator=it).read(
                        storage.join(local, "iterator")
                    ).assert_consumed()
        else:
            for it in self.iterators:
                for _ in range(start_batch):
                    next(it)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        parts = [{k: v.numpy() for k, v in next(it).items()} for it in self.iterators]
        self.position += 1
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def state(self) -> dict[str, int]:
        """What a checkpoint's metadata stores to resume this stream."""
        return {"batches_consumed": self.position, "num_input_shards": self.num_shards}


def input_shard_ids(host_shard: Any, num_input_shards: int | None) -> list[int]:
    """The input shards host shard `host_shard` (`partitioning.HostShard`) reads:
    `num_input_shards / host_shard.num_shards` consecutive ones."""
    num_host_shards = host_shard.num_shards
    total = num_input_shards or num_host_shards
    if total % num_host_shards:
        raise ValueError(
            f"num_input_shards={total} must be a multiple of the {num_host_shards} host "
            "data shards of this mesh (gin: slt.InputConfig.num_input_shards)."
        )
    per_host = total // num_host_shards
    return list(range(host_shard.index * per_host, (host_shard.index + 1) * per_host))


class InputStateStore:
    """Saved iterator states under `MODEL_DIR/input_state`, one per step and input shard.

    `spec` describes the data stream (mixture name, seed, global batch size, feature
    lengths...); a state is restored only into a stream with an equal spec and the
    same number of input shards.
    """

    def __init__(self, model_dir: str, spec: Mapping[str, Any]):
        self.directory = storage.join(model_dir, STATE_DIR)
        self.spec = json.loads(json.dumps(dict(spec)))  # as it reads back from JSON
        self.save_error: str | None = None

    def shard_dir(self, step: int, shard: int, num_shards: int) -> str:
        return storage.join(self.directory, f"step_{step}", f"shard_{shard}-of-{num_shards}")

    def save(self, step: int, stream: InputStream) -> int:
        """Writes the state of each shard of `stream` (at batch `stream.position`).

        Returns the bytes written. A pipeline tf.data cannot save (e.g. one built on
        `Dataset.from_generator`) disables saving, with the reason logged as a
        warning and kept in `save_error`; resumes then replay, which gives the same
        batches.
        """
        if self.save_error:
            return 0
        written = 0
        for shard, it in zip(stream.shard_ids, stream.iterators):
            final = self.shard_dir(step, shard, stream.num_shards)
            with storage.staging_dir("input-state") as local:
                try:
                    tf.train.Checkpoint(iterator=it).write(storage.join(local, "iterator"))
                except (tf.errors.OpError, ValueError, TypeError) as error:
                    self.save_error = str(error).splitlines()[0][:300]
                    log.warning(
                        "input state: tf.data cannot save this pipeline's iterator (%s); "
                        "not saving it, resumes will replay the input (same batches, "
                        "slower). Set slt.InputConfig.save_state=False to skip the attempt.",
                        self.save_error,
                    )
                    return 0
                # A run restored from an earlier step re-saves: the old state goes
                # first, then the iterator files, then the spec that marks it complete.
                storage.rmtree(final)
                written += storage.upload_dir(local, final)
            spec = {
                **self.spec,
                "num_input_shards": stream.num_shards,
                "shard": shard,
                "step": step,
                "batches_consumed": stream.position,
            }
            text = json.dumps(spec, indent=1)
            storage.write_text(storage.join(final, SPEC_FILE), text)
            written += len(text)
        return written

    def find(
        self, step: int, shard_ids: Sequence[int], num_shards: int, batches_consumed: int
    ) -> tuple[list[str] | None, str]:
        """The state directories to restore `shard_ids` at `step`, or None and why not."""
        dirs = []
        for shard in shard_ids:
            directory = self.shard_dir(step, shard, num_shards)
            spec_path = storage.join(directory, SPEC_FILE)
            if not storage.exists(spec_path):
                saved = self._saved_shard_counts(step)
                return None, (
                    f"no saved input state for shard {shard} of {num_shards} at "
                    f"step {step} ({directory})"
                    + (
                        f"; step {step} has states for {sorted(saved)} input shards"
                        if saved
                        else ""
                    )
                )
            saved = json.loads(storage.read_text(spec_path))
            want = {
                **self.spec,
                "num_input_shards": num_shards,
                "batches_consumed": batches_consumed,
            }
            differs = [
                f"{k}: saved {saved.get(k)!r}, now {v!r}"
                for k, v in want.items()
                if saved.get(k) != v
            ]
            if differs:
                return None, f"the input state in {directory} differs: " + "; ".join(differs)
            dirs.append(directory)
        return dirs, ""

    def _saved_shard_counts(self, step: int) -> set[int]:
        names = storage.listdir(storage.join(self.directory, f"step_{step}"))
        return {int(m.group(1)) for m in map(re.compile(r"^shard_\d+-of-(\d+)$").match, names) if m}

    def collect_garbage(self, keep: Iterable[int], below: int | None = None) -> list[int]:
        """Deletes the states of steps not in `keep` (the steps orbax still has);
        with `below`, only of earlier steps (later ones may be being written)."""
        keep = set(keep)
        removed = []
        for name in storage.listdir(self.directory):
            match = _STEP_DIR.match(name)
            if not match:
                continue
            step = int(match.group(1))
            if step not in keep and (below is None or step < below):
                storage.rmtree(storage.join(self.directory, name))
                removed.append(step)
        return sorted(removed)


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
