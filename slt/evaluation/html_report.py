"""`report.html`: one self-contained page per evaluation, for looking at examples.

For each task: the metric table with its signatures, the metrics plot, language
accuracy and empty rate, and a few examples (by default the worst, the best and some
random ones by sentence chrF). Each example shows the landmark clip the model was
given, animated on a canvas (85 points drawn as pose, face contours and hands, with
play, pause and a frame slider), the prompt, prediction and reference, the sentence
chrF, a character diff of prediction against reference and the language the
identifier assigns to the prediction. A training run's page also plots loss, token
accuracy and learning rate from `train/metrics.jsonl`.

The page needs no network: CSS, JavaScript and images are inline. Clips are stored
as 12-bit coordinates (x and y; z is not drawn), delta coded along time and
zlib-compressed (`encode_clip`); the browser inflates them with `DecompressionStream`.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import html
import io
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from slt import storage
from slt.data import landmarks
from slt.evaluation import metrics, report

log = logging.getLogger(__name__)

# Quantisation of clip coordinates: 0..QUANT_LEVELS over the clip's larger extent;
# MISSING_CODE marks a point the pose estimator did not find (drawn as a gap).
QUANT_LEVELS = 4095
MISSING_CODE = 65535
# Training curves drawn from train/metrics.jsonl, when the run logged them.
TRAINING_CURVES = (
    ("loss", "loss"),
    ("accuracy", "token accuracy"),
    ("learning_rate", "learning rate"),
)


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """Which examples `report.html` shows per task, and how clips play.

    `worst` and `best` examples by sentence chrF, then `random` others (drawn with
    `seed`). `fps` is the playback rate of the model's frames; None: 30 divided by
    the landmark config's `frame_step` (or its `target_fps`), i.e. real time for a
    30 fps source.
    """

    worst: int = 3
    best: int = 3
    random: int = 4
    seed: int = 0
    fps: float | None = None

    def __post_init__(self):
        for name in ("worst", "best", "random"):
            if getattr(self, name) < 0:
                raise ValueError(f"ReportConfig.{name} must be >= 0, got {getattr(self, name)}.")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"ReportConfig.fps must be > 0 or None, got {self.fps}.")


# -- choosing and describing examples -------------------------------------------------


def sentence_chrf(predictions: Sequence[Mapping[str, Any]]) -> list[float | None]:
    """sacrebleu's sentence chrF of each prediction (None without a reference)."""
    import sacrebleu

    chrf = sacrebleu.metrics.CHRF()
    return [
        chrf.sentence_score(p["prediction"], [p["target"]]).score if "target" in p else None
        for p in predictions
    ]


def select_examples(scores: Sequence[float | None], config: ReportConfig) -> list[tuple[int, str]]:
    """(position, why shown) of the examples to show: the `worst`, then the `best` by
    score (ties: earlier first), then `random` of the rest. Without scores (no
    references), the first `worst + best + random` examples."""
    if any(s is None for s in scores):
        count = config.worst + config.best + config.random
        return [(i, "first") for i in range(min(count, len(scores)))]
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    chosen: list[tuple[int, str]] = [(i, "worst") for i in order[: config.worst]]
    taken = {i for i, _ in chosen}
    best = [i for i in reversed(order) if i not in taken][: config.best]
    chosen += [(i, "best") for i in best]
    taken.update(best)
    rest = [i for i in range(len(scores)) if i not in taken]
    picked = random.Random(config.seed).sample(rest, min(config.random, len(rest)))
    chosen += [(i, "random") for i in sorted(picked)]
    return chosen


def char_diff_html(prediction: str, reference: str) -> str:
    """The prediction against the reference, character by character: `<del>` what the
    prediction lacks, `<ins>` what it adds."""
    matcher = difflib.SequenceMatcher(None, prediction, reference, autojunk=False)
    parts = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            parts.append(html.escape(prediction[i1:i2]))
            continue
        if op in ("replace", "delete"):
            parts.append(f"<ins>{html.escape(prediction[i1:i2])}</ins>")
        if op in ("replace", "insert"):
            parts.append(f"<del>{html.escape(reference[j1:j2])}</del>")
    return "".join(parts)


# -- clips ----------------------------------------------------------------------------


def model_points(
    frames: np.ndarray, config: landmarks.LandmarkConfig
) -> tuple[np.ndarray, np.ndarray]:
    """([T, 85, 3] points, [T, 85] presence) of model frames [T, 255].

    A point is missing where all its coordinates equal `config.missing_value`. The
    feature standardisation (`feature_mean`/`feature_std`) is undone, so points are
    drawn in the normalised space of `config.normalization`.
    """
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 2 or frames.shape[1] != landmarks.FRAME_DIM:
        raise ValueError(
            f"landmark frames must be [T, {landmarks.FRAME_DIM}], got {list(frames.shape)}."
        )
    points = frames.reshape(-1, landmarks.NUM_POINTS, landmarks.NUM_DIMS)
    present = ~(points == np.float32(config.missing_value)).all(axis=-1)
    present &= np.isfinite(points).all(axis=-1)
    if config.feature_mean is not None:
        mean = np.asarray(config.feature_mean, np.float32).reshape(landmarks.NUM_POINTS, 3)
        std = np.asarray(config.feature_std, np.float32).reshape(landmarks.NUM_POINTS, 3)
        points = points * std + mean
    return np.where(present[..., None], points, 0.0).astype(np.float32), present


def encode_clip(points: np.ndarray, present: np.ndarray) -> dict[str, Any]:
    """A clip for the page: x and y quantised to 0..QUANT_LEVELS over the clip's box
    (one scale for both axes), MISSING_CODE where a point is missing; stored
    point-major ([85 * 2, T] series), each series delta coded (mod 2^16, zigzag), as
    two byte planes (high, then low bytes), zlib-compressed and base64-encoded.
    """
    import zlib

    num_frames = int(points.shape[0])
    if num_frames == 0:
        raise ValueError("encode_clip: a clip with no frames has nothing to draw.")
    xy = points[..., :2].astype(np.float64)
    if present.any():
        low = xy[present].min(axis=0)
        high = xy[present].max(axis=0)
    else:
        low, high = np.zeros(2), np.ones(2)
    scale = max(float((high - low).max()), 1e-6)
    codes = np.rint((xy - low) / scale * QUANT_LEVELS).astype(np.int64)
    codes = np.where(present[..., None], np.clip(codes, 0, QUANT_LEVELS), MISSING_CODE)
    series = codes.reshape(num_frames, -1).T.astype(np.uint16)  # [170, T]
    deltas = np.diff(series, axis=1, prepend=np.zeros((series.shape[0], 1), np.uint16))
    # Zigzag (small negative deltas become small codes), then the high bytes before the
    # low bytes: about a quarter smaller after zlib than plain uint16 deltas.
    signed = deltas.reshape(-1).view(np.int16).astype(np.int32)
    zigzag = ((signed << 1) ^ (signed >> 31)).astype(np.uint16)
    planes = np.concatenate([(zigzag >> 8).astype(np.uint8), (zigzag & 0xFF).astype(np.uint8)])
    data = zlib.compress(planes.tobytes(), 9)
    return {
        "frames": num_frames,
        "box": [float(low[0]), float(low[1]), float(low[0] + scale), float(low[1] + scale)],
        "extent": [float((high - low)[0] / scale), float((high - low)[1] / scale)],
        "missing_frames": int((~present.any(axis=1)).sum()),
        "data": base64.b64encode(data).decode("ascii"),
    }


def decode_clip(clip: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `encode_clip` (what the page's JavaScript does): ([T, 85, 2]
    codes in 0..QUANT_LEVELS, [T, 85] presence)."""
    import zlib

    planes = np.frombuffer(zlib.decompress(base64.b64decode(clip["data"])), np.uint8)
    half = len(planes) // 2
    zigzag = (planes[:half].astype(np.uint16) << 8) | planes[half:]
    deltas = (zigzag >> 1) ^ (-(zigzag & 1)).astype(np.uint16)
    series = np.cumsum(deltas.reshape(landmarks.NUM_POINTS * 2, -1), axis=1, dtype=np.uint16)
    codes = series.T.reshape(-1, landmarks.NUM_POINTS, 2)
    return codes, (codes != MISSING_CODE).all(axis=-1)


def read_model_clips(
    task_name: str,
    split: str,
    task_feature_lengths: Mapping[str, int],
    wanted: Sequence[Mapping[str, Any]],
) -> dict[int, np.ndarray]:
    """{index into `wanted`: [T, 255] frames} of predictions, read again from the task
    split as the model got them (trimmed to the feature lengths).

    A prediction is found by its id where the examples carry one (a string), else by
    its position in the split (its integer id). Examples without landmarks (text
    tasks) are left out. Reading stops once every wanted example is found.
    """
    from slt.evaluation import predict

    by_id = {p["id"]: k for k, p in enumerate(wanted) if isinstance(p.get("id"), str)}
    by_position = {p["id"]: k for k, p in enumerate(wanted) if isinstance(p.get("id"), int)}
    found: dict[int, np.ndarray] = {}
    ds = predict.task_dataset(task_name, split, task_feature_lengths)
    if "landmarks" not in ds.element_spec:
        return found
    remaining = len(by_id) + len(by_position)
    for position, example in enumerate(ds.as_numpy_iterator()):
        if remaining == 0:
            break
        key = example.get("id")
        k = by_id.get(key.decode("utf-8")) if isinstance(key, bytes) else None
        if k is None and key is None:
            k = by_position.get(position)
        if k is not None and k not in found:
            found[k] = np.asarray(example["landmarks"])
            remaining -= 1
    if remaining:
        log.warning(
            "%s/%s: %d of the report's examples were not found again in the split; "
            "they are shown without their clip.",
            task_name,
            split,
            remaining,
        )
    return found


def playback_fps(config: ReportConfig, landmark_config: landmarks.LandmarkConfig) -> float:
    if config.fps is not None:
        return float(config.fps)
    if landmark_config.target_fps is not None:
        return float(landmark_config.target_fps)
    return 30.0 / landmark_config.frame_step


# -- task sections ----------------------------------------------------------------------


def task_examples(
    task_name: str,
    split: str,
    predictions: Sequence[Mapping[str, Any]],
    task_feature_lengths: Mapping[str, int] | None,
    landmark_config: landmarks.LandmarkConfig,
    config: ReportConfig,
) -> list[dict[str, Any]]:
    """The shown examples of a task, each a dict the page renders: why shown, texts,
    score, diff, identified language and the encoded clip (None for text input)."""
    scores = sentence_chrf(predictions)
    chosen = select_examples(scores, config)
    wanted = [predictions[i] for i, _ in chosen]
    clips = (
        read_model_clips(task_name, split, task_feature_lengths, wanted)
        if task_feature_lengths is not None and wanted
        else {}
    )
    languages = metrics.identify_languages([p["prediction"] for p in wanted]) if wanted else []
    examples = []
    for k, ((i, why), p) in enumerate(zip(chosen, wanted)):
        clip = None
        if k in clips and len(clips[k]):
            clip = encode_clip(*model_points(clips[k], landmark_config))
        examples.append(
            {
                "position": i,
                "why": why,
                "id": p.get("id", i),
                "prompt": p.get("prompt", ""),
                "prediction": p["prediction"],
                "target": p.get("target"),
                "chrf": scores[i],
                "diff": char_diff_html(p["prediction"], p["target"]) if "target" in p else None,
                "language": languages[k],
                "clip": clip,
            }
        )
    return examples


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def metrics_plot_png(results: Mapping[str, Mapping[str, Any]], split: str) -> bytes:
    """`report.plot_metrics` as PNG bytes."""
    with storage.staging_dir("report-plot") as local:
        path = f"{local}/metrics.png"
        report.plot_metrics(results, path, split)
        return storage.read_bytes(path)


def read_training_log(path: str) -> list[dict[str, float]]:
    """The records of a `train/metrics.jsonl` (a last line cut off mid-write is left
    out, as training itself does when it resumes)."""
    records = []
    text = storage.read_text(path)
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if not line.strip() or not line.endswith("\n"):
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}, line {number}: not JSON ({e}); a training log line is "
                "one JSON object per step."
            ) from None
    return records


def training_curves_png(
    records: Sequence[Mapping[str, float]],
    learning_rate: Callable[[int], float] | None = None,
) -> bytes | None:
    """Loss, token accuracy and learning rate against step (those logged); None when
    there are no records. `learning_rate(count)`, the optimizer's schedule, gives the
    rate where the log has none: step k's update used `learning_rate(k - 1)`."""
    if learning_rate is not None and records and "learning_rate" not in records[0]:
        records = [{**r, "learning_rate": float(learning_rate(r["step"] - 1))} for r in records]
    curves = [(k, t) for k, t in TRAINING_CURVES if any(k in r for r in records)]
    if not records or not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], curves):
        steps = [r["step"] for r in records if key in r]
        ax.plot(steps, [r[key] for r in records if key in r], linewidth=1.2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
    return png.getvalue()


# -- the page -----------------------------------------------------------------------------


def _table_html(name: str, m: Mapping[str, Any], split: str) -> str:
    columns = [(k, t) for k, t in report.TABLE_COLUMNS if k in m]
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in columns)
    cells = "".join(f"<td>{report._cell(k, m.get(k))}</td>" for k, _ in columns)
    rows = [
        "<table class='metrics'>",
        f"<tr><th>task ({html.escape(split)})</th><th>language</th><th>n</th>{head}</tr>",
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(m.get('target_language', '-')))}"
        f"</td><td>{m.get('num_examples', 0)}</td>{cells}</tr>",
        "</table><ul class='signatures'>",
    ]
    for key in report.SIGNATURES:
        if key in m:
            rows.append(f"<li>{key}: <code>{html.escape(str(m[key]))}</code></li>")
    if "bleurt" not in m and "chrf" in m:
        rows.append("<li>BLEURT: not computed (no BLEURT checkpoint given).</li>")
    if "language_accuracy_note" in m:
        rows.append(f"<li>language accuracy {html.escape(m['language_accuracy_note'])}</li>")
    rows.append("</ul>")
    return "".join(rows)


def _player_html(key: str, clip: Mapping[str, Any], caption: str) -> str:
    frames = clip["frames"]
    missing = (
        f"<div class='note'>{clip['missing_frames']} of {frames} frames have no landmarks</div>"
        if clip["missing_frames"]
        else ""
    )
    return (
        f"<div class='clip' data-clip='{key}' data-frame='0'>"
        f"<div class='caption'>{html.escape(caption)}</div>"
        "<canvas width='260' height='260'></canvas><div class='controls'>"
        "<button type='button' class='play'>pause</button>"
        f"<input type='range' min='0' max='{frames - 1}' value='0'>"
        f"<span class='counter'>1 / {frames}</span></div>{missing}</div>"
    )


def _example_html(task_index: int, k: int, e: Mapping[str, Any]) -> str:
    score = "" if e["chrf"] is None else f" &middot; sentence chrF <b>{e['chrf']:.1f}</b>"
    out = [
        f"<div class='example {e['why']}'>",
        f"<div class='head'><span class='why'>{e['why']}</span> #{e['position']} "
        f"<code>{html.escape(str(e['id']))}</code>{score}"
        f" &middot; identified language: <b>{html.escape(e['language'] or 'none')}</b></div>",
        "<div class='body'>",
    ]
    if e["clip"] is not None:
        out.append(_player_html(f"{task_index}-{k}", e["clip"], "model input"))
        if e.get("source") is not None:
            out.append(_player_html(f"{task_index}-{k}-source", e["source"], "source file"))
    else:
        out.append("<div class='clip none'>text input: no landmarks</div>")
    out.append("<dl>")
    out.append(f"<dt>prompt</dt><dd>{html.escape(e['prompt'])}</dd>")
    out.append(f"<dt>prediction</dt><dd class='prediction'>{html.escape(e['prediction'])}</dd>")
    if e["target"] is not None:
        out.append(f"<dt>reference</dt><dd class='reference'>{html.escape(e['target'])}</dd>")
        out.append(f"<dt>diff</dt><dd class='diff'>{e['diff']}</dd>")
    out.append("</dl></div></div>")
    return "".join(out)


def render_html(
    title: str,
    split: str,
    results: Mapping[str, Mapping[str, Any]],
    examples: Mapping[str, Sequence[Mapping[str, Any]]],
    fps: Mapping[str, float],
    metrics_png: bytes | None,
    training_png: bytes | None,
    notes: Sequence[str] = (),
) -> str:
    """The page: task sections (table, examples) with the plots and the player."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    if training_png is not None:
        body.append("<h2>training</h2>")
        uri = _png_data_uri(training_png)
        body.append(f"<img class='plot training' alt='training curves' src='{uri}'>")
    if metrics_png is not None:
        body.append(f"<h2>metrics ({html.escape(split)} split)</h2>")
        uri = _png_data_uri(metrics_png)
        body.append(f"<img class='plot metrics' alt='metrics per task' src='{uri}'>")
    clips: dict[str, Any] = {}
    if not results:
        body.append("<p class='empty'>No tasks were evaluated, so there is nothing to show.</p>")
    for t, (name, m) in enumerate(results.items()):
        shown = examples.get(name, [])
        body.append(f"<section class='task'><h2>{html.escape(name)}</h2>")
        body.append(_table_html(name, m, split))
        if not shown:
            body.append(
                "<p class='empty'>0 examples in this report for this task "
                f"({m.get('num_examples', 0)} in the split; ReportConfig chooses none or "
                "the split is empty).</p>"
            )
        else:
            scored = all(e["chrf"] is not None for e in shown)
            chosen = (
                "by sentence chrF: the worst, the best and random others"
                if scored
                else "in order (no references to score)"
            )
            legend = (
                " Diff: <ins>in the prediction only</ins>, <del>in the reference only</del>."
                if scored
                else ""
            )
            body.append(
                f"<p>{len(shown)} of {m.get('num_examples', len(shown))} examples, "
                f"{chosen}. Clips are the model's input frames, played at "
                f"{fps.get(name, 15.0):g} frames/s.{legend}</p>"
            )
        for k, e in enumerate(shown):
            body.append(_example_html(t, k, e))
            if e["clip"] is not None:
                clips[f"{t}-{k}"] = {**e["clip"], "fps": fps.get(name, 15.0)}
            if e.get("source") is not None:
                clips[f"{t}-{k}-source"] = e["source"]  # with its own fps
        body.append("</section>")
    edges = {
        "pose": POSE_EDGES,
        "face": FACE_EDGES,
        "hands": HAND_EDGES,
        "groups": POINT_GROUPS,
        "levels": QUANT_LEVELS,
        "missing": MISSING_CODE,
        "points": landmarks.NUM_POINTS,
    }
    data = json.dumps({"clips": clips, "skeleton": edges}, separators=(",", ":"))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        + "".join(body)
        + f"<script id='report-data' type='application/json'>{_script_safe(data)}</script>"
        + f"<script>{_JS}</script></body></html>"
    )


def _script_safe(text: str) -> str:
    """JSON inside <script>: `</` cannot end the element early."""
    return text.replace("</", "<\\/")


def write_html_report(
    path: str,
    results: Mapping[str, Mapping[str, Any]],
    predictions: Mapping[str, Sequence[Mapping[str, Any]]],
    split: str,
    *,
    task_feature_lengths: Mapping[str, int] | None,
    landmark_config: landmarks.LandmarkConfig,
    config: ReportConfig = ReportConfig(),
    training_log: str | None = None,
    learning_rate: Callable[[int], float] | None = None,
    title: str | None = None,
    notes: Sequence[str] = (),
    metrics_png: bytes | None = None,
) -> dict[str, Any]:
    """Writes `report.html` at `path` for `results` ({task: metrics}) and the
    predictions of each task (in split order, as `evaluate_tasks` makes them).

    `task_feature_lengths` (the model's) lets the clips be read again from each task's
    split; None shows text only. `landmark_config` is the tasks' landmark preprocessing
    (the model's), to draw the frames. `training_log`, a `train/metrics.jsonl`, adds the
    training curves when it exists (`learning_rate`: see `training_curves_png`).
    `metrics_png`: the metrics plot when already drawn
    (`report.plot_metrics`), else it is drawn here. Returns a summary: bytes written, examples and
    clips shown.
    """
    examples, fps = {}, {}
    for name in results:
        fps[name] = playback_fps(config, landmark_config)
        examples[name] = task_examples(
            name, split, predictions.get(name, []), task_feature_lengths, landmark_config, config
        )
    training_png, notes = None, list(notes)
    if training_log and storage.exists(training_log):
        try:
            records = read_training_log(training_log)
        except ValueError as e:
            # The evaluation's other outputs are written by now: the page says what is
            # wrong with the log rather than failing the job at its end.
            log.warning("report.html: training curves left out: %s", e)
            notes.append(f"Training curves left out: {e}")
        else:
            training_png = training_curves_png(records, learning_rate)
    page = render_html(
        title or f"evaluation, {split} split",
        split,
        results,
        examples,
        fps,
        metrics_png or (metrics_plot_png(results, split) if results else None),
        training_png,
        notes,
    )
    storage.write_text(path, page)
    summary = {
        "bytes": len(page.encode("utf-8")),
        "examples": sum(len(v) for v in examples.values()),
        "clips": sum(e["clip"] is not None for v in examples.values() for e in v),
    }
    log.info("wrote %s (%d bytes, %d examples, %d clips)", path, *summary.values())
    return summary


def write_translation_report(
    path: str,
    items: Sequence[Mapping[str, Any]],
    landmark_config: landmarks.LandmarkConfig,
    title: str,
    config: ReportConfig = ReportConfig(),
) -> dict[str, Any]:
    """`report.html` of translated files (`slt.translate`): each file's translation,
    the clip the model was given and the file's own 85 points before normalisation
    and frame-rate reduction, at the file's frame rate.

    Each item: `id` (the file), `prompt`, `prediction`, `frames` ([T, 255] model
    frames) and, where the file was read, `source_points` [T, 85, 3],
    `source_present` [T, 85] and `source_fps`.
    """
    languages = metrics.identify_languages([i["prediction"] for i in items]) if items else []
    examples = []
    for k, (item, language) in enumerate(zip(items, languages)):
        source = None
        if item.get("source_points") is not None:
            source = encode_clip(item["source_points"], item["source_present"])
            source["fps"] = float(item.get("source_fps") or 30.0)
        examples.append(
            {
                "position": k,
                "why": "file",
                "id": item["id"],
                "prompt": item["prompt"],
                "prediction": item["prediction"],
                "target": None,
                "chrf": None,
                "diff": None,
                "language": language,
                "clip": encode_clip(*model_points(item["frames"], landmark_config)),
                "source": source,
            }
        )
    name = "translations"
    page = render_html(
        title,
        "files",
        {name: {"num_examples": len(items)}},
        {name: examples},
        {name: playback_fps(config, landmark_config)},
        None,
        None,
        notes=["No references: translations are not scored."],
    )
    storage.write_text(path, page)
    return {"bytes": len(page.encode("utf-8")), "examples": len(examples)}


# -- the skeleton ---------------------------------------------------------------------------

# Columns of the 85-point subset (`landmarks.YOUTUBE_ASL_SUBSET`): 6 pose points, 37 face
# points, then the left and the right hand (21 each).
_FACE0 = len(landmarks.YOUTUBE_ASL_POSE_INDICES)
_LEFT_HAND0 = _FACE0 + len(landmarks.YOUTUBE_ASL_FACE_INDICES)
_RIGHT_HAND0 = _LEFT_HAND0 + landmarks.HAND_POINTS


def _face(mesh_index: int) -> int:
    return _FACE0 + landmarks.YOUTUBE_ASL_FACE_INDICES.index(mesh_index)


# Shoulders, elbows, hips (pose points 11, 12, 13, 14, 23, 24), each elbow to its wrist.
POSE_EDGES = [[0, 1], [0, 2], [1, 3], [0, 4], [1, 5], [4, 5], [2, _LEFT_HAND0], [3, _RIGHT_HAND0]]
# Face mesh polylines through the subset's points: the oval from cheek to cheek, the
# outer and inner lips, the eyes, the eyebrows and the nose.
_FACE_LINES = (
    (93, 172, 152, 397, 323),
    (61, 39, 37, 0, 269, 291, 17, 181, 61),
    (81, 82, 13, 311, 14, 178, 81),
    (33, 159, 133, 33),
    (263, 386, 362, 263),
    (46, 52, 55),
    (276, 282, 285),
    (64, 4, 294),
)
FACE_EDGES = [[_face(a), _face(b)] for line in _FACE_LINES for a, b in zip(line, line[1:])]
# MediaPipe's hand connections (21 points: wrist, then four per finger).
_HAND = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
    (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (17, 18), (18, 19), (19, 20),
    (0, 17),
)  # fmt: skip
HAND_EDGES = [[h + a, h + b] for h in (_LEFT_HAND0, _RIGHT_HAND0) for a, b in _HAND]
# Point ranges [first, last) and colours: pose, face, left hand, right hand.
POINT_GROUPS = [
    [0, _FACE0, "#555555"],
    [_FACE0, _LEFT_HAND0, "#2a7fb8"],
    [_LEFT_HAND0, _RIGHT_HAND0, "#d9480f"],
    [_RIGHT_HAND0, landmarks.NUM_POINTS, "#2b8a3e"],
]

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table.metrics{border-collapse:collapse}table.metrics td,table.metrics th{border:1px solid #ccc;
padding:2px 8px;text-align:right}table.metrics td:first-child{text-align:left}
ul.signatures{font-size:.8em;color:#555}img.plot{max-width:100%;border:1px solid #eee}
img.plot.metrics{max-width:640px}
.example{border:1px solid #ddd;border-radius:4px;margin:.8em 0;padding:.5em}
.example.worst{border-left:4px solid #c92a2a}.example.best{border-left:4px solid #2b8a3e}
.example.random,.example.first,.example.file{border-left:4px solid #868e96}
.head{font-size:.9em;margin-bottom:.4em}.why{font-weight:bold;text-transform:uppercase}
.body{display:flex;gap:1em;align-items:flex-start}.clip canvas{border:1px solid #ccc;
background:#fafafa}.clip.none{width:260px;color:#777;font-style:italic}
.controls{display:flex;gap:.4em;align-items:center;font-size:.8em}.controls input{flex:1}
.caption{font-size:.75em;color:#666}.note{font-size:.8em;color:#a61e4d}
dl{margin:0;display:grid;grid-template-columns:7em 1fr;
gap:.2em .6em}dt{color:#666}dd{margin:0;font-family:ui-monospace,monospace;white-space:pre-wrap}
ins{background:#ffc9c9;text-decoration:none}del{background:#b2f2bb;text-decoration:none}
.empty{color:#a61e4d;font-weight:bold}
"""

# The player: inflates each clip, draws frame `i` (points present in the frame, edges
# whose two ends are present: a missing point is a gap), and advances the frames of
# every playing clip. A clip's `data-frame` and `data-points` hold the frame on screen
# and how many points it drew; `body[data-ready]` is set once every clip is decoded.
_JS = r"""
"use strict";
const REPORT = JSON.parse(document.getElementById("report-data").textContent);
const SK = REPORT.skeleton;
async function inflate(b64) {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  const planes = new Uint8Array(await new Response(stream).arrayBuffer());
  const n = planes.length / 2, out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const z = (planes[i] << 8) | planes[n + i];
    out[i] = ((z >>> 1) ^ -(z & 1)) & 0xffff;  // zigzag back to a (wrapping) delta
  }
  return out;
}
function decode(clip, deltas) {
  const T = clip.frames, S = SK.points * 2, codes = new Uint16Array(S * T);
  for (let s = 0; s < S; s++) {
    let v = 0;
    for (let t = 0; t < T; t++) { v = (v + deltas[s * T + t]) & 0xffff; codes[t * S + s] = v; }
  }
  return codes;
}
class Player {
  constructor(el, clip, codes) {
    this.el = el; this.clip = clip; this.codes = codes; this.frame = 0; this.playing = true;
    this.canvas = el.querySelector("canvas"); this.ctx = this.canvas.getContext("2d");
    this.slider = el.querySelector("input"); this.counter = el.querySelector(".counter");
    this.button = el.querySelector("button.play"); this.last = null;
    this.button.addEventListener("click", () => this.toggle());
    this.slider.addEventListener("input", () => { this.playing = false;
      this.button.textContent = "play"; this.show(parseInt(this.slider.value, 10)); });
    this.show(0);
  }
  toggle() { this.playing = !this.playing; this.last = null;
    this.button.textContent = this.playing ? "pause" : "play"; }
  point(t, p) {
    const S = SK.points * 2, x = this.codes[t * S + 2 * p], y = this.codes[t * S + 2 * p + 1];
    if (x === SK.missing || y === SK.missing) return null;
    const W = this.canvas.width, pad = 10, size = W - 2 * pad, L = SK.levels;
    const ox = pad + (1 - this.clip.extent[0]) * size / 2;
    const oy = pad + (1 - this.clip.extent[1]) * size / 2;
    return [ox + x / L * size, oy + y / L * size];
  }
  show(t) {
    this.frame = t; this.el.dataset.frame = String(t); this.slider.value = String(t);
    this.counter.textContent = (t + 1) + " / " + this.clip.frames;
    const c = this.ctx, W = this.canvas.width, H = this.canvas.height;
    c.clearRect(0, 0, W, H);
    const pts = []; let drawn = 0;
    for (let p = 0; p < SK.points; p++) { pts.push(this.point(t, p)); if (pts[p]) drawn++; }
    this.el.dataset.points = String(drawn);
    if (!drawn) { c.fillStyle = "#a61e4d"; c.font = "13px sans-serif";
      c.fillText("no landmarks in this frame", 12, H / 2); return; }
    const line = (edges, colour, width) => {
      c.strokeStyle = colour; c.lineWidth = width; c.beginPath();
      for (const [a, b] of edges) { if (pts[a] && pts[b]) {
        c.moveTo(pts[a][0], pts[a][1]); c.lineTo(pts[b][0], pts[b][1]); } }
      c.stroke();
    };
    line(SK.pose, "#888", 2); line(SK.face, "#2a7fb8", 1); line(SK.hands, "#444", 1.2);
    for (const [first, last, colour] of SK.groups) {
      c.fillStyle = colour;
      for (let p = first; p < last; p++) { if (pts[p]) { c.beginPath();
        c.arc(pts[p][0], pts[p][1], 1.8, 0, 2 * Math.PI); c.fill(); } }
    }
  }
  tick(now) {
    if (!this.playing) return;
    if (this.last === null) { this.last = now; return; }
    const step = 1000 / this.clip.fps;
    if (now - this.last >= step) {
      this.last = now;
      this.show((this.frame + 1) % this.clip.frames);
    }
  }
}
const players = [];
async function start() {
  for (const el of document.querySelectorAll(".clip[data-clip]")) {
    const clip = REPORT.clips[el.dataset.clip];
    players.push(new Player(el, clip, decode(clip, await inflate(clip.data))));
  }
  const loop = now => { for (const p of players) p.tick(now); requestAnimationFrame(loop); };
  requestAnimationFrame(loop);
  document.body.dataset.ready = String(players.length);
}
start().catch(e => { console.error("report player: " + e); });
"""
