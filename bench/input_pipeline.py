"""Does the input pipeline keep up with training? (demo task, demo model)

Measures, in one run on this machine:
  - the seqio pipeline of the demo task alone: fingerspelling clips composed on the
    fly -> tokens -> converter -> batches/s;
  - the seqio pipeline over prepared shards alone: the same kind of clips, composed
    once and written by `slt.prepare` into a temporary directory (what a user with
    their own data trains from) -> the same tokens, converter and batches/s;
  - the jitted train step alone, on one fixed batch: steps/s, for the demo's tiny model
    (models/tiny.gin) and for the T5-small-shaped reference of the model benches
    (d_model 512, 6+6 layers, d_ff 1024; the smallest model a real run would train),
    at the same batch and lengths.
Prints a final JSON line with the rates and the ratios pipeline / step: above 1
means the pipeline produces batches faster than the step consumes them (when run
alone, without sharing cores; in training they share the machine).

  python bench/input_pipeline.py [--batches 30] [--steps 20] [--reference_steps 3]
                                 [--prepared_clips 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from slt import gin_utils

gin_utils.quiet_tensorflow()
gin_utils.add_cpu_xla_flags()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import seqio  # noqa: E402

from slt import (
    prepare,  # noqa: E402
    tasks,  # noqa: E402, F401
)
from slt.data import (
    features,  # noqa: E402
    landmarks,  # noqa: E402
)
from slt.io import clips  # noqa: E402
from slt.models import model as model_lib  # noqa: E402
from slt.models import network  # noqa: E402
from slt.tasks import prepared  # noqa: E402
from slt.tasks.fingerspelling import corpus as fingerspelling  # noqa: E402
from slt.tasks.fingerspelling import tasks as fingerspelling_tasks  # noqa: E402
from slt.training import partitioning  # noqa: E402
from slt.training import trainer as trainer_lib  # noqa: E402

TASK = "fingerspelling_slt_ase_en"
PREPARED_TASK = "bench_prepared_slt_ase_en"
LENGTHS = {"landmarks": 160, "inputs": 24, "targets": 24}
BATCH = 32
# models/tiny.gin
CONFIG = network.T5Config(
    emb_dim=128,
    num_heads=4,
    head_dim=32,
    num_encoder_layers=3,
    num_decoder_layers=2,
    mlp_dim=256,
    landmark_stride=2,
)
# bench/train_step.py's and bench/decode.py's T5-small-shaped reference.
REFERENCE_CONFIG = network.T5Config(
    emb_dim=512, num_heads=8, head_dim=64, num_encoder_layers=6, num_decoder_layers=6, mlp_dim=1024
)


def pipeline_rate(task: str, num_batches: int) -> float:
    ds = seqio.get_dataset(
        task,
        LENGTHS,
        dataset_split="train",
        shuffle=True,
        seed=0,
        num_epochs=None,
        batch_size=BATCH,
        feature_converter=features.LandmarkEncDecFeatureConverter(),
    )
    it = ds.prefetch(
        2
    ).as_numpy_iterator()  # as training reads it (slt.training.input_state.InputStream)
    for _ in range(3):  # fill the shuffle buffer and compute statistics first
        next(it)
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(it)
    del batch
    return num_batches / (time.perf_counter() - start)


def prepare_clips(out_dir: str, num_clips: int) -> str:
    """Composes training clips of the demo task (variant 0, 1, ...), saves them as
    85-point .npz landmark files and runs `slt.prepare` on them; returns its output.

    The frames are the ones the on-the-fly task yields for the same word and variant.
    """
    config = fingerspelling_tasks.standardized_config()
    lexicon = fingerspelling.load_lexicon("ase")
    words = fingerspelling.word_splits("ase")[0]["train"]
    rows = []
    for i in range(num_clips):
        word, variant = words[i % len(words)], i // len(words)
        rng = fingerspelling._variant_rng("ase", word, variant, fingerspelling_tasks.CORPUS_SEED)
        points, present = fingerspelling.compose_clip(lexicon, lexicon.spell(word), rng)
        path = os.path.join(out_dir, f"clip{i:05d}.npz")
        np.savez(path, data=points, conf=present.astype(np.float32), fps=fingerspelling.BASE_FPS)
        rows.append({"path": path, "text": word, "sign_language": "ase", "spoken_language": "en"})
    manifest = os.path.join(out_dir, "manifest.jsonl")
    with open(manifest, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    data_dir = os.path.join(out_dir, "prepared")
    result = prepare.prepare(
        manifest,
        data_dir,
        clips.PrepareOptions(config=config),
        examples_per_shard=256,
        num_workers=1,
        progress=False,
    )
    if result.num_written != num_clips:
        raise RuntimeError(f"slt.prepare wrote {result.num_written} of {num_clips} clips.")
    return data_dir


def step_rate(config: network.T5Config, num_steps: int) -> float:
    converter = features.LandmarkEncDecFeatureConverter()
    shapes = {k: (BATCH, n) for k, n in converter.get_model_feature_lengths(LENGTHS).items()}
    shapes["encoder_landmarks"] += (landmarks.FRAME_DIM,)
    mesh = partitioning.make_mesh()
    model = model_lib.EncoderDecoderModel(network.Transformer(config))
    trainer = trainer_lib.Trainer(
        model,
        trainer_lib.make_optimizer(trainer_lib.OptimizerConfig(name="adamw")),
        mesh,
        partitioning.DATA_PARALLEL_RULES,
        shapes,
    )
    ds = seqio.get_dataset(
        TASK,
        LENGTHS,
        dataset_split="train",
        shuffle=False,
        batch_size=BATCH,
        feature_converter=converter,
    )
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
    parser.add_argument(
        "--reference_steps",
        type=int,
        default=3,
        help="timed steps of the T5-small-shaped reference (0: skip it)",
    )
    parser.add_argument("--prepared_clips", type=int, default=1024)
    args = parser.parse_args()
    load_before = os.getloadavg()
    on_the_fly = pipeline_rate(TASK, args.batches)
    with tempfile.TemporaryDirectory() as tmp:
        prepared.register_prepared_task(
            PREPARED_TASK, prepare_clips(tmp, args.prepared_clips), shuffle_buffer_size=2048
        )  # as the demo task
        from_shards = pipeline_rate(PREPARED_TASK, args.batches * 3)
    steps = step_rate(CONFIG, args.steps)
    print(
        f"on-the-fly composition: {on_the_fly:.1f} batches/s; prepared shards: "
        f"{from_shards:.1f} batches/s; demo train step: {steps:.2f} steps/s (batch {BATCH})",
        flush=True,
    )
    result = {
        "bench": "input_pipeline",
        "batch_size": BATCH,
        "pipeline_batches_per_s": round(on_the_fly, 3),
        "prepared_batches_per_s": round(from_shards, 3),
        "train_steps_per_s": round(steps, 3),
        "ratio_pipeline_over_step": round(on_the_fly / steps, 3),
        "ratio_prepared_over_step": round(from_shards / steps, 3),
    }
    if args.reference_steps > 0:
        reference = step_rate(REFERENCE_CONFIG, args.reference_steps)
        print(f"T5-small-shaped train step: {reference:.3f} steps/s", flush=True)
        result.update(
            {
                "reference_train_steps_per_s": round(reference, 4),
                "ratio_pipeline_over_reference_step": round(on_the_fly / reference, 1),
                "ratio_prepared_over_reference_step": round(from_shards / reference, 1),
            }
        )
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
