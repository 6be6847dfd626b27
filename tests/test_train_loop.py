"""`slt.train._train_loop`: the host reads the next batch while a step runs and reads
metrics one step behind; the NaN guard stops within a step of the first non-finite loss
and no non-finite state is ever saved."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import tensorflow as tf
from helpers import make_trainer, trainer_batch

from slt import train as train_job
from slt.training import checkpoints, input_state, train_monitor


class _Observed:
    """The real input stream, recording when the loop takes each batch."""

    def __init__(self, stream: input_state.InputStream, events: list):
        self.stream, self.events = stream, events

    def __next__(self):
        batch = next(self.stream)
        self.events.append(("batch", self.stream.position))
        return batch

    def state(self):
        return self.stream.state()


class _ObservedLog(train_monitor.TrainLog):
    def __init__(self, events: list, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = events

    def write(self, step, step_metrics):
        self.events.append(("metrics", step))
        return super().write(step, step_metrics)


def _dataset_fn(nan_from_step: int | None, num_batches: int = 12):
    batches = [trainer_batch(seed=b) for b in range(num_batches)]
    if nan_from_step is not None:
        for batch in batches[nan_from_step - 1 :]:  # batch b feeds step b + 1
            batch["encoder_landmarks"][:] = np.nan
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}

    def dataset_fn(index: int, count: int) -> tf.data.Dataset:
        del index, count
        return tf.data.Dataset.from_tensor_slices(stacked)

    return dataset_fn


@pytest.fixture(scope="module")
def trainer():
    # One trainer for the module: its jitted step compiles once for all the tests.
    return make_trainer()


def _run_loop(trainer, tmp_path, train_steps, checkpoint_period, nan_from_step=None):
    events: list = []
    dispatched: list[int] = []

    def train_step(state, batch, rng):
        dispatched.append(len(dispatched) + 1)
        events.append(("dispatch", len(dispatched)))
        return trainer.train_step(state, batch, rng)

    stream = _Observed(input_state.InputStream(_dataset_fn(nan_from_step), [0], 1), events)
    checkpointer = checkpoints.Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=None)
    saver = train_job._Saver(checkpointer, {}, stream, None)
    error = None
    with (
        jax.set_mesh(trainer.mesh),
        _ObservedLog(events, str(tmp_path), train_steps, 0, 4, 1000, tensorboard=False) as log,
        train_monitor.PreemptionWatcher() as watcher,
        train_monitor.StepWatchdog(0) as watchdog,
    ):
        state = trainer.init_state(jax.random.key(0))
        try:
            train_job._train_loop(
                state,
                trainer,
                stream,
                saver,
                log,
                watcher,
                watchdog,
                train_step=train_step,
                seed=0,
                train_steps=train_steps,
                checkpoint_period=checkpoint_period,
                eval_period=0,
                periodic_eval=lambda step, params: {},
            )
        except train_monitor.NonFiniteLossError as raised:
            error = raised
        finally:
            checkpointer.wait()
    return checkpointer, events, dispatched, error


def test_next_batch_is_read_while_the_step_runs_and_metrics_one_step_behind(trainer, tmp_path):
    checkpointer, events, dispatched, error = _run_loop(trainer, tmp_path, 6, 1000)
    checkpointer.close()
    assert error is None and dispatched == [1, 2, 3, 4, 5, 6]
    order = {event: i for i, event in enumerate(events)}
    for step in range(1, 6):
        # Step n is dispatched, then batch n+1 is read (while step n runs), and only
        # then are step n-1's metrics read: the host never waits on the step it just
        # dispatched.
        assert order[("dispatch", step)] < order[("batch", step + 1)]
        assert order[("batch", step + 1)] < order[("metrics", step)]
        assert order[("metrics", step)] > order[("dispatch", step + 1)]
    # The last step's metrics are read before the loop returns; every step is logged.
    assert events[-1] == ("metrics", 6)
    lines = (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(json.loads(line)["loss"]) for line in lines)


@pytest.mark.parametrize("nan_step", [5, 6])  # between saves, and on a save step
def test_nan_guard_stops_within_a_step_and_never_saves_a_nonfinite_state(
    trainer, tmp_path, nan_step
):
    checkpointer, _, dispatched, error = _run_loop(trainer, tmp_path, 10, 3, nan_step)
    try:
        assert error is not None and f"at step {nan_step}:" in str(error)
        assert "last good checkpoint is step 3" in str(error)
        # At most one step past the first non-finite one was dispatched.
        assert max(dispatched) <= nan_step + 1
        # Step 6's save would have held the non-finite state: it never happened.
        assert checkpointer.all_steps() == [3]
        target = checkpoints.abstract_with_shardings(trainer.abstract_state, trainer.state_sharding)
        saved, _ = checkpointer.restore(3, target)
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(saved.params))
    finally:
        checkpointer.close()
