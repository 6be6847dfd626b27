r"""Evaluate a checkpoint on every eval task of a mixture, or on one task.

  python -m slt.eval --gin_file=gin/runs/eval.gin --gin.CHECKPOINT=\"runs/demo\"

CHECKPOINT is a MODEL_DIR of slt.train, its checkpoints/ directory or one step in it.
The network and the preprocessing come from the checkpoint's metadata. Writes to
`evaluate.output_dir` (default CHECKPOINT/eval_<step>_<split>): metrics.json (BLEU,
chrF, language accuracy, empty rate, BLEURT with a BLEURT checkpoint; signatures),
<task>.<split>.predictions.jsonl, metrics.md, metrics.png and TensorBoard events.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from slt import gin_utils

gin_utils.quiet_tensorflow()
gin_utils.add_cpu_xla_flags(decoding=True)

import jax  # noqa: E402
import seqio  # noqa: E402

import gin  # noqa: E402
import tasks  # noqa: E402,F401  (registers the tasks)
from slt import evaluation, inference, partitioning  # noqa: E402


@gin.configurable(denylist=[])
def evaluate(
    *,
    checkpoint: str = gin.REQUIRED,
    mixture_or_task_name: str | None = None,
    prepared_data_dir: str | None = None,
    split: str = "test",
    batch_size: int = 64,
    output_dir: str | None = None,
    bleurt_checkpoint: str | None = None,
    decode_options: Mapping[str, Any] | None = None,
    mesh_shape: Sequence[int] = (-1,),
    mesh_axis_names: Sequence[str] = ("data",),
    logical_axis_rules: partitioning.LogicalRules = partitioning.DATA_PARALLEL_RULES,
    show_progress: bool = True,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics per task (as written to metrics.json).

    `mixture_or_task_name` defaults to the one the checkpoint was trained on; a mixture
    means each of its tasks; `prepared_data_dir` (a `slt.prepare` output) evaluates that
    dataset instead, as task `prepared_<dir name>`. `decode_options` go to
    `predict_batch` as keywords. Several processes (`coordinator_address`/
    `num_processes`/`process_id`, or the SLT_* environment variables as for
    `slt.train`) each read their shard of the split; process 0 writes the outputs.
    """
    partitioning.initialize_distributed(coordinator_address, num_processes, process_id)
    restored = inference.restore(checkpoint, mesh_shape, mesh_axis_names, logical_axis_rules)
    if prepared_data_dir:
        task_names = [inference.register_prepared(prepared_data_dir, restored)]
    else:
        name = mixture_or_task_name or restored.mixture_or_task_name
        task_names = [t.name for t in seqio.get_subtasks(seqio.get_mixture_or_task(name))]
    evaluation.check_splits(task_names, split)
    output_dir = output_dir or os.path.join(
        os.path.dirname(restored.checkpoint_dir)
        if os.path.basename(restored.checkpoint_dir) == "checkpoints"
        else restored.checkpoint_dir,
        f"eval_{restored.step}_{split}",
    )
    partitioning.check_batch_size(batch_size, restored.batch_sharding)
    if not bleurt_checkpoint:
        print(
            "BLEURT: not computed, no BLEURT checkpoint given "
            '(--gin.evaluate.bleurt_checkpoint="/path/to/BLEURT-20").',
            flush=True,
        )
    print(
        f"evaluating step {restored.step} of {restored.checkpoint_dir} on {len(task_names)} "
        f"task(s), {split} split",
        flush=True,
    )
    predict_fn = inference.make_predict_fn(restored, decode_options=decode_options)
    with jax.set_mesh(restored.mesh):
        results = evaluation.evaluate_tasks(
            predict_fn,
            restored.params,
            task_names,
            split,
            restored.task_feature_lengths,
            batch_size,
            restored.batch_sharding,
            output_dir,
            bleurt_checkpoint=bleurt_checkpoint,
            step=restored.step,
            show_progress=show_progress,
        )
    print_results(results, split)
    print(f"wrote {output_dir}/metrics.json, metrics.md, metrics.png and TensorBoard events")
    return results


def print_results(results: Mapping[str, Mapping[str, Any]], split: str) -> None:
    print(f"\nevaluation ({split} split)")
    print(
        f"{'task':40s} {'BLEU':>7s} {'chrF':>7s} {'lang':>6s} {'empty':>6s} {'exact':>6s} "
        f"{'n':>5s}" + (f" {'BLEURT':>7s}" if any("bleurt" in m for m in results.values()) else "")
    )
    for name, m in results.items():
        lang = m.get("language_accuracy")
        print(
            f"{name:40s} {m['bleu']:7.2f} {m['chrf']:7.2f} "
            f"{'-' if lang is None else f'{lang:.3f}':>6s} {m['empty_rate']:6.3f} "
            f"{m['exact_match']:6.3f} {m['num_examples']:5d}"
            + (f" {m['bleurt']:7.4f}" if "bleurt" in m else "")
        )
    first = next(iter(results.values()))
    print(f"BLEU signature: {first['bleu_signature']}\nchrF signature: {first['chrf_signature']}")
    if "language_id_signature" in first:
        print(f"language id: {first['language_id_signature']}")


def main(argv: Sequence[str]) -> None:
    gin_utils.parse_gin_args(argv)
    evaluate()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(sys.argv[1:])
