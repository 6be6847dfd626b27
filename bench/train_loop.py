"""Does the train loop keep the device busy? Its steps/s against the bare step.

Measures, in one run on this machine, for the demo model (models/tiny.gin) at the
demo's batch and lengths:
  - back to back: the jitted train step called on batches already on the device, with
    nothing between the calls (the fastest the step can go);
  - the loop: `slt.train._train_loop`, the function `python -m slt.train` runs, reading
    its batches from prepared shards (`slt.prepare` output of the demo task's clips,
    whose pipeline is ~25x faster than this step: bench/RESULTS.md, "Input pipeline")
    through the job's own input stream (`slt.train._open_input`), logging every step's
    metrics to metrics.jsonl and a progress line every 10 steps.
The two alternate `--rounds` times; the medians make the ratio loop / back to back
(1.0: the loop costs nothing) and the host's extra milliseconds per step.

  nice -n 5 python bench/train_loop.py [--steps 20] [--rounds 2] [--clips 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax  # noqa: E402
import seqio  # noqa: E402
from input_pipeline import BATCH, CONFIG, LENGTHS, prepare_clips  # noqa: E402

from slt import train as train_job  # noqa: E402
from slt.data import features, landmarks  # noqa: E402
from slt.models import model as model_lib  # noqa: E402
from slt.models import network  # noqa: E402
from slt.tasks import prepared  # noqa: E402
from slt.training import checkpoints, input_state, partitioning, train_monitor  # noqa: E402
from slt.training import trainer as trainer_lib  # noqa: E402

TASK = "bench_train_loop_slt_ase_en"


def make_trainer() -> trainer_lib.Trainer:
    converter = features.LandmarkEncDecFeatureConverter()
    shapes = {k: (BATCH, n) for k, n in converter.get_model_feature_lengths(LENGTHS).items()}
    shapes["encoder_landmarks"] += (landmarks.FRAME_DIM,)
    return trainer_lib.Trainer(
        model_lib.EncoderDecoderModel(network.Transformer(CONFIG)),
        trainer_lib.make_optimizer(trainer_lib.OptimizerConfig()),
        partitioning.make_mesh(),
        partitioning.DATA_PARALLEL_RULES,
        shapes,
    )


def back_to_back(trainer, state, batches, steps: int):
    rng = jax.random.key(1)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = trainer.train_step(state, batches[i % len(batches)], rng)
    jax.block_until_ready((state, metrics))
    return state, time.perf_counter() - start


class Loop:
    """The job's loop over the job's input stream, continued round after round."""

    def __init__(self, trainer, model_dir: str):
        self.trainer, self.model_dir = trainer, model_dir
        self.stream, _ = train_job._open_input(
            model_dir=model_dir,
            mixture_or_task_name=TASK,
            task_feature_lengths=LENGTHS,
            batch_size=BATCH,
            seed=0,
            input_config=input_state.InputConfig(),
            batch_sharding=trainer.batch_sharding,
            step=0,
            position=None,
        )
        self.checkpointer = checkpoints.Checkpointer(os.path.join(model_dir, "checkpoints"))
        self.saver = train_job._Saver(self.checkpointer, {}, self.stream, None)

    def run(self, state, steps: int):
        start_step = int(state.step)
        jax.block_until_ready(state)
        started = time.perf_counter()
        with (
            train_monitor.TrainLog(
                self.model_dir, start_step + steps, start_step, BATCH, 10, tensorboard=False
            ) as log,
            train_monitor.PreemptionWatcher() as watcher,
            train_monitor.StepWatchdog(0) as watchdog,
        ):
            state, _ = train_job._train_loop(
                state,
                self.trainer,
                self.stream,
                self.saver,
                log,
                watcher,
                watchdog,
                train_step=self.trainer.train_step,
                seed=0,
                train_steps=start_step + steps,
                checkpoint_period=10**9,
                eval_period=0,
                periodic_eval=lambda step, params: {},
            )
        jax.block_until_ready(state)
        return state, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clips", type=int, default=256, help="clips in the prepared shards")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prepared.register_prepared_task(
            TASK, prepare_clips(tmp, args.clips), shuffle_buffer_size=args.clips
        )
        trainer = make_trainer()
        with jax.set_mesh(trainer.mesh):
            loop = Loop(trainer, os.path.join(tmp, "run"))
            state = trainer.init_state(jax.random.key(0))
            # Warm up: compile, fill the shuffle buffer, and keep batches on the device
            # for the back-to-back runs.
            state, _ = loop.run(state, 3)
            batches = [
                partitioning.global_batch(next(loop.stream), trainer.batch_sharding)
                for _ in range(4)
            ]
            loop_s, bare_s = [], []
            for r in range(args.rounds):
                state, seconds = back_to_back(trainer, state, batches, args.steps)
                bare_s.append(seconds / args.steps)
                state, seconds = loop.run(state, args.steps)
                loop_s.append(seconds / args.steps)
                print(
                    json.dumps(
                        {
                            "round": r,
                            "back_to_back_s_per_step": round(bare_s[-1], 4),
                            "loop_s_per_step": round(loop_s[-1], 4),
                        }
                    ),
                    flush=True,
                )
            loop.checkpointer.close()
    loop_step, bare_step = statistics.median(loop_s), statistics.median(bare_s)
    print(
        json.dumps(
            {
                "model": "models/tiny.gin",
                "batch": BATCH,
                "lengths": LENGTHS,
                "steps_per_round": args.steps,
                "rounds": args.rounds,
                "back_to_back_steps_per_s": round(1 / bare_step, 3),
                "loop_steps_per_s": round(1 / loop_step, 3),
                "ratio_loop_over_back_to_back": round(bare_step / loop_step, 3),
                "host_ms_per_step": round((loop_step - bare_step) * 1e3, 1),
            }
        )
    )


if __name__ == "__main__":
    seqio.add_global_cache_dirs([])  # no cache lookups: the task is new
    main()
