r"""Train-step time on a fake 8-device CPU mesh against 1 device, same model and batch.

  python bench/step_time.py [--steps 20] [--batch 32] [--layout data_parallel]

Each measurement runs in its own process (the device count is fixed when JAX
starts) and builds its step with `slt.train.build_training`, the function
`python -m slt.train` builds its step with (and with its XLA flags). The model is the
demo's shape (d 128, 3+2 layers, Adafactor) with random inputs of the demo's lengths;
donation is off on 8 devices (with 4 or more CPU devices it can deadlock XLA:CPU's
all-reduce; docs/architecture.md, "JAX on CPU"). Prints one JSON line per measurement and
a final JSON line with the ratio (8-device s/step over 1-device s/step). On a CPU the
8 "devices" share the same cores, so this measures the cost of partitioning and
collectives, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

MEASURE = r"""
import json, statistics, sys, time
from slt.training import partitioning
from slt import train as train_lib  # before JAX starts: the job's XLA flags
import jax, numpy as np
from slt.models import network
steps, batch_size, layout = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
mesh_shape = json.loads(sys.argv[4])
setup = train_lib.build_training(
    task_feature_lengths={"landmarks": 160, "inputs": 24, "targets": 24},
    batch_size=batch_size,
    network_config=network.T5Config(vocab_size=384, emb_dim=128, num_heads=4, head_dim=32,
                                    num_encoder_layers=3, num_decoder_layers=2,
                                    mlp_dim=256, landmark_stride=2),
    partitioning_config=partitioning.PartitioningConfig(
        mesh_shape=mesh_shape, logical_axis_rules=partitioning.RULE_SETS[layout],
        donate_state=len(jax.devices()) == 1))
tr = setup.trainer
rng = np.random.default_rng(0)
targets = rng.integers(3, 300, (batch_size, 24)).astype(np.int32)
batch = {"encoder_input_tokens": rng.integers(3, 300, (batch_size, 24)).astype(np.int32),
         "encoder_landmarks": rng.standard_normal(setup.batch_shapes["encoder_landmarks"]),
         "encoder_landmark_mask": np.ones((batch_size, 160), np.int32),
         "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
         "decoder_target_tokens": targets, "decoder_loss_weights": np.ones_like(targets)}
batch["encoder_landmarks"] = batch["encoder_landmarks"].astype(np.float32)
with jax.set_mesh(setup.mesh):
    state = tr.init_state(jax.random.key(0))
    gb = partitioning.global_batch(batch, tr.batch_sharding)
    t0 = time.perf_counter()
    state, m = tr.train_step(state, gb, jax.random.key(1)); jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = tr.train_step(state, gb, jax.random.key(1)); jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
print(json.dumps({"devices": len(jax.devices()), "mesh": dict(setup.mesh.shape),
                  "layout": layout, "batch": batch_size, "first_step_s": round(compile_s, 3),
                  "median_step_s": round(statistics.median(times), 4)}))
"""


def measure(devices: int, steps: int, batch: int, layout: str, mesh_shape: list[int]) -> dict:
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="2",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(steps), str(batch), layout, json.dumps(mesh_shape)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--layout",
        default="data_parallel",
        choices=["data_parallel", "fsdp", "tensor_parallel", "fsdp_tensor_parallel"],
    )
    args = parser.parse_args()
    shape8 = {
        "data_parallel": [8, 1, 1],
        "fsdp": [1, 8, 1],
        "tensor_parallel": [2, 1, 4],
        "fsdp_tensor_parallel": [1, 2, 4],
    }[args.layout]
    one = measure(1, args.steps, args.batch, args.layout, [1, 1, 1])
    eight = measure(8, args.steps, args.batch, args.layout, shape8)
    print(
        json.dumps(
            {
                "bench": "step_time",
                "layout": args.layout,
                "batch": args.batch,
                "one_device_s_per_step": one["median_step_s"],
                "eight_device_s_per_step": eight["median_step_s"],
                "eight_over_one": round(eight["median_step_s"] / one["median_step_s"], 3),
                "cpu_cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
