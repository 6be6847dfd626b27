"""Train-loop pieces: microbatches, the NaN guard, the resumable input stream,
checkpoint mismatches, atomic saves and retention."""

import json
import os
import time

import jax
import numpy as np
import pytest
import seqio
import tensorflow as tf
from helpers import TRAINER_CONFIG, TRAINER_SHAPES, make_trainer, trainer_batch

from slt.models import model as model_lib
from slt.models import network
from slt.training import checkpoints, input_state, partitioning, train_monitor
from slt.training import trainer as trainer_lib


@pytest.mark.parametrize(
    "loss_normalizing_factor", [None, pytest.param(37.0, marks=pytest.mark.slow)]
)  # (keeps the default run short)
def test_microbatch_gradients_equal_the_full_batch(loss_normalizing_factor):
    model = model_lib.EncoderDecoderModel(
        network.Transformer(TRAINER_CONFIG), loss_normalizing_factor=loss_normalizing_factor
    )
    optimizer = trainer_lib.make_optimizer(trainer_lib.OptimizerConfig(name="adamw"))
    mesh = partitioning.make_mesh()
    batch = trainer_batch(3)
    batch["decoder_loss_weights"][1, :] = 0  # microbatches with unequal token counts
    batch["decoder_loss_weights"][2, 3:] = 0
    results = []
    for count in (1, 4):
        trainer = trainer_lib.Trainer(
            model,
            optimizer,
            mesh,
            partitioning.DATA_PARALLEL_RULES,
            TRAINER_SHAPES,
            num_microbatches=count,
        )
        with jax.set_mesh(mesh):
            params = trainer.init_state(jax.random.key(0)).params
            grads, metrics = trainer.compute_grads(
                params, partitioning.global_batch(batch, trainer.batch_sharding), None
            )
        results.append((jax.device_get(grads), jax.device_get(metrics)))
    (full_grads, full), (micro_grads, micro) = results
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), micro_grads, full_grads
    )
    for key in ("loss", "cross_entropy", "z_loss", "accuracy", "num_tokens"):
        np.testing.assert_allclose(micro[key], full[key], rtol=1e-5, err_msg=key)
    assert float(full["num_tokens"]) == float(np.sum(batch["decoder_loss_weights"]))


def test_microbatches_must_divide_the_batch():
    model = model_lib.EncoderDecoderModel(network.Transformer(TRAINER_CONFIG))
    optimizer = trainer_lib.make_optimizer(trainer_lib.OptimizerConfig())
    with pytest.raises(ValueError, match="num_microbatches=3 must divide batch_size=4"):
        trainer_lib.Trainer(
            model,
            optimizer,
            partitioning.make_mesh(),
            partitioning.DATA_PARALLEL_RULES,
            TRAINER_SHAPES,
            num_microbatches=3,
        )


def test_nan_loss_stops_with_a_clear_message():
    trainer = make_trainer()
    batch = trainer_batch()
    batch["encoder_landmarks"][0, 0, 0] = np.nan
    with jax.set_mesh(trainer.mesh):
        state = trainer.init_state(jax.random.key(0))
        _, metrics = trainer.train_step(
            state, partitioning.global_batch(batch, trainer.batch_sharding), jax.random.key(1)
        )
    metrics = jax.device_get(metrics)
    assert not np.isfinite(metrics["loss"])
    with pytest.raises(train_monitor.NonFiniteLossError) as error:
        train_monitor.check_finite(7, metrics, 5, "/runs/x/checkpoints")
    message = str(error.value)
    assert "non-finite loss=nan, grad_norm=nan at step 7" in message
    assert "last good checkpoint is step 5 in /runs/x/checkpoints" in message
    assert "learning_rate" in message
    train_monitor.check_finite(1, {"loss": 1.0, "grad_norm": 2.0}, None, "/x")  # finite: no error


def _range_dataset(index, count, batch=2):
    ds = tf.data.Dataset.range(1000).shard(count, index).shuffle(64, seed=3)
    return ds.map(lambda x: {"x": x}).batch(batch)


def test_input_stream_resumes_exactly_and_is_independent_of_hosts():
    full = [b["x"] for b, _ in zip(input_state.InputStream(_range_dataset, [0, 1], 2), range(10))]
    resumed = input_state.InputStream(_range_dataset, [0, 1], 2, start_batch=4)
    for expected in full[4:]:
        np.testing.assert_array_equal(next(resumed)["x"], expected)
    assert resumed.state() == {"batches_consumed": 10, "num_input_shards": 2}
    # Two hosts reading one shard each feed the same global rows as one host reading both.
    host0 = input_state.InputStream(_range_dataset, [0], 2)
    host1 = input_state.InputStream(_range_dataset, [1], 2)
    for expected in full[:5]:
        np.testing.assert_array_equal(
            np.concatenate([next(host0)["x"], next(host1)["x"]]), expected
        )
    assert input_state.input_shard_ids(partitioning.HostShard(1, 2), 4) == [2, 3]
    with pytest.raises(ValueError, match="multiple of the 2 host data shards"):
        input_state.input_shard_ids(partitioning.HostShard(0, 2), 3)


class _CountingTask:
    """A small seqio Task whose preprocessor calls a tf.numpy_function that counts
    the examples it processes (as our landmark composition does)."""

    def __init__(self):
        self.calls = []

        def source(split, shuffle_files, seed=None):
            del split, shuffle_files, seed
            return tf.data.Dataset.range(400).map(lambda i: {"x": i})

        def square(x):
            self.calls.append(int(x))
            return x * x

        def preprocess(ds):
            return ds.map(
                lambda ex: {
                    "x": tf.ensure_shape(
                        tf.numpy_function(square, [ex["x"]], tf.int64, stateful=False), []
                    )
                }
            )

        self.task = seqio.Task(
            "counting_task",
            seqio.FunctionDataSource(source, splits=["train"]),
            output_features={
                "x": seqio.Feature(
                    seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.int64, rank=0
                )
            },
            preprocessors=[preprocess],
            shuffle_buffer_size=16,
        )

    def dataset(self, index, count, batch=4):
        return self.task.get_dataset(
            None,
            "train",
            shuffle=True,
            seed=5,
            num_epochs=None,
            shard_info=seqio.ShardInfo(index, count),
        ).batch(batch)


SPEC = {"mixture_or_task_name": "counting_task", "seed": 5, "batch_size": 8}


def test_input_state_restores_without_rerunning_the_pipeline(tmp_path, capsys):
    from slt import train

    counting = _CountingTask()
    uninterrupted = input_state.InputStream(counting.dataset, [0, 1], 2)
    expected = [next(uninterrupted)["x"] for _ in range(20)]

    k = 12
    first = input_state.InputStream(counting.dataset, [0, 1], 2)
    for batch in expected[:k]:
        np.testing.assert_array_equal(next(first)["x"], batch)
    store = input_state.InputStateStore(str(tmp_path), SPEC)
    assert store.save(k, first) > 0
    assert sorted(os.listdir(tmp_path / "input_state" / f"step_{k}")) == [
        "shard_0-of-2",
        "shard_1-of-2",
    ]  # complete states only, no temporary names
    with open(tmp_path / "input_state" / f"step_{k}" / "shard_1-of-2" / "input_state.json") as f:
        assert json.load(f) == {
            **SPEC,
            "num_input_shards": 2,
            "shard": 1,
            "step": k,
            "batches_consumed": k,
        }

    counting.calls.clear()
    restored = train._open_stream(counting.dataset, [0, 1], 2, k, k, store)
    assert "input: restored the iterator state of input shards [0, 1] of 2 at batch 12" in (
        capsys.readouterr().out
    )
    assert counting.calls == []  # nothing of the first k batches was computed again
    for batch in expected[k:]:
        np.testing.assert_array_equal(next(restored)["x"], batch)
    # 8 batches x 8 rows after the restore; the shuffle buffers and prefetched batches
    # were restored, not recomputed, so fewer calls than rows were needed.
    assert 0 < len(counting.calls) <= 8 * 8
    assert restored.state() == {"batches_consumed": 20, "num_input_shards": 2}

    counting.calls.clear()
    replayed = train._open_stream(counting.dataset, [0, 1], 2, k, k, None)
    out = capsys.readouterr().out
    assert (
        "input: replaying 12 batches of input shards [0, 1] of 2 (no iterator state "
        "restored: slt.InputConfig.save_state=False; with True"
    ) in out
    assert len(counting.calls) >= k * 8  # the replay composes every used example again
    np.testing.assert_array_equal(next(replayed)["x"], expected[k])


def test_input_state_mismatch_falls_back_to_replay(tmp_path, capsys):
    from slt import train

    counting = _CountingTask()
    expected = [b["x"] for b, _ in zip(input_state.InputStream(counting.dataset, [0], 2), range(6))]
    stream = input_state.InputStream(counting.dataset, [0], 2)
    for _ in range(4):
        next(stream)
    input_state.InputStateStore(str(tmp_path), SPEC).save(4, stream)

    other_batch = input_state.InputStateStore(str(tmp_path), {**SPEC, "batch_size": 16})
    assert other_batch.find(4, [0], 2, 4) == (
        None,
        f"the input state in {tmp_path}/input_state/step_4/shard_0-of-2 differs: "
        "batch_size: saved 8, now 16",
    )
    store = input_state.InputStateStore(str(tmp_path), SPEC)
    dirs, why = store.find(4, [0, 1, 2, 3], 4, 4)
    assert dirs is None and "no saved input state for shard 0 of 4" in why
    assert "step 4 has states for [2] input shards" in why
    assert store.find(4, [0], 2, 5)[0] is None  # another position
    assert store.find(4, [1], 2, 4)[0] is None  # that host's shard was not saved

    resumed = train._open_stream(counting.dataset, [0], 2, 4, 4, other_batch)
    out = capsys.readouterr().out
    assert "input: replaying 4 batches of input shards [0] of 2" in out
    assert "batch_size: saved 8, now 16" in out
    np.testing.assert_array_equal(next(resumed)["x"], expected[4])

    # A state that matches its JSON but cannot be read (a damaged file) also replays.
    shard_dir = tmp_path / "input_state" / "step_4" / "shard_0-of-2"
    for name in os.listdir(shard_dir):
        if name.startswith("iterator.data"):
            with open(shard_dir / name, "r+b") as f:
                f.truncate(100)
    resumed = train._open_stream(counting.dataset, [0], 2, 4, 4, store)
    out = capsys.readouterr().out
    assert f"(no iterator state restored: reading {shard_dir} failed: " in out
    np.testing.assert_array_equal(next(resumed)["x"], expected[4])


def _damage_data(shard_dir):  # bytes of the iterator's data flipped: DataLossError
    for name in os.listdir(shard_dir):
        if name.startswith("iterator.data"):
            data = bytearray((shard_dir / name).read_bytes())
            for i in range(200, min(len(data), 2000), 7):
                data[i] ^= 0xFF
            (shard_dir / name).write_bytes(bytes(data))


def _remove_index(shard_dir):  # NotFoundError
    os.remove(shard_dir / "iterator.index")


def _extra_object(shard_dir):  # assert_consumed's AssertionError: not this iterator's state
    for name in os.listdir(shard_dir):
        if name.startswith("iterator."):
            os.remove(shard_dir / name)
    checkpoint = tf.train.Checkpoint(other=tf.Variable(1))
    checkpoint.write(str(shard_dir / "iterator"))


@pytest.mark.parametrize("damage", [_damage_data, _remove_index, _extra_object])
def test_unusable_input_states_replay_the_same_batches(damage, tmp_path, capsys):
    from slt import train

    counting = _CountingTask()
    expected = [b["x"] for b, _ in zip(input_state.InputStream(counting.dataset, [0], 2), range(6))]
    stream = input_state.InputStream(counting.dataset, [0], 2)
    for _ in range(4):
        next(stream)
    store = input_state.InputStateStore(str(tmp_path), SPEC)
    store.save(4, stream)
    shard_dir = tmp_path / "input_state" / "step_4" / "shard_0-of-2"
    damage(shard_dir)
    resumed = train._open_stream(counting.dataset, [0], 2, 4, 4, store)
    out = capsys.readouterr().out
    assert f"(no iterator state restored: reading {shard_dir} failed: " in out, out
    assert "input: replayed 4 batches" in out
    for batch in expected[4:]:
        np.testing.assert_array_equal(next(resumed)["x"], batch)


def test_other_errors_while_restoring_an_input_state_propagate(tmp_path, capsys, monkeypatch):
    """Only errors that mean the saved state cannot be used fall back to replaying; a
    bug in reading it is raised, not hidden behind a slower resume."""
    from slt import storage, train

    counting = _CountingTask()
    stream = input_state.InputStream(counting.dataset, [0], 2)
    for _ in range(4):
        next(stream)
    store = input_state.InputStateStore(str(tmp_path), SPEC)
    store.save(4, stream)

    def broken(source, local_dir):
        raise KeyError("a bug")

    monkeypatch.setattr(storage, "download_dir", broken)
    with pytest.raises(KeyError, match="a bug"):
        train._open_stream(counting.dataset, [0], 2, 4, 4, store)
    assert "input: replaying" not in capsys.readouterr().out


def test_input_state_garbage_collection_and_unsaveable_pipelines(tmp_path, caplog):
    store = input_state.InputStateStore(str(tmp_path), SPEC)
    stream = input_state.InputStream(_range_dataset, [0], 1)
    for step in (2, 4, 6, 8):
        next(stream), next(stream)
        store.save(step, stream)
    os.makedirs(tmp_path / "input_state" / "step_9" / "shard_0-of-1.tmp-crashed")
    # Orbax keeps 4 and 8; a save of step 6 may still be finishing (`below`).
    assert store.collect_garbage([4, 8], below=6) == [2]
    assert store.collect_garbage([4, 8]) == [6, 9]
    assert sorted(os.listdir(tmp_path / "input_state")) == ["step_4", "step_8"]

    def generated(index, count):
        del index, count
        return (
            tf.data.Dataset.from_generator(
                lambda: iter(range(100)), output_signature=tf.TensorSpec([], tf.int64)
            )
            .map(lambda x: {"x": x})
            .batch(2)
        )

    stream = input_state.InputStream(generated, [0], 1)
    next(stream)
    assert store.save(10, stream) == 0
    assert "tf.data cannot save this pipeline's iterator" in caplog.text
    assert store.save_error
    assert not os.path.exists(tmp_path / "input_state" / "step_10" / "shard_0-of-1")


def test_host_shard_of_a_single_process():
    mesh = partitioning.make_mesh()
    sharding = partitioning.batch_sharding(mesh, partitioning.DATA_PARALLEL_RULES)
    assert partitioning.host_input_shard(sharding, 8) == (0, 1)
    assert partitioning.host_batch_rows(sharding, 8) == (0, 8)


def _save_steps(trainer, directory, steps, **kwargs):
    ckpt = checkpoints.Checkpointer(directory, **kwargs)
    with jax.set_mesh(trainer.mesh):
        state = trainer.init_state(jax.random.key(0))
        for step in steps:
            ckpt.save(step, state, {"step": step}, force=True)
            ckpt.wait()
    return ckpt


def test_restore_lists_every_mismatch(tmp_path):
    trainer = make_trainer()
    ckpt = _save_steps(trainer, str(tmp_path / "ckpt"), [1])
    target = checkpoints.abstract_with_shardings(trainer.abstract_state, trainer.state_sharding)
    params = dict(target.params)
    encoder = dict(params["encoder"])
    norm = encoder.pop("encoder_norm")  # missing from the model -> "not in the model"
    encoder["new_layer"] = norm  # -> "missing in checkpoint"
    embed = params["token_embedder"]["embedding"]
    params["token_embedder"] = {
        "embedding": jax.ShapeDtypeStruct(
            (embed.shape[0] + 1, embed.shape[1]), embed.dtype, sharding=embed.sharding
        )
    }
    params["encoder"] = encoder
    ckpt.close()
    fresh = checkpoints.Checkpointer(str(tmp_path / "ckpt"))  # as in a new process
    with jax.set_mesh(trainer.mesh):
        restored, _ = fresh.restore(1, target)  # the matching tree restores
        assert int(restored.step) == 0
        with pytest.raises(checkpoints.CheckpointMismatchError) as error:
            fresh.restore(1, target.replace(params=params))
    fresh.close()
    message = str(error.value)
    assert "(3 difference(s))" in message, message
    assert "missing in checkpoint: params/encoder/new_layer/scale" in message
    assert "not in the model: params/encoder/encoder_norm/scale" in message
    assert (
        f"shape differs: params/token_embedder/embedding: checkpoint {tuple(embed.shape)}"
        in message
    )


def test_unfinished_save_is_never_restored_and_retention(tmp_path):
    trainer = make_trainer()
    directory = str(tmp_path / "ckpt")
    ckpt = _save_steps(trainer, directory, [2, 4, 6, 8, 10], max_to_keep=2, keep_period=4)
    # The newest 2 plus every multiple of keep_period.
    assert sorted(int(d) for d in os.listdir(directory) if d.isdigit()) == [4, 8, 10]
    ckpt.close()
    # A save that crashed half way leaves only orbax's temporary directory.
    leftover = os.path.join(directory, "12.orbax-checkpoint-tmp-123")
    os.makedirs(os.path.join(leftover, "state"))
    reopened = checkpoints.Checkpointer(directory)
    assert reopened.latest_step() == 10
    # orbax removes leftovers in the background from start-up on; give it a moment.
    deadline = time.monotonic() + 30
    while os.path.exists(leftover) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(leftover)
    reopened.close()


def test_train_log_drops_steps_a_killed_run_never_saved(tmp_path):
    log = train_monitor.TrainLog(str(tmp_path), 10, 0, 4, log_period=5, tensorboard=False)
    lines = [log.write(step, {"loss": 1.0 / step, "num_tokens": 10}) for step in range(1, 8)]
    log.close()
    # The progress line of every `log_period` steps, for the job to print.
    assert [line is not None for line in lines] == [s == 5 for s in range(1, 8)]
    assert lines[4].startswith("step 5/10 loss 0.2000 ")
    resumed = train_monitor.TrainLog(str(tmp_path), 10, 5, 4, log_period=5, tensorboard=False)
    resumed.write(6, {"loss": 0.25, "num_tokens": 10})
    resumed.close()
    with open(tmp_path / "train" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[2]["loss"] == 1.0 / 3  # full float precision
    assert records[5]["loss"] == 0.25
