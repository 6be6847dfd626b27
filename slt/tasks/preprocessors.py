"""seqio preprocessors shared by the tasks."""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf

from slt.data import features


def tokenize_text(
    dataset: tf.data.Dataset, output_features: seqio.preprocessors.OutputFeaturesType
) -> tf.data.Dataset:
    """Tokenizes the text features only, keeping `<name>_pretokenized` copies.

    `seqio.preprocessors.tokenize` would also "encode" the landmark frames with their
    pass-through vocabulary and copy them; frames are large, so we leave them alone.
    """
    text_features = {
        name: feature
        for name, feature in output_features.items()
        if not isinstance(feature, seqio.ContinuousFeature)
    }
    return seqio.preprocessors.tokenize(dataset, text_features, copy_pretokenized=True)


def count_truncation(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int] | None,
    output_features: seqio.preprocessors.OutputFeaturesType,
) -> tf.data.Dataset:
    """Counts what seqio's trim will cut (`slt.data.features.TRUNCATION`); changes nothing.

    Place it just before `append_eos_after_trim`: a feature with EOS keeps length - 1
    tokens of its own, frames keep `length` rows.
    """
    if not sequence_length:
        return dataset
    limits = {}
    for key, length in sequence_length.items():
        if key in output_features and length is not None:
            add_eos = getattr(output_features[key], "add_eos", False)
            limits[key] = length - 1 if add_eos else length
    return dataset.map(
        lambda ex: features.count_cuts(ex, limits, "task"), num_parallel_calls=tf.data.AUTOTUNE
    )
