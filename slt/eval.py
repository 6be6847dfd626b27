r"""Evaluate a checkpoint on every eval task of a mixture, or on one task.

  python -m slt.eval --gin_file=runs/eval.gin --gin.CHECKPOINT=\"runs/demo\"

CHECKPOINT is a MODEL_DIR of slt.train, its checkpoints/ directory or one step in it.
The network and the preprocessing come from the checkpoint's metadata. Writes to
`evaluate.output_dir` (default MODEL_DIR/eval_<step>_<split>, plus `_<name>` for a
mixture, task or prepared dataset other than the checkpoint's own, plus the decode
options, e.g. `_decode_method-beam_num_beams-4`): metrics.json (BLEU,
chrF, language accuracy, empty rate, BLEURT with a BLEURT checkpoint; signatures),
<task>.<split>.predictions.jsonl, metrics.md, metrics.png, TensorBoard events and
report.html (examples with their landmark clips; `slt.ReportConfig` picks them).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from slt import gin_utils
from slt.training import partitioning  # noqa: E402

gin_utils.quiet_tensorflow()
gin_utils.add_cpu_xla_flags(decoding=True)

import gin  # noqa: E402
import jax  # noqa: E402

from slt import (
    storage,  # noqa: E402
    tasks,  # noqa: E402,F401  (registers the tasks)
)
from slt.evaluation import evaluate as evaluate_lib  # noqa: E402
from slt.evaluation import (
    html_report,  # noqa: E402
    trained_model,  # noqa: E402
)
from slt.tasks import prepared  # noqa: E402


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
    show_progress: bool = True,
    html: bool = True,
    partitioning_config: partitioning.PartitioningConfig = partitioning.PartitioningConfig(),
    distributed_config: partitioning.DistributedConfig = partitioning.DistributedConfig(),
    report_config: html_report.ReportConfig = html_report.ReportConfig(),
) -> dict[str, dict[str, Any]]:
    """Metrics per task (as written to metrics.json).

    `html` also writes report.html (`report_config` picks its examples; the
    checkpoint's training curves are added when its MODEL_DIR has train/metrics.jsonl).

    `mixture_or_task_name` defaults to the one the checkpoint was trained on; a mixture
    means each of its tasks; `prepared_data_dir` (a `slt.prepare` output) evaluates that
    dataset instead, as task `prepared_<dir name>`. `decode_options` go to
    `predict_batch` as keywords.

    `partitioning_config` lays the model out on the devices; its default, a
    `(-1, 1, 1)` mesh over `("data", "fsdp", "model")` with `DATA_PARALLEL_RULES`,
    replicates the parameters and splits each batch over every device (`batch_size`
    must divide by the device count). With several processes (`distributed_config`,
    or the SLT_* environment variables as for `slt.train`; its `step_timeout_s` is
    not used here) each reads its shard of the split and process 0 writes the outputs.
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
    if not output_dir:
        name = f"eval_{restored.step}_{split}"
        if prepared_data_dir or mixture_or_task_name:  # not the checkpoint's own tasks
            name += "_" + (task_names[0] if prepared_data_dir else mixture_or_task_name)
        # Other decode options are other results: they get a directory of their own.
        name += decode_options_suffix(decode_options)
        output_dir = storage.join(restored.model_dir, name)
    storage.check_writable(output_dir, "evaluate.output_dir")  # before any decoding
    if not bleurt_checkpoint:
        print(
            "BLEURT: not computed, no BLEURT checkpoint given "
            '(--gin.evaluate.bleurt_checkpoint="/path/to/BLEURT-20").',
            flush=True,
        )
    print(f"evaluating {restored} on {len(task_names)} task(s), {split} split", flush=True)
    predictor = restored.predictor(batch_size, decode_options=decode_options)
    with jax.set_mesh(restored.mesh):
        results = evaluate_lib.evaluate_tasks(
            predictor.predict_fn,
            predictor.params,
            task_names,
            split,
            predictor.task_feature_lengths,
            batch_size,
            predictor.batch_sharding,
            output_dir,
            bleurt_checkpoint=bleurt_checkpoint,
            step=restored.step,
            show_progress=show_progress,
            report_config=report_config if html else None,
            training_log=storage.join(restored.model_dir, "train", "metrics.jsonl"),
            landmark_config=restored.landmark_config,
        )
    if jax.process_index() == 0:  # the one that wrote them
        print_results(results, split)
        print(f"wrote {output_dir}/metrics.json, metrics.md, metrics.png and TensorBoard events")
        if html:
            print(f"report: {output_dir}/report.html (open it in a browser; it works offline)")
    return results


def decode_options_suffix(decode_options: Mapping[str, Any] | None) -> str:
    """The part of the default output directory's name that `decode_options` add:
    `_decode_method-beam_num_beams-4` for `{"decode_method": "beam", "num_beams": 4}`,
    "" for none."""
    parts = [
        f"{key}-{re.sub(r'[^A-Za-z0-9.]+', '-', str(value)).strip('-')}"
        for key, value in sorted((decode_options or {}).items())
    ]
    return "".join(f"_{part}" for part in parts)


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
    gin_utils.parse_gin_args(argv, evaluate)
    try:
        evaluate()
    except storage.StorageError as error:
        print(f"\nERROR: {gin_utils.error_message(error)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    gin_utils.run_job(main)
