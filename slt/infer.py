r"""Write predictions of a checkpoint for a task or mixture split as sharded JSONL.

  python -m slt.infer --gin_file=gin/runs/infer.gin --gin.CHECKPOINT=\"runs/demo\" \
      --gin.OUTPUT_DIR=\"runs/demo/infer\"

One line per example: id, prompt, prediction, target (if present) and score (the sum
of the model's log-probabilities of the predicted tokens, EOS included). Shards of
`chunk_size` examples, `<task>.<split>.predictions-00000.jsonl`, ...; a restart with
the same OUTPUT_DIR skips the shards already written.
"""

from __future__ import annotations

import logging
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
def infer(
    *,
    checkpoint: str = gin.REQUIRED,
    output_dir: str = gin.REQUIRED,
    mixture_or_task_name: str | None = None,
    prepared_data_dir: str | None = None,
    split: str = "test",
    batch_size: int = 64,
    chunk_size: int = 1024,
    decode_options: Mapping[str, Any] | None = None,
    mesh_shape: Sequence[int] = (-1,),
    mesh_axis_names: Sequence[str] = ("data",),
    logical_axis_rules: partitioning.LogicalRules = partitioning.DATA_PARALLEL_RULES,
    show_progress: bool = True,
    on_chunk_written: Any | None = None,
) -> dict[str, dict[str, int]]:
    """{task: counts}; see `inference.write_task_predictions`.

    With `prepared_data_dir` (a `python -m slt.prepare` output) the split of that
    dataset is decoded instead of a registered task, as task `prepared_<dir name>`.
    """
    partitioning.initialize_distributed()  # several processes: SLT_* variables
    restored = inference.restore(checkpoint, mesh_shape, mesh_axis_names, logical_axis_rules)
    if prepared_data_dir:
        task_names = [inference.register_prepared(prepared_data_dir, restored)]
    else:
        name = mixture_or_task_name or restored.mixture_or_task_name
        task_names = [t.name for t in seqio.get_subtasks(seqio.get_mixture_or_task(name))]
    evaluation.check_splits(task_names, split)
    partitioning.check_batch_size(batch_size, restored.batch_sharding)
    predict_fn = inference.make_predict_fn(
        restored, with_scores=True, decode_options=decode_options
    )
    run_info = {
        "checkpoint": restored.checkpoint_dir,
        "step": restored.step,
        "decode_options": dict(decode_options or {}),
    }
    summary = {}
    with jax.set_mesh(restored.mesh):
        for task_name in task_names:
            counts = inference.write_task_predictions(
                predict_fn,
                restored.params,
                task_name,
                split,
                restored.task_feature_lengths,
                batch_size,
                restored.batch_sharding,
                output_dir,
                chunk_size,
                run_info,
                show_progress,
                on_chunk_written,
            )
            summary[task_name] = counts
            print(
                f"{task_name}/{split}: {counts['examples']} examples in "
                f"{counts['shards_written'] + counts['shards_skipped']} shards "
                f"({counts['shards_written']} written, {counts['shards_skipped']} already "
                f"there), {counts['examples_decoded']} decoded",
                flush=True,
            )
    return summary


def main(argv: Sequence[str]) -> None:
    gin_utils.parse_gin_args(argv)
    infer()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(sys.argv[1:])
