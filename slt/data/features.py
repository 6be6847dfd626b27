"""The data contract between tasks and the model, in one place.

Every task yields (so that SLT and text-only examples can share a batch):
  landmarks: float32 [T, 255] frames; [0, 255] for text-only tasks.
  inputs:    int32 tokens of the text part of the encoder input (the task prompt,
             plus e.g. the source sentence for MT).
  targets:   int32 tokens.

`LandmarkEncDecFeatureConverter` turns those into fixed-shape model features:
  encoder_input_tokens  int32 [P]      encoder_landmarks      float32 [T, 255]
  encoder_landmark_mask int32 [T]      decoder_input_tokens   int32 [L]
  decoder_target_tokens int32 [L]      decoder_loss_weights   int32 [L]
The encoder reads the embedded `inputs` followed by the projected frames. Zero-padded
frames cannot be told from real ones, hence the explicit mask. The stock
`seqio.EncDecFeatureConverter` takes only int32 rank-1 inputs, so frames need this
converter; packing is not supported (seqio cannot pack rank-2 features).

Tasks registered with `signed_text=True` also yield
  signed_text: int32 tokens of what the clip signs (its own caption, the English word
             of a fingerspelled clip whatever the target language); empty for MT.
and a converter built with `ctc_targets=True` turns it into
  encoder_ctc_targets   int32 [L]
(as long as the targets), the labels of the encoder's CTC loss
(`slt.LossConfig.encoder_ctc_targets = "signed_text"`).

Text-only examples (MT) carry empty frames, `[0, 255]`: their mask is all zeros, so
they mix with SLT examples in one batch. What any length cut removes is counted, per
feature, in `TRUNCATION` (examples cut, and frames or tokens cut) and logged as the
count of cut examples reaches 1, 10, 100, ...: in the tasks before seqio trims
(`slt.tasks.preprocessors.count_truncation`), and in the converter when it is built with
`apply_length_check=False` (with the check, seqio refuses longer inputs instead).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import numpy as np
import seqio
import tensorflow as tf

from slt.data import landmarks as landmark_lib

log = logging.getLogger(__name__)

LANDMARKS = "landmarks"
INPUTS = "inputs"
TARGETS = "targets"
SIGNED_TEXT = "signed_text"

FeatureSpec = seqio.FeatureConverter.FeatureSpec


class TruncationStats:
    """Counts of what length cuts removed, per feature (thread-safe, process-wide)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.examples = 0  # examples with any feature cut
        self.examples_by_feature: dict[str, int] = {}
        self.amount_by_feature: dict[str, int] = {}  # frames or tokens cut
        self._next_log = 1

    def record(self, cuts: Mapping[str, int], where: str = "") -> None:
        cuts = {k: int(v) for k, v in cuts.items() if int(v) > 0}
        if not cuts:
            return
        with self._lock:
            self.examples += 1
            for key, amount in cuts.items():
                self.examples_by_feature[key] = self.examples_by_feature.get(key, 0) + 1
                self.amount_by_feature[key] = self.amount_by_feature.get(key, 0) + amount
            if self.examples >= self._next_log:
                self._next_log *= 10
                log.warning("truncation%s: %s", f" ({where})" if where else "", self.summary())

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "examples": self.examples,
                "examples_by_feature": dict(self.examples_by_feature),
                "amount_by_feature": dict(self.amount_by_feature),
            }

    def summary(self) -> str:
        parts = [
            f"{key}: {self.examples_by_feature[key]} examples, "
            f"{self.amount_by_feature[key]} {'frames' if key == LANDMARKS else 'tokens'}"
            for key in sorted(self.examples_by_feature)
        ]
        return f"{self.examples} examples cut so far ({'; '.join(parts)})"

    def reset(self) -> None:
        with self._lock:
            self.examples, self._next_log = 0, 1
            self.examples_by_feature, self.amount_by_feature = {}, {}


TRUNCATION = TruncationStats()


def count_cuts(
    features: dict,
    max_lengths: Mapping[str, int],
    where: str = "",
    stats: TruncationStats | None = None,
) -> dict:
    """Records in `stats` how much of each feature exceeds its length (graph code).

    `max_lengths` maps feature -> the most rows it may keep. Returns `features` with
    the counting as a control dependency, so it runs inside tf.data map functions.
    """
    stats = stats or TRUNCATION
    keys = [k for k in sorted(max_lengths) if k in features]
    if not keys:
        return features
    cuts = tf.stack(
        [
            tf.maximum(tf.cast(tf.shape(features[k])[0], tf.int64) - int(max_lengths[k]), 0)
            for k in keys
        ]
    )

    def note(values):
        stats.record(dict(zip(keys, values.tolist())), where)
        return np.int64(0)

    done = tf.cond(
        tf.reduce_any(cuts > 0),
        lambda: tf.numpy_function(note, [cuts], tf.int64, stateful=True),
        lambda: tf.constant(0, tf.int64),
    )
    features = dict(features)
    with tf.control_dependencies([done]):
        features[keys[0]] = tf.identity(features[keys[0]])
    return features


def pipeline_options() -> tf.data.Options:
    """tf.data options for input pipelines: consecutive per-example maps run as one
    function (map fusion), saving a per-example overhead for each map (about half
    of the feature converter's cost). Same examples, same order."""
    options = tf.data.Options()
    options.experimental_optimization.map_fusion = True
    return options


def byte_vocabulary() -> seqio.Vocabulary:
    """ByT5's vocabulary: pad 0, EOS 1, UNK 2, then UTF-8 bytes + 3."""
    return seqio.ByteVocabulary()


def task_output_features(
    vocabulary: seqio.Vocabulary | None = None, signed_text: bool = False
) -> dict[str, seqio.Feature]:
    """The seqio output features every task declares (`signed_text`: also what the
    clip signs, the labels of a CTC loss on the source side)."""
    vocabulary = vocabulary or byte_vocabulary()
    output = {
        LANDMARKS: seqio.ContinuousFeature(dtype=tf.float32, rank=2),
        INPUTS: seqio.Feature(vocabulary, add_eos=True),
        TARGETS: seqio.Feature(vocabulary, add_eos=True),
    }
    if signed_text:
        output[SIGNED_TEXT] = seqio.Feature(vocabulary, add_eos=False)
    return output


class LandmarkEncDecFeatureConverter(seqio.FeatureConverter):
    """(landmarks, inputs, targets) -> padded encoder/decoder model features."""

    TASK_FEATURES = {
        LANDMARKS: FeatureSpec(dtype=tf.float32, rank=2),
        INPUTS: FeatureSpec(dtype=tf.int32),
        TARGETS: FeatureSpec(dtype=tf.int32),
    }
    MODEL_FEATURES = {
        "encoder_input_tokens": FeatureSpec(dtype=tf.int32),
        "encoder_landmarks": FeatureSpec(dtype=tf.float32, rank=2),
        "encoder_landmark_mask": FeatureSpec(dtype=tf.int32),
        "decoder_input_tokens": FeatureSpec(dtype=tf.int32),
        "decoder_target_tokens": FeatureSpec(dtype=tf.int32),
        "decoder_loss_weights": FeatureSpec(dtype=tf.int32),
    }
    PACKING_FEATURE_DTYPES = {}

    def __init__(
        self, pack: bool = False, bos_id: int = 0, ctc_targets: bool = False, **kwargs
    ):
        if pack:
            raise ValueError(
                "LandmarkEncDecFeatureConverter cannot pack: seqio packs only rank-1 "
                "features and frames are [T, 255]. Use pack=False."
            )
        self._bos_id = bos_id
        self._ctc_targets = ctc_targets
        if ctc_targets:
            # An instance attribute: seqio checks the output against MODEL_FEATURES.
            self.MODEL_FEATURES = {
                **type(self).MODEL_FEATURES,
                "encoder_ctc_targets": FeatureSpec(dtype=tf.int32),
            }
        super().__init__(pack=False, **kwargs)

    def _convert_features(
        self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
    ) -> tf.data.Dataset:
        def add_mask(features):
            features = dict(features)
            frames = tf.ensure_shape(features[LANDMARKS], [None, landmark_lib.FRAME_DIM])
            features[LANDMARKS] = frames
            features["landmark_mask"] = tf.ones(tf.shape(frames)[:1], tf.int32)
            return features

        if self._ctc_targets and SIGNED_TEXT not in ds.element_spec:
            raise ValueError(
                f"the CTC loss on the signed text needs a `{SIGNED_TEXT}` feature, and "
                f"these examples have only {sorted(ds.element_spec)}: train on tasks "
                "registered with signed_text=True (e.g. the study's experiment_e1_* "
                'mixtures), or set slt.LossConfig.encoder_ctc_targets = "targets".'
            )
        checked = dict(task_feature_lengths)
        if self._ctc_targets:
            checked[SIGNED_TEXT] = task_feature_lengths[TARGETS]
        ds = ds.map(add_mask, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(
            lambda f: count_cuts(f, checked, "feature converter"),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        lengths = dict(checked)
        lengths["landmark_mask"] = task_feature_lengths[LANDMARKS]
        ds = seqio.utils.trim_and_pad_dataset(ds, lengths)

        def to_model_features(features):
            targets = features[TARGETS]
            extra = {"encoder_ctc_targets": features[SIGNED_TEXT]} if self._ctc_targets else {}
            return {
                **extra,
                "encoder_input_tokens": features[INPUTS],
                "encoder_landmarks": features[LANDMARKS],
                "encoder_landmark_mask": features["landmark_mask"],
                "decoder_input_tokens": seqio.utils.make_autoregressive_inputs(
                    targets, bos_id=self._bos_id
                ),
                "decoder_target_tokens": targets,
                "decoder_loss_weights": seqio.non_padding_position(targets),
            }

        ds = ds.map(to_model_features, num_parallel_calls=tf.data.AUTOTUNE)
        # Per-example maps (these, the task's and seqio's validation) run fused.
        return ds.with_options(pipeline_options())

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
        frames = task_feature_lengths[LANDMARKS]
        return {
            "encoder_input_tokens": task_feature_lengths[INPUTS],
            "encoder_landmarks": frames,
            "encoder_landmark_mask": frames,
            "decoder_input_tokens": task_feature_lengths[TARGETS],
            "decoder_target_tokens": task_feature_lengths[TARGETS],
            "decoder_loss_weights": task_feature_lengths[TARGETS],
            **({"encoder_ctc_targets": task_feature_lengths[TARGETS]} if self._ctc_targets else {}),
        }
