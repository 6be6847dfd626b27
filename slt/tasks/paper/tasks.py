"""Task factories of the paper: SLT, alignment, MT (both directions), augmented SLT.

Each factory registers one seqio Task over a data source (`slt/tasks/sources.py`); every
task yields the same features (`slt.data.features.task_output_features`), so any of them
mix in one batch:

  SLT            landmarks -> caption.              inputs `<slt> <sign> <spoken>`
    timed        landmarks -> every caption of the clip in order, each after its
                 start and end frame: `12 40 first caption <sep> 41 77 second caption`
  alignment      landmarks + caption texts -> each caption's start and end frame.
                 inputs  `<align> <sign> <spoken> first caption <sep> second caption`
                 targets `12 40 <sep> 41 77`
  MT             text -> text, both directions of one parallel source.
                 inputs `<mt> <src> <tgt> source sentence`, landmarks empty [0, 255]
  augmented SLT  landmarks -> the caption machine-translated into language X
                 (a translations file keyed by caption id, or a manifest column).
                 inputs `<slt> <sign> <X>`

Frame numbers are indices into the model's frames (after frame-rate reduction), the
end exclusive, written as decimal text. A clip with one caption and no timestamps
counts as one caption spanning all its frames. Captions that end after the frame
length of the job (`task_feature_lengths["landmarks"]`) are dropped from timed and
alignment examples and counted in `slt.data.features.TRUNCATION` as `captions`; a clip
left with none is dropped and counted as `clips_without_captions`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from slt.data import features, landmarks
from slt.tasks import languages, preprocessors, sources

SEPARATOR = " <sep> "
# Task name -> the landmark preprocessing its frames go through, for every registered
# task that reads frames (`tasks.landmark_config`). A function, so that statistics are
# computed only when a job needs them.
LANDMARK_CONFIGS: dict[str, Callable[[], landmarks.LandmarkConfig]] = {}

# ------------------------------------------------------------------------- formats


def format_alignment_target(spans: Sequence[tuple[int, int]]) -> str:
    return SEPARATOR.join(f"{s} {e}" for s, e in spans)


def parse_alignment_target(text: str) -> list[tuple[int, int]] | None:
    """`12 40 <sep> 41 77` -> [(12, 40), (41, 77)]; None if it does not parse."""
    spans = []
    for part in text.split(SEPARATOR.strip()):
        match = re.fullmatch(r"\s*(\d+)\s+(\d+)\s*", part)
        if not match:
            return None
        spans.append((int(match.group(1)), int(match.group(2))))
    return spans


def format_timed_captions(captions: Sequence[tuple[int, int, str]]) -> str:
    return SEPARATOR.join(f"{s} {e} {text}" for s, e, text in captions)


def parse_timed_captions(text: str) -> list[tuple[int, int, str]] | None:
    """`12 40 hello <sep> 41 77 world` -> [(12, 40, "hello"), (41, 77, "world")]."""
    out = []
    for part in text.split(SEPARATOR.strip()):
        match = re.fullmatch(r"\s*(\d+)\s+(\d+)\s+(.*?)\s*", part, flags=re.S)
        if not match:
            return None
        out.append((int(match.group(1)), int(match.group(2)), match.group(3)))
    return out


# ------------------------------------------------------------------------- counting


def _drop_empty_targets(dataset: tf.data.Dataset, reason: str) -> tf.data.Dataset:
    """Drops examples with an empty target, counted in `sources.SKIPPED` as `reason`."""

    def keep(example):
        nonempty = tf.strings.length(example[features.TARGETS]) > 0
        return tf.cond(
            nonempty,
            lambda: tf.constant(True),
            lambda: tf.numpy_function(sources.SKIPPED(reason), [nonempty], tf.bool, stateful=True),
        )

    return dataset.filter(keep)


# --------------------------------------------------------------------- record maps


def _prompt(task: str, record, fixed: tuple[str, str] | None) -> tf.Tensor:
    if fixed is not None:
        return tf.constant(languages.prompt(task, *fixed))
    return languages.prompt_tensor(task, record["sign_language"], record["spoken_language"])


def _captions(record):
    """Caption texts, starts and ends; one caption over the whole clip if none."""
    texts = record["caption_texts"]
    has = tf.size(texts) > 0
    num_frames = tf.cast(tf.shape(record["landmarks"])[0], tf.int64)
    texts = tf.cond(has, lambda: texts, lambda: tf.reshape(record["text"], [1]))
    starts = tf.cond(has, lambda: record["caption_start_frames"], lambda: tf.zeros([1], tf.int64))
    ends = tf.cond(has, lambda: record["caption_end_frames"], lambda: tf.reshape(num_frames, [1]))
    return texts, starts, ends


def _fit_captions(record, max_frames: int | None):
    """Captions that end within the first max_frames frames (the rest counted)."""
    texts, starts, ends = _captions(record)
    if max_frames is None:
        return texts, starts, ends
    keep = ends <= max_frames
    record_cut = tf.reduce_sum(tf.cast(tf.logical_not(keep), tf.int64))
    done = tf.cond(
        record_cut > 0,
        lambda: tf.numpy_function(
            lambda n: (
                features.TRUNCATION.record({"captions": int(n)}, "captions past the frame length"),
                np.int64(0),
            )[1],
            [record_cut],
            tf.int64,
            stateful=True,
        ),
        lambda: tf.constant(0, tf.int64),
    )
    with tf.control_dependencies([done]):
        keep = tf.identity(keep)
    return tf.boolean_mask(texts, keep), tf.boolean_mask(starts, keep), tf.boolean_mask(ends, keep)


def _example(frames, inputs, targets, record_id, signed_text=None):
    example = {
        features.LANDMARKS: frames,
        features.INPUTS: inputs,
        features.TARGETS: targets,
        "id": record_id,
    }
    if signed_text is not None:
        example[features.SIGNED_TEXT] = signed_text
    return example


def _signed_text(record, wanted: bool):
    """What a one-caption clip signs, for tasks registered with `signed_text=True`: its
    caption (timed SLT joins the captions kept with their frames itself)."""
    return record["text"] if wanted else None


def slt_preprocessor(
    fixed_languages: tuple[str, str] | None, timed: bool, signed_text: bool = False
):
    def preprocess(
        dataset: tf.data.Dataset, sequence_length: Mapping[str, int] | None = None
    ) -> tf.data.Dataset:
        max_frames = (sequence_length or {}).get(features.LANDMARKS)

        def to_example(record):
            prompt = _prompt("slt", record, fixed_languages)
            if not timed:
                return _example(
                    record["landmarks"],
                    prompt,
                    record["text"],
                    record["id"],
                    _signed_text(record, signed_text),
                )
            texts, starts, ends = _fit_captions(record, max_frames)
            parts = tf.strings.join(
                [tf.strings.as_string(starts), " ", tf.strings.as_string(ends), " ", texts]
            )
            return _example(
                record["landmarks"],
                prompt,
                tf.strings.reduce_join(parts, separator=SEPARATOR),
                record["id"],
                # The captions kept with their frames, not those cut with the clip.
                tf.strings.reduce_join(texts, separator=" ") if signed_text else None,
            )

        ds = dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return _drop_empty_targets(ds, "clips_without_captions") if timed else ds

    return preprocess


def alignment_preprocessor(fixed_languages: tuple[str, str] | None):
    def preprocess(
        dataset: tf.data.Dataset, sequence_length: Mapping[str, int] | None = None
    ) -> tf.data.Dataset:
        max_frames = (sequence_length or {}).get(features.LANDMARKS)

        def to_example(record):
            texts, starts, ends = _fit_captions(record, max_frames)
            inputs = tf.strings.join(
                [
                    _prompt("align", record, fixed_languages),
                    " ",
                    tf.strings.reduce_join(texts, separator=SEPARATOR),
                ]
            )
            spans = tf.strings.join([tf.strings.as_string(starts), " ", tf.strings.as_string(ends)])
            return _example(
                record["landmarks"],
                inputs,
                tf.strings.reduce_join(spans, separator=SEPARATOR),
                record["id"],
            )

        return _drop_empty_targets(
            dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True),
            "clips_without_captions",
        )

    return preprocess


def mt_preprocessor(directions: Sequence[str], signed_text: bool = False):
    for d in directions:
        if d not in ("forward", "backward"):
            raise ValueError(f"MT directions are 'forward' and/or 'backward', got {d!r}.")

    def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
        empty = tf.zeros([0, landmarks.FRAME_DIM], tf.float32)

        def one(src, tgt, src_lang, tgt_lang, record_id, tag):
            inputs = tf.strings.join([languages.prompt_tensor("mt", src_lang, tgt_lang), " ", src])
            return _example(
                empty,
                inputs,
                tgt,
                tf.strings.join([record_id, tag]),
                tf.constant("") if signed_text else None,  # nothing is signed
            )

        def both(record):
            examples = []
            if "forward" in directions:
                examples.append(
                    one(
                        record["source_text"],
                        record["target_text"],
                        record["source_language"],
                        record["target_language"],
                        record["id"],
                        ">",
                    )
                )
            if "backward" in directions:
                examples.append(
                    one(
                        record["target_text"],
                        record["source_text"],
                        record["target_language"],
                        record["source_language"],
                        record["id"],
                        "<",
                    )
                )
            stacked = {k: tf.stack([e[k] for e in examples]) for k in examples[0]}
            return tf.data.Dataset.from_tensor_slices(stacked)

        return dataset.flat_map(both)

    return preprocess


def augmented_slt_preprocessor(
    table_fn: Callable[[], tf.lookup.StaticHashTable],
    target_language: str,
    key_field: str,
    fixed_sign_language: str | None,
    signed_text: bool = False,
):
    def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
        table = table_fn()

        def to_example(record):
            sign = (
                tf.constant(fixed_sign_language) if fixed_sign_language else record["sign_language"]
            )
            prompt = languages.prompt_tensor("slt", sign, target_language)
            return _example(
                record["landmarks"],
                prompt,
                table.lookup(record[key_field]),
                record["id"],
                _signed_text(record, signed_text),  # the clip's own caption
            )

        return _drop_empty_targets(
            dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True),
            f"no {target_language} translation",
        )

    return preprocess


# ------------------------------------------------------------------------ metrics


def bleu_chrf(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """seqio metric function: sacrebleu corpus BLEU and chrF (default signatures)."""
    from slt.evaluation import metrics

    result = metrics.translation_metrics([str(p) for p in predictions], [str(t) for t in targets])
    return {"bleu": result["bleu"], "chrf": result["chrf"]}


def translation_metric_fns(target_language: str | None = None) -> list[Callable]:
    """Metric functions of an evaluation task: BLEU and chrF; with the task's one
    target language also `slt.evaluation.metrics.language_metrics` (language accuracy, empty
    rate). Tasks whose examples go into several languages (MT in both directions)
    pass None."""
    from slt.evaluation import metrics

    fns: list[Callable] = [bleu_chrf]
    if target_language is not None:
        if target_language not in metrics.LANGUAGE_ID_CANDIDATES:
            raise ValueError(
                f"{target_language!r} is not among the language identifier's candidates "
                f"(slt.evaluation.metrics.LANGUAGE_ID_CANDIDATES); add it there to score the task."
            )
        fns.append(functools.partial(metrics.language_metrics, target_language=target_language))
    return fns


def _decode_text(output, example=None, is_target=False):
    del example, is_target
    return output.decode("utf-8") if isinstance(output, bytes) else output


# ------------------------------------------------------------------------ factories


def _register(
    name: str,
    source,
    preprocess,
    output_features,
    metric_fns,
    splits,
    landmark_config,
    shuffle_buffer_size: int,
    signed_text: bool = False,
) -> seqio.Task:
    if signed_text and output_features is not None:
        raise ValueError(f"task {name}: give signed_text=True or output_features, not both.")
    if landmark_config is not None:
        LANDMARK_CONFIGS[name] = landmark_config
    return seqio.TaskRegistry.add(
        name,
        source=sources.SeqioSource(source, splits),
        preprocessors=[
            preprocess,
            preprocessors.tokenize_text,
            preprocessors.count_truncation,
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=output_features or features.task_output_features(signed_text=signed_text),
        postprocess_fn=_decode_text if metric_fns else None,
        metric_fns=list(metric_fns or []),
        shuffle_buffer_size=shuffle_buffer_size,
    )


def add_slt_task(
    name: str,
    source: sources.ClipSource,
    *,
    languages_: tuple[str, str] | None = None,
    timed: bool = False,
    output_features: Mapping[str, seqio.Feature] | None = None,
    metric_fns: Sequence[Callable] = (),
    splits: Sequence[str] | None = None,
    landmark_config: Callable[[], landmarks.LandmarkConfig] | None = None,
    shuffle_buffer_size: int = 2048,
    signed_text: bool = False,
) -> seqio.Task:
    """SLT: frames -> caption (`timed`: every caption of the clip with its frames).

    `languages_=(sign, spoken)` fixes the prompt; None reads each record's languages.
    `signed_text` adds the `signed_text` feature (the clip's captions), the labels of a
    CTC loss on the source side (`slt.LossConfig.encoder_ctc_targets`).
    """
    if languages_ is not None:
        languages.prompt("slt", *languages_)  # checks the codes
    return _register(
        name,
        source,
        slt_preprocessor(languages_, timed, signed_text),
        output_features,
        metric_fns,
        splits,
        landmark_config,
        shuffle_buffer_size,
        signed_text,
    )


def add_alignment_task(
    name: str,
    source: sources.ClipSource,
    *,
    languages_: tuple[str, str] | None = None,
    output_features: Mapping[str, seqio.Feature] | None = None,
    splits: Sequence[str] | None = None,
    landmark_config: Callable[[], landmarks.LandmarkConfig] | None = None,
    shuffle_buffer_size: int = 2048,
) -> seqio.Task:
    """Alignment: frames + caption texts -> each caption's start and end frame."""
    if languages_ is not None:
        languages.prompt("align", *languages_)
    return _register(
        name,
        source,
        alignment_preprocessor(languages_),
        output_features,
        (),
        splits,
        landmark_config,
        shuffle_buffer_size,
    )


def add_mt_task(
    name: str,
    source: sources.TextPairSource,
    *,
    directions: Sequence[str] = ("forward", "backward"),
    output_features: Mapping[str, seqio.Feature] | None = None,
    metric_fns: Sequence[Callable] = (),
    splits: Sequence[str] | None = None,
    shuffle_buffer_size: int = 4096,
    signed_text: bool = False,
) -> seqio.Task:
    """MT: each sentence pair gives `<mt> <src> <tgt> src` -> tgt and the reverse.
    `signed_text` adds an empty `signed_text` feature, so the task mixes with SLT
    tasks that have one."""
    return _register(
        name,
        source,
        mt_preprocessor(tuple(directions), signed_text),
        output_features,
        metric_fns,
        splits,
        None,
        shuffle_buffer_size,
        signed_text,
    )


def add_augmented_slt_task(
    name: str,
    source: sources.ClipSource,
    target_language: str,
    translations,
    *,
    sign_language: str | None = None,
    key_field: str = "id",
    output_features: Mapping[str, seqio.Feature] | None = None,
    metric_fns: Sequence[Callable] = (),
    splits: Sequence[str] | None = None,
    landmark_config: Callable[[], landmarks.LandmarkConfig] | None = None,
    shuffle_buffer_size: int = 2048,
    signed_text: bool = False,
) -> seqio.Task:
    """Augmented SLT: frames -> the caption in `target_language`; `signed_text` adds
    the clip's own caption (what was signed) as the `signed_text` feature.

    `translations` has `lookup() -> tf.lookup.StaticHashTable` from `key_field` of the
    clip record (the caption id by default) to the translation, e.g. a
    `sources.TranslationTable`. Clips without one are dropped and counted in `sources.SKIPPED`.
    """
    languages.prompt("slt", sign_language or "ase", target_language)
    return _register(
        name,
        source,
        augmented_slt_preprocessor(
            translations.lookup, target_language, key_field, sign_language, signed_text
        ),
        output_features,
        metric_fns,
        splits,
        landmark_config,
        shuffle_buffer_size,
        signed_text,
    )
