r"""Write predictions of a checkpoint for a task or mixture split as sharded JSONL.

  python -m slt.infer --gin_file=runs/infer.gin --gin.CHECKPOINT=\"runs/demo\" \
      --gin.OUTPUT_DIR=\"runs/demo/infer\"

One line per example: id, prompt, prediction, target (if present) and score (the sum
of the model's log-probabilities of the predicted tokens, EOS included). Shards of
`chunk_size` examples, `<task>.<split>.predictions-00000.jsonl`, ...; a restart with
the same OUTPUT_DIR skips the shards already written. With `--gin.infer.html=True`
also OUTPUT_DIR/report.html: scores where the split has references, and examples with
their landmark clips (`slt.ReportConfig` picks them).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from slt import gin_utils

gin_utils.quiet_tensorflow()
gin_utils.add_cpu_xla_flags(decoding=True)

import gin  # noqa: E402
import jax  # noqa: E402

from slt import (
    storage,  # noqa: E402
    tasks,  # noqa: E402,F401  (registers the tasks)
)
from slt.data import landmarks  # noqa: E402
from slt.evaluation import (
    evaluate,  # noqa: E402
    html_report,  # noqa: E402
    prediction_files,  # noqa: E402
    trained_model,  # noqa: E402
)
from slt.tasks import prepared  # noqa: E402
from slt.training import partitioning  # noqa: E402


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
    show_progress: bool = True,
    on_chunk_written: Callable[[int, str], None] | None = None,
    html: bool = False,
    partitioning_config: partitioning.PartitioningConfig = partitioning.PartitioningConfig(),
    distributed_config: partitioning.DistributedConfig = partitioning.DistributedConfig(),
    report_config: html_report.ReportConfig = html_report.ReportConfig(),
) -> dict[str, dict[str, int]]:
    """{task: counts}; see `prediction_files.write_task_predictions`.

    `html` also writes OUTPUT_DIR/report.html from the prediction shards (`write_report`).

    `mixture_or_task_name` defaults to the one the checkpoint was trained on; with
    `prepared_data_dir` (a `python -m slt.prepare` output) the split of that dataset is
    decoded instead, as task `prepared_<dir name>`. `decode_options` go to
    `predict_batch` as keywords; `on_chunk_written(k, path)` is called after each shard.

    `partitioning_config` lays the model out on the devices; its default, a
    `(-1, 1, 1)` mesh over `("data", "fsdp", "model")` with `DATA_PARALLEL_RULES`,
    replicates the parameters and splits each batch over every device. With several
    processes (`distributed_config`, or the SLT_* environment variables as for
    `slt.train`; its `step_timeout_s` is not used here) each reads its shard of the
    split, `chunk_size` must be a multiple of the number of shards, and process 0
    writes the files.
    """
    restored, task_names = trained_model.load_for_tasks(
        checkpoint,
        mixture_or_task_name,
        split,
        batch_size,
        partitioning_config,
        distributed_config,
        prepared_task=(
            functools.partial(prepared.register_for_model, prepared_data_dir)
            if prepared_data_dir
            else None
        ),
    )
    storage.check_writable(output_dir, "infer.output_dir")  # before any decoding
    print(
        f"writing predictions of {restored} on {len(task_names)} task(s), {split} split",
        flush=True,
    )
    predictor = restored.predictor(batch_size, with_scores=True, decode_options=decode_options)
    run_info = {
        "checkpoint": restored.checkpoint_dir,
        "step": restored.step,
        "decode_options": dict(decode_options or {}),
    }
    summary = {}
    with jax.set_mesh(restored.mesh):
        for task_name in task_names:
            counts = prediction_files.write_task_predictions(
                predictor,
                task_name,
                split,
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
    if html and jax.process_index() == 0:
        path = write_report(
            output_dir,
            task_names,
            split,
            restored.task_feature_lengths,
            restored.landmark_config,
            report_config,
            title=f"predictions of {restored}, {split} split",
        )
        print(f"report: {path} (open it in a browser; it works offline)", flush=True)
    return summary


def write_report(
    output_dir: str,
    task_names: Sequence[str],
    split: str,
    task_feature_lengths: Mapping[str, int],
    landmark_config: landmarks.LandmarkConfig,
    report_config: html_report.ReportConfig,
    title: str,
) -> str:
    """OUTPUT_DIR/report.html from the prediction shards there. Tasks whose examples
    all have a reference are scored (`evaluate.score_predictions`); the others are
    shown without metrics."""
    results, predictions = {}, {}
    for name in task_names:
        rows = prediction_files.read_predictions(output_dir, name, split)
        predictions[name] = rows
        if rows and all("target" in r for r in rows):
            results[name] = evaluate.score_predictions(rows)
        else:
            results[name] = {"num_examples": len(rows)}
    path = storage.join(output_dir, "report.html")
    html_report.write_html_report(
        path,
        results,
        predictions,
        split,
        task_feature_lengths=task_feature_lengths,
        landmark_config=landmark_config,
        config=report_config,
        title=title,
    )
    return path


def main(argv: Sequence[str]) -> None:
    gin_utils.parse_gin_args(argv, infer)
    try:
        infer()
    except storage.StorageError as error:
        print(f"\nERROR: {gin_utils.error_message(error)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    gin_utils.run_job(main)
