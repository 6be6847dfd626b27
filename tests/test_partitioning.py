"""Mesh layouts and rule sets on a fake 8-device CPU mesh give the same numbers.

The checks run in a subprocess started with XLA_FLAGS=--xla_force_host_platform_device_count=8
(the flag must be set before JAX starts). Donation is off there: with 4 or more fake
CPU devices, donating the state while several steps are queued can deadlock XLA:CPU's
all-reduce rendezvous (docs/architecture.md, "JAX on CPU").
"""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import pytest
from jax.sharding import PartitionSpec as P

from slt.training import partitioning

HERE = os.path.dirname(os.path.abspath(__file__))

EIGHT_DEVICE_CHECK = r"""
import faulthandler
faulthandler.dump_traceback_later(500, exit=True)  # a hang shows where, then fails
import dataclasses, sys, jax, numpy as np
from jax.sharding import PartitionSpec as P
from slt.training import partitioning
from slt.training import trainer as trainer_lib
from slt.models import model as model_lib, network
from helpers import tiny_t5_config, trainer_batch

assert len(jax.devices()) == 8
# Every split dimension divides 8: heads 8, joined_kv 32, embed 32, mlp 64, vocab 384.
CONFIG = tiny_t5_config(vocab_size=384, num_heads=8, head_dim=4, landmark_stride=2)
B = 8
SHAPES = {"encoder_input_tokens": (B, 6), "encoder_landmarks": (B, 10, 255),
          "encoder_landmark_mask": (B, 10), "decoder_input_tokens": (B, 7),
          "decoder_target_tokens": (B, 7), "decoder_loss_weights": (B, 7)}
halves = trainer_batch(0), trainer_batch(1)
batch = {k: np.concatenate([h[k] for h in halves]) for k in halves[0]}
model = model_lib.EncoderDecoderModel(network.Transformer(CONFIG))
# Factor every matrix with both dims >= 16, so Adafactor's v_row / v_col exist.
opt = trainer_lib.make_optimizer(trainer_lib.OptimizerConfig(
    name="adafactor", learning_rate=1e-2, min_dim_size_to_factor=16))

def run(mesh_shape, rules, devices=None, steps=0, explicit=True):
    mesh = partitioning.make_mesh(mesh_shape, devices=devices)
    tr = trainer_lib.Trainer(model, opt, mesh, rules, SHAPES, donate_state=False,
                             explicit_fsdp_collectives=explicit)
    with jax.set_mesh(mesh):
        state = tr.init_state(jax.random.key(0))
        gb = partitioning.global_batch(batch, tr.batch_sharding)
        grads, metrics = tr.compute_grads(state.params, gb, None)
        for _ in range(steps):
            state, _ = tr.train_step(state, gb, jax.random.key(1))
            jax.block_until_ready(state)
    return tr, float(metrics["loss"]), jax.device_get(grads), jax.device_get(state)

def close(a, b, name):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6,
                                                         err_msg=name), a, b)

STEPS = int(sys.argv[1])
_, ref_loss, ref_grads, ref_state = run((1, 1, 1), partitioning.DATA_PARALLEL_RULES,
                                        jax.devices()[:1], STEPS)
layouts = {  # (data, fsdp, model)
    "8x1 data parallel": ((8, 1, 1), partitioning.DATA_PARALLEL_RULES),
    "1x8 tensor parallel": ((1, 1, 8), partitioning.TENSOR_PARALLEL_RULES),
    "2x4 fsdp x tensor parallel (2-D)": ((1, 2, 4), partitioning.FSDP_TENSOR_PARALLEL_RULES),
    # FSDP within each data-parallel group: gradients reduce-scattered over `fsdp` and
    # summed over `data` (slt.models.fsdp), in float32.
    "2x4 data x fsdp": ((2, 4, 1), partitioning.FSDP_RULES),
}
if STEPS:
    layouts.update({
        "2x4 data x tensor parallel": ((2, 1, 4), partitioning.TENSOR_PARALLEL_RULES),
        "8 fsdp": ((1, 8, 1), partitioning.FSDP_RULES)})
for name, (shape, rules) in layouts.items():
    tr, loss, grads, state = run(shape, rules, steps=STEPS)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, err_msg=name)
    close(grads, ref_grads, name)
    if STEPS:  # Adafactor updates with sharded (factored) statistics agree too
        close(state, ref_state, name)
    # The layout really is sharded as the rules say.
    mlp = tr.params_sharding["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"].spec
    v_row = tr.state_sharding.opt_state[0].v_row["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
    print(name, "loss", loss, "mlp kernel", mlp, "v_row", v_row.spec)
    if "2-D" in name:
        assert mlp == P("fsdp", "model"), mlp
        # wi_0 is [embed 32, mlp 64]: v_row drops the largest dim (mlp), keeping fsdp.
        assert v_row.spec == P("fsdp"), v_row.spec
        assert tr.batch_sharding.spec == P(("data", "fsdp")), tr.batch_sharding.spec
    if name.startswith("1x8"):
        assert mlp == P(None, "model")
    if "fsdp" in name:
        # Dense kernels are gathered by slt.models.fsdp: the gradients are
        # reduce-scattered; XLA's own partitioning all-reduces them instead.
        with jax.set_mesh(tr.mesh):
            gb = partitioning.global_batch(batch, tr.batch_sharding)
            text = tr.compute_grads.lower(tr.abstract_state.params, gb, None).as_text("hlo")
        assert "reduce-scatter(" in text, name
        _, xla_loss, xla_grads, _ = run(shape, rules, explicit=False)
        np.testing.assert_allclose(xla_loss, loss, rtol=1e-6, err_msg=name)
        close(xla_grads, grads, name + " (XLA's collectives)")

# 5 heads do not divide the model axis: every offending parameter is listed.
bad = model_lib.EncoderDecoderModel(network.Transformer(
    dataclasses.replace(CONFIG, num_heads=5)))
try:
    trainer_lib.Trainer(bad, opt, partitioning.make_mesh((1, 1, 8)),
                        partitioning.TENSOR_PARALLEL_RULES, SHAPES)
except ValueError as e:
    message = str(e)
    assert "cannot be split over mesh" in message and "query" in message \
        and "relpos" in message and "slt.PartitioningConfig.mesh_shape" in message, message
else:
    raise AssertionError("5 heads over 8 model shards did not fail")
print("reference loss", ref_loss)
print("OK")
"""


def _run_with_devices(script: str, devices: int, *args: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_mesh_layouts_give_equal_loss_and_gradients():
    result = _run_with_devices(EIGHT_DEVICE_CHECK, 8, "0")
    assert result.returncode == 0 and "OK" in result.stdout, (
        result.stdout[-2000:] + result.stderr[-4000:]
    )


@pytest.mark.slow
def test_all_layouts_give_equal_adafactor_updates():
    result = _run_with_devices(EIGHT_DEVICE_CHECK, 8, "2")
    assert result.returncode == 0 and "OK" in result.stdout, (
        result.stdout[-2000:] + result.stderr[-4000:]
    )


def test_rule_sets_map_t5x_axes():
    mesh = partitioning.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    axes = {
        "kernel": P("embed", "mlp"),
        "query": P("embed", "joined_kv"),
        "embedding": P("vocab", "embed"),
        "relpos": P("heads", "relpos_buckets"),
    }

    def specs(rules):
        return {k: v.spec for k, v in partitioning.param_shardings(axes, mesh, rules).items()}

    assert set(specs(partitioning.DATA_PARALLEL_RULES).values()) == {P(None, None)}
    assert specs(partitioning.FSDP_RULES)["kernel"] == P("fsdp", None)
    tp = specs(partitioning.TENSOR_PARALLEL_RULES)
    assert tp == {
        "kernel": P(None, "model"),
        "query": P(None, "model"),
        "embedding": P("model", None),
        "relpos": P("model", None),
    }
    fsdp_tp = specs(partitioning.FSDP_TENSOR_PARALLEL_RULES)
    assert fsdp_tp["kernel"] == P("fsdp", "model")
    assert fsdp_tp["embedding"] == P("model", "fsdp")
    # Activations: `batch` holds fsdp, so `embed` falls back to `model` (not replicated).
    rules = partitioning.restrict_rules(partitioning.FSDP_TENSOR_PARALLEL_RULES, mesh)
    activation = nn.logical_to_mesh_axes(("batch", "length", "embed"), rules)
    assert activation == P(("data", "fsdp"), None, "model")
    fsdp_only = partitioning.restrict_rules(partitioning.FSDP_RULES, mesh)
    assert nn.logical_to_mesh_axes(("batch", "length", "embed"), fsdp_only)[2] is None
    # The batch goes over data and fsdp; on an old 1-axis mesh only over data.
    assert partitioning.batch_sharding(mesh, partitioning.FSDP_RULES).spec == P(("data", "fsdp"))
    old = partitioning.make_mesh((-1,), ("data",), devices=jax.devices()[:1])
    assert partitioning.batch_sharding(old, partitioning.FSDP_RULES).spec == P("data")


def test_mesh_shape_errors_and_minus_one():
    devices = jax.devices()[:1]
    assert partitioning.make_mesh((-1, 1, 1), devices=devices).shape == {
        "data": 1,
        "fsdp": 1,
        "model": 1,
    }
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        partitioning.make_mesh((-1, -1, 1), devices=devices)
    with pytest.raises(ValueError, match="needs 2 devices, there are 1"):
        partitioning.make_mesh((2, 1, 1), devices=devices)
    # DCN: one process is one granule, so the DCN shape must be all ones here.
    mesh = partitioning.make_mesh((-1, 1, 1), dcn_mesh_shape=(1, 1, 1), devices=devices)
    assert mesh.shape == {"data": 1, "fsdp": 1, "model": 1}


@pytest.mark.parametrize(
    "name,rules,mesh_shape",
    [
        ("data_parallel", partitioning.DATA_PARALLEL_RULES, (-1, 1, 1)),
        ("fsdp", partitioning.FSDP_RULES, (1, -1, 1)),
        ("tensor_parallel", partitioning.TENSOR_PARALLEL_RULES, (-1, 1, 2)),
        ("fsdp_tensor_parallel", partitioning.FSDP_TENSOR_PARALLEL_RULES, (1, -1, 2)),
    ],
)
def test_each_strategy_is_one_gin_file(name, rules, mesh_shape):
    import gin

    from slt import gin_utils, train

    gin.clear_config()
    gin_utils.parse_gin_args([f"--gin_file=partitioning/{name}.gin"], train.train)
    try:
        # The file's bindings reach the config `train` gets.
        config = gin.query_parameter("train.partitioning_config").scoped_configurable_fn()
        assert tuple(config.logical_axis_rules) == tuple(rules)
        assert tuple(config.mesh_shape) == mesh_shape
    finally:
        gin.clear_config()
