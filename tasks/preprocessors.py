"""seqio preprocessors shared by the tasks."""
from __future__ import annotations

import seqio
import tensorflow as tf


def tokenize_text(dataset: tf.data.Dataset,
                  output_features: seqio.preprocessors.OutputFeaturesType) -> tf.data.Dataset:
    """Tokenizes the text features only, keeping `<name>_pretokenized` copies.

    `seqio.preprocessors.tokenize` would also "encode" the landmark frames with their
    pass-through vocabulary and copy them; frames are large, so we leave them alone.
    """
    text_features = {name: feature for name, feature in output_features.items()
                     if not isinstance(feature, seqio.ContinuousFeature)}
    return seqio.preprocessors.tokenize(dataset, text_features, copy_pretokenized=True)
