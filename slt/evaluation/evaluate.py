"""Decode task splits and score them: the evaluation of `slt.train` and `slt.eval`.

`evaluate_tasks` decodes each task's split (`slt.evaluation.predict`), scores the predictions
(`slt.evaluation.metrics`: BLEU, chrF, language accuracy, empty rate, exact match, BLEURT with a
BLEURT checkpoint) and writes the predictions and reports (`slt.evaluation.report`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from slt import storage
from slt.data import landmarks
from slt.evaluation import html_report, metrics, predict, prediction_files, report

log = logging.getLogger(__name__)

_PROMPT_TARGET_LANGUAGE = re.compile(r"^<\w+> <\w+> <([A-Za-z-]+)>")


def target_language(prompt: str) -> str | None:
    """The intended output language of a `<task> <src> <tgt>` prompt, else None."""
    match = _PROMPT_TARGET_LANGUAGE.match(prompt)
    return match.group(1) if match else None


def score_predictions(
    predictions: Sequence[Mapping[str, Any]], bleurt_scorer: Any | None = None
) -> dict[str, Any]:
    """Metrics of predictions (`prediction`, `target`, `prompt` per example).

    Language accuracy needs every prompt to name its target language (`<t> <s> <tgt>`);
    otherwise it is left out and `language_accuracy_note` says why.
    """
    languages = [target_language(p["prompt"]) for p in predictions]
    unknown = sum(lang is None or lang not in metrics.LANGUAGE_ID_CANDIDATES for lang in languages)
    result = metrics.translation_metrics(
        [p["prediction"] for p in predictions],
        [p["target"] for p in predictions],
        target_languages=None if unknown else languages,
        bleurt_scorer=bleurt_scorer,
    )
    distinct = sorted({lang or "?" for lang in languages})
    result["target_language"] = distinct[0] if len(distinct) == 1 else ",".join(distinct)
    if unknown:
        result["language_accuracy_note"] = (
            f"left out: {unknown} prompts name no target language the identifier knows "
            f"({', '.join(metrics.LANGUAGE_ID_CANDIDATES)})."
        )
    return result


def evaluate_tasks(
    predict_fn: predict.PredictFn,
    params: Any,
    task_names: Sequence[str],
    split: str,
    task_feature_lengths: Mapping[str, int],
    batch_size: int,
    batch_sharding: jax.sharding.NamedSharding,
    output_dir: str | None = None,
    *,
    bleurt_checkpoint: str | None = None,
    step: int | None = None,
    show_progress: bool = True,
    report_config: html_report.ReportConfig | None = None,
    training_log: str | None = None,
    learning_rate: Callable[[int], float] | None = None,
    landmark_config: landmarks.LandmarkConfig | None = None,
) -> dict[str, dict[str, Any]]:
    """{task: metrics}. With `output_dir` also writes, on process 0:

    `<task>.<split>.predictions.jsonl`, `metrics.json`, `metrics.md` (a Markdown
    table), `metrics.png` (metrics per task and language) and TensorBoard summaries
    (at `step`, default 0). BLEURT is computed only with `bleurt_checkpoint`. With
    `report_config` also `report.html` (`slt.evaluation.html_report`: examples with
    their clips; the training curves of `training_log`, a `train/metrics.jsonl`, with
    the optimizer's `learning_rate` schedule). `landmark_config`, the tasks' landmark
    preprocessing, is needed with `report_config`, to draw the clips.
    """
    if report_config is not None and landmark_config is None:
        raise ValueError(
            "evaluate_tasks: report_config needs the landmark_config of the tasks (the "
            "model's, e.g. TrainedModel.landmark_config) to draw their clips."
        )
    predict.check_splits(task_names, split)
    bleurt_scorer = None
    if bleurt_checkpoint:
        from slt.evaluation import bleurt

        bleurt_scorer = bleurt.BleurtScorer(bleurt_checkpoint)
    write = bool(output_dir) and jax.process_index() == 0
    if write:
        storage.makedirs(output_dir)
    predictor = predict.Predictor(
        predict_fn, params, task_feature_lengths, batch_size, batch_sharding
    )
    results, all_predictions = {}, {}
    for name in task_names:
        predictions = predict.predict_task(predictor, name, split, show_progress)
        results[name] = score_predictions(predictions, bleurt_scorer)
        if write and report_config is not None:
            all_predictions[name] = predictions
        log.info(
            "eval %s/%s: BLEU %.2f chrF %.2f (%d examples)",
            name,
            split,
            results[name]["bleu"],
            results[name]["chrf"],
            len(predictions),
        )
        if write:
            prediction_files.write_jsonl(
                storage.join(output_dir, f"{name}.{split}.predictions.jsonl"), predictions
            )
    if write:
        report.write_reports(results, output_dir, split, step or 0)
        if report_config is not None:
            html_report.write_html_report(
                storage.join(output_dir, "report.html"),
                results,
                all_predictions,
                split,
                task_feature_lengths=task_feature_lengths,
                landmark_config=landmark_config,
                config=report_config,
                training_log=training_log,
                learning_rate=learning_rate,
                title=f"evaluation at step {step or 0}, {split} split",
                metrics_png=storage.read_bytes(storage.join(output_dir, "metrics.png")),
            )
    return results


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation during and after training.

    `tasks` defaults to the tasks of the training mixture. `period` > 0 evaluates
    `periodic_split` every that many steps; `final` evaluates `split` at the end, and
    with `html_report` also writes its `report.html` (with the training curves).
    """

    tasks: Sequence[str] | None = None
    split: str = "test"
    batch_size: int = 64
    period: int = 0
    periodic_split: str = "validation"
    final: bool = True
    # The final evaluation's report.html (`slt.ReportConfig` says which examples).
    html_report: bool = True
