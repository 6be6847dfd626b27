"""Does the input pipeline keep up with training? (demo task, demo model)

Measures, in one run on this machine:
  - the seqio pipeline alone: composed fingerspelling clips -> converter -> batches/s;
  - the jitted train step alone, on one fixed batch: steps/s.
Prints a final JSON line with both rates and their ratio: above 1 means the pipeline
produces batches faster than the step consumes them (when run alone, without
sharing cores; in training they share the machine).

  python bench/input_pipeline.py [--batches 30] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import time

from slt import gin_utils

gin_utils.quiet_tensorflow()
gin_utils.add_cpu_xla_flags()

import jax  # noqa: E402
import seqio  # noqa: E402

import tasks  # noqa: E402, F401
from slt import features, landmarks, partitioning  # noqa: E402
from slt import trainer as trainer_lib  # noqa: E402
from slt.models import model as model_lib  # noqa: E402
from slt.models import network  # noqa: E402

TASK = "fingerspelling_slt_ase_en"
LENGTHS = {"landmarks": 160, "inputs": 24, "targets": 24}
BATCH = 32
# gin/models/tiny.gin
CONFIG = network.T5Config(emb_dim=128, num_heads=4, head_dim=32, num_encoder_layers=3,
                          num_decoder_layers=2, mlp_dim=256, landmark_stride=2)


def pipeline_rate(num_batches: int) -> float:
    ds = seqio.get_dataset(TASK, LENGTHS, dataset_split="train", shuffle=True, seed=0,
                           num_epochs=None, batch_size=BATCH,
                           feature_converter=features.LandmarkEncDecFeatureConverter())
    it = ds.as_numpy_iterator()
    for _ in range(3):  # fill the shuffle buffer and compute statistics first
        next(it)
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(it)
    del batch
    return num_batches / (time.perf_counter() - start)


def step_rate(num_steps: int) -> float:
    converter = features.LandmarkEncDecFeatureConverter()
    shapes = {k: (BATCH, n) for k, n in converter.get_model_feature_lengths(LENGTHS).items()}
    shapes["encoder_landmarks"] += (landmarks.FRAME_DIM,)
    mesh = partitioning.make_mesh()
    model = model_lib.EncoderDecoderModel(network.Transformer(CONFIG))
    trainer = trainer_lib.Trainer(model, trainer_lib.make_optimizer(
        trainer_lib.OptimizerConfig(name="adamw")), mesh, partitioning.DATA_PARALLEL_RULES, shapes)
    ds = seqio.get_dataset(TASK, LENGTHS, dataset_split="train", shuffle=False, batch_size=BATCH,
                           feature_converter=converter)
    batch = next(ds.as_numpy_iterator())
    with jax.set_mesh(mesh):
        state = trainer.init_state(jax.random.key(0))
        batch = partitioning.global_batch(batch, trainer.batch_sharding)
        state, metrics = trainer.train_step(state, batch, jax.random.key(1))
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(num_steps):
            state, metrics = trainer.train_step(state, batch, jax.random.key(1))
        jax.block_until_ready(metrics)
    return num_steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    pipeline = pipeline_rate(args.batches)
    steps = step_rate(args.steps)
    print(json.dumps({"bench": "input_pipeline", "batch_size": BATCH,
                      "pipeline_batches_per_s": round(pipeline, 3),
                      "train_steps_per_s": round(steps, 3),
                      "ratio_pipeline_over_step": round(pipeline / steps, 3)}))


if __name__ == "__main__":
    main()
