import jax
import numpy as np
import pytest
from helpers import make_trainer, trainer_batch

from slt.training import checkpoints, partitioning
from slt.training import trainer as trainer_lib


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_train_step_lowers_the_loss(name):
    trainer = make_trainer(name)
    with jax.set_mesh(trainer.mesh):
        state = trainer.init_state(jax.random.key(0))
        batch = partitioning.global_batch(trainer_batch(), trainer.batch_sharding)
        losses = []
        for _ in range(30):
            state, metrics = trainer.train_step(state, batch, jax.random.key(1))
            losses.append(float(metrics["loss"]))
    assert int(state.step) == 30
    assert losses[-1] < 0.5 * losses[0]
    assert np.isfinite(losses).all()


def test_schedules():
    def lr(**kw):
        return trainer_lib.learning_rate_schedule(trainer_lib.OptimizerConfig(**kw))

    cosine = lr(learning_rate=1.0, schedule="cosine", warmup_steps=10, decay_steps=110)
    np.testing.assert_allclose(
        [cosine(0), cosine(5), cosine(10), cosine(60), cosine(110)],
        [0.0, 0.5, 1.0, 0.5, 0.0],
        atol=1e-6,
    )
    rsqrt = lr(learning_rate=0.01, schedule="rsqrt", warmup_steps=100)
    np.testing.assert_allclose([rsqrt(1), rsqrt(100), rsqrt(400)], [0.01, 0.01, 0.005], rtol=1e-6)
    linear = lr(learning_rate=2.0, schedule="linear", decay_steps=4)
    np.testing.assert_allclose([linear(0), linear(2), linear(4)], [2.0, 1.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr(schedule="step")


def test_checkpoint_restore_equals_saved_state(tmp_path):
    trainer = make_trainer()
    with jax.set_mesh(trainer.mesh):
        state = trainer.init_state(jax.random.key(0))
        state, _ = trainer.train_step(
            state,
            partitioning.global_batch(trainer_batch(), trainer.batch_sharding),
            jax.random.key(1),
        )
        saved = jax.device_get(state)
        ckpt = checkpoints.Checkpointer(str(tmp_path / "ckpt"))
        ckpt.save(1, state, {"landmark_config": {"frame_step": 2}})
        ckpt.wait()
        assert ckpt.latest_step() == 1
        abstract = checkpoints.abstract_with_shardings(
            jax.eval_shape(trainer.init_state, jax.random.key(0)), trainer.state_sharding
        )
        restored, metadata = ckpt.restore(1, abstract)
        ckpt.close()
    assert metadata == {"landmark_config": {"frame_step": 2}}
    jax.tree.map(np.testing.assert_array_equal, saved, jax.device_get(restored))
    assert int(restored.step) == 1


def test_mesh_and_batch_size_errors():
    assert partitioning.make_mesh((-1,), ("data",)).shape == {"data": len(jax.devices())}
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        partitioning.make_mesh((-1, -1), ("data", "model"))


TWO_DEVICE_CHECK = """
import jax, pytest
from slt.training import partitioning
from slt.training import trainer as trainer_lib
from slt.models import model as model_lib, network
from helpers import TRAINER_CONFIG, TRAINER_SHAPES
mesh = partitioning.make_mesh((-1,), ("data",))
assert mesh.shape == {"data": 2}
sharding = partitioning.batch_sharding(mesh, partitioning.DATA_PARALLEL_RULES)
partitioning.check_batch_size(4, sharding)
with pytest.raises(ValueError, match="batch_size=3 does not split over 2 data shards"):
    partitioning.check_batch_size(3, sharding)
# Shard the MLP over `data`: Adam moments must follow their parameter; Adafactor's
# factored statistics (another shape) stay replicated.
rules = [("mlp", "data")] + [r for r in partitioning.DATA_PARALLEL_RULES if r[0] != "mlp"]
model = model_lib.EncoderDecoderModel(network.Transformer(TRAINER_CONFIG))
for name in ("adamw", "adafactor"):
    opt = trainer_lib.make_optimizer(trainer_lib.OptimizerConfig(name=name))
    tr = trainer_lib.Trainer(model, opt, mesh, rules, TRAINER_SHAPES, donate_state=False)
    wi = tr.params_sharding["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
    assert wi.spec == jax.sharding.PartitionSpec(None, "data"), wi.spec
    state = tr.state_sharding.opt_state[0]
    if name == "adamw":
        assert state.mu["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"] == wi
    else:
        assert state.v_row["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"].spec == \
            jax.sharding.PartitionSpec()
print("OK")
"""


def test_batch_split_and_optimizer_sharding_on_two_devices():
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    result = subprocess.run(
        [sys.executable, "-c", TWO_DEVICE_CHECK],
        env=env,
        cwd=here,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_optimizer_state_follows_parameter_sharding():
    trainer = make_trainer("adamw")
    leaves = jax.tree.leaves(trainer.state_sharding.opt_state)
    assert leaves and all(isinstance(s, jax.sharding.NamedSharding) for s in leaves)
    # Adam's first moment has the parameters' shardings leaf for leaf.
    mu = trainer.state_sharding.opt_state[0].mu
    assert jax.tree.structure(mu) == jax.tree.structure(trainer.params_sharding)


def test_decoder_input_dropout_replaces_only_real_tokens():
    tokens = np.array([[0, 5, 6, 7, 1, 0, 0, 0]] * 200, np.int32)
    dropped = np.asarray(trainer_lib.drop_decoder_inputs(tokens, jax.random.key(0), 0.5, 2))
    assert (dropped[:, 0] == 0).all() and (dropped[:, 5:] == 0).all()  # BOS, padding kept
    changed = dropped[:, 1:5] != tokens[:, 1:5]
    assert (dropped[:, 1:5][changed] == 2).all()
    assert 0.4 < changed.mean() < 0.6
    same = np.asarray(trainer_lib.drop_decoder_inputs(tokens, jax.random.key(0), 0.0, 2))
    np.testing.assert_array_equal(same, tokens)
