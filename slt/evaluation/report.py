"""What an evaluation writes for people and tools: metrics.json, a Markdown table, a PNG
plot of the metrics per task and language, and TensorBoard summaries."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

from slt import storage

# Metrics on a 0-100 scale in the table and the plot; rates are shown as percentages.
PERCENT_METRICS = ("language_accuracy", "empty_rate", "exact_match")
TABLE_COLUMNS = (
    ("bleu", "BLEU"),
    ("chrf", "chrF"),
    ("bleurt", "BLEURT"),
    ("language_accuracy", "language acc. %"),
    ("empty_rate", "empty %"),
    ("exact_match", "exact %"),
)
SIGNATURES = ("bleu_signature", "chrf_signature", "language_id_signature", "bleurt_checkpoint")


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if name in PERCENT_METRICS else f"{value:.2f}"


def markdown_table(results: Mapping[str, Mapping[str, Any]], split: str) -> str:
    """One row per task; signatures and notes below the table."""
    columns = [(k, title) for k, title in TABLE_COLUMNS if any(k in m for m in results.values())]
    lines = [
        f"| task ({split}) | language | n | " + " | ".join(t for _, t in columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for name, m in results.items():
        cells = [_cell(k, m.get(k)) for k, _ in columns]
        lines.append(
            f"| {name} | {m.get('target_language', '-')} | {m['num_examples']} | "
            + " | ".join(cells)
            + " |"
        )
    lines.append("")
    for key in SIGNATURES:
        values = sorted({str(m[key]) for m in results.values() if key in m})
        if values:
            lines.append(f"- {key}: " + "; ".join(f"`{v}`" for v in values))
    if not any("bleurt" in m for m in results.values()):
        lines.append("- BLEURT: not computed (no BLEURT checkpoint given).")
    for name, m in results.items():
        if "language_accuracy_note" in m:
            lines.append(f"- {name}: language accuracy {m['language_accuracy_note']}")
    return "\n".join(lines) + "\n"


def plot_metrics(results: Mapping[str, Mapping[str, Any]], path: str, split: str) -> None:
    """Grouped bars: each metric (0-100 scale) per task, labelled with its language."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = [(k, t) for k, t in TABLE_COLUMNS if any(k in m for m in results.values())]
    names = list(results)
    x = np.arange(len(names))
    width = 0.8 / max(len(columns), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 4.5))
    for i, (key, title) in enumerate(columns):
        scale = 100.0 if key in PERCENT_METRICS or key == "bleurt" else 1.0
        values = [scale * float(results[n].get(key) or 0.0) for n in names]
        label = f"{title} x100" if key == "bleurt" else title
        ax.bar(x + (i - (len(columns) - 1) / 2) * width, values, width, label=label)
    labels = [f"{n}\n({results[n].get('target_language', '?')})" for n in names]
    ax.set_xticks(x, labels, rotation=45 if len(names) > 4 else 0, ha="right", fontsize=7)
    ax.set_ylabel("score (0-100)")
    ax.set_title(f"metrics per task and language ({split} split)")
    ax.legend(fontsize=7, ncols=min(len(columns), 3))
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(path, png.getvalue())


def write_tensorboard(
    results: Mapping[str, Mapping[str, Any]], log_dir: str, split: str, step: int
) -> None:
    """Scalars `<split>/<task>/<metric>` and the signatures as text, at `step`.

    The events are written locally (TensorBoard writes through TensorFlow's own file
    system) and copied to `log_dir` through `slt.storage`."""
    with storage.staging_dir("eval-events") as local:
        _write_events(results, local, split, step)
        storage.upload_dir(local, log_dir)


def _write_events(
    results: Mapping[str, Mapping[str, Any]], log_dir: str, split: str, step: int
) -> None:
    from clu import metric_writers

    writer = metric_writers.create_default_writer(log_dir, asynchronous=False)
    scalars, texts = {}, {}
    for name, m in results.items():
        for key, value in m.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scalars[f"{split}/{name}/{key}"] = value
            elif key in SIGNATURES:
                texts[f"{split}/{name}/{key}"] = str(value)
    writer.write_scalars(step, scalars)
    writer.write_texts(step, texts)
    writer.flush()
    writer.close()


def write_reports(
    results: Mapping[str, Mapping[str, Any]], output_dir: str, split: str, step: int
) -> None:
    """metrics.json, metrics.md, metrics.png and TensorBoard event files in `output_dir`."""
    metrics = json.dumps(results, indent=2, ensure_ascii=False)
    storage.write_text(storage.join(output_dir, "metrics.json"), metrics)
    storage.write_text(storage.join(output_dir, "metrics.md"), markdown_table(results, split))
    plot_metrics(results, storage.join(output_dir, "metrics.png"), split)
    write_tensorboard(results, output_dir, split, step)
