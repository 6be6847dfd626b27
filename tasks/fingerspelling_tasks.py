"""seqio tasks over the embedded fingerspelling corpus (`tasks/fingerspelling.py`).

One SLT task per sign language, `fingerspelling_slt_<sign>_<spoken>` (prompt
`<slt> <sign> <spoken>`), and the mixture `fingerspelling_slt` of all of them.
Registering touches no file: the letter recordings are read when a dataset is
first built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import seqio
import tensorflow as tf

from slt import features, landmarks
from tasks import fingerspelling, languages, preprocessors

# Each training word is composed this many times, each time with other speeds,
# transitions and perturbations; eval splits use one fixed composition per word.
TRAIN_VARIANTS = 64
CORPUS_SEED = 0
# Clips composed per Python call (bench/input_pipeline.py); the order is unchanged.
COMPOSE_CHUNK = 16

# The 19 lexicons of spoken-to-signed 0.4.0 with their own recordings. Fixed here so
# that registering needs no disk access; a test checks it against the package.
SIGN_TO_SPOKEN = {
    "ase": "en",
    "asq": "de",
    "bzs": "pt",
    "csq": "hr",
    "cse": "cs",
    "eso": "et",
    "gsg": "de",
    "gss": "el",
    "ise": "it",
    "jos": "ar",
    "lls": "lt",
    "mfs": "es",
    "psr": "pt",
    "sgg": "de",
    "ssp": "es",
    "svk": "sk",
    "swl": "sv",
    "tsm": "tr",
    "ukl": "uk",
}
MIXTURE = "fingerspelling_slt"
# Task name -> the landmark preprocessing its frames go through (a function, so
# statistics are computed only when a job needs them).
LANDMARK_CONFIGS: dict[str, Callable[[], landmarks.LandmarkConfig]] = {}


def task_name(sign_language: str) -> str:
    return f"fingerspelling_slt_{sign_language}_{SIGN_TO_SPOKEN[sign_language]}"


@functools.cache
def standardized_config(
    corpus_seed: int = CORPUS_SEED, clips_per_language: int = 64
) -> landmarks.LandmarkConfig:
    """The default preprocessing plus per-feature statistics of training clips.

    Pooled over all 19 languages (so every task shares one config) and computed from
    training words only, on first use; registering stays free of disk access.
    """
    clips = []
    for sign_language in SIGN_TO_SPOKEN:
        lexicon = fingerspelling.load_lexicon(sign_language)
        words = fingerspelling.word_splits(sign_language, seed=corpus_seed)[0]["train"]
        rng = np.random.default_rng(corpus_seed)
        for word in rng.choice(words, size=min(clips_per_language, len(words)), replace=False):
            clips.append(fingerspelling.compose_clip(lexicon, lexicon.spell(word), rng))
    mean, std = landmarks.feature_statistics(clips)
    return landmarks.LandmarkConfig(feature_mean=mean, feature_std=std)


class WordClipDataSource(seqio.DataSource):
    """The composed clips of one sign language's split: (word, variant) pairs, each
    composed into frames on the fly.

    It shards by itself, before composing: a host that reads shard i of n composes
    only every n-th clip (seqio's fallback for other sources, `Dataset.shard` after
    the source, would compose every clip on every host). Same examples, same order.
    """

    def __init__(
        self, sign_language: str, corpus_seed: int, config: landmarks.LandmarkConfig | None
    ):
        self.sign_language, self.corpus_seed, self.config = sign_language, corpus_seed, config
        super().__init__(
            splits=fingerspelling.SPLITS, num_input_examples=None, caching_permitted=False
        )

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> list[str]:
        return [split]

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length=None,
        use_cached: bool = False,
        num_epochs: int | None = 1,
    ) -> tf.data.Dataset:
        # The Task shuffles examples; composition is seeded per word and variant.
        del shuffle, seed, sequence_length, use_cached, num_epochs
        sign_language, corpus_seed = self.sign_language, self.corpus_seed
        config = self.config or standardized_config(corpus_seed)
        words = fingerspelling.word_splits(sign_language, seed=corpus_seed)[0][split]
        if not words:
            raise ValueError(f"the {sign_language} fingerspelling corpus has no {split} words.")
        num_variants = TRAIN_VARIANTS if split == "train" else 1
        # Variant-major order: every word once before any word twice.
        word_column = np.tile(np.asarray(words, dtype=object), num_variants)
        variant_column = np.repeat(np.arange(num_variants), len(words))
        # Eval variants are numbered apart from training ones, so no clip is shared.
        variant_column = variant_column + (0 if split == "train" else 10**6)
        spoken = SIGN_TO_SPOKEN[sign_language]
        prompt = languages.prompt("slt", sign_language, spoken)

        def compose(words: np.ndarray, variants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            clips = [
                fingerspelling.clip_frames(
                    sign_language,
                    word.decode("utf-8"),
                    int(variant),
                    seed=corpus_seed,
                    config=config,
                )
                for word, variant in zip(words, variants)
            ]
            return (np.concatenate(clips), np.asarray([clip.shape[0] for clip in clips], np.int64))

        def to_examples(words, variants):
            # One Python call composes a chunk of clips: a call per clip cost about as
            # much as composing it (tf.numpy_function overhead).
            frames, lengths = tf.numpy_function(
                compose, [words, variants], [tf.float32, tf.int64], stateful=False
            )
            frames.set_shape([None, landmarks.FRAME_DIM])
            lengths.set_shape([None])
            example_ids = tf.strings.join(
                [sign_language, "/", words, "/", tf.strings.as_string(variants)]
            )
            return {
                features.LANDMARKS: tf.RaggedTensor.from_row_lengths(frames, lengths),
                features.INPUTS: tf.fill(tf.shape(words), prompt),
                features.TARGETS: words,
                "id": example_ids,
            }

        ds = tf.data.Dataset.from_tensor_slices(
            (tf.constant(word_column.astype(str)), tf.constant(variant_column, tf.int64))
        )
        if shard_info is not None and shard_info.num_shards > 1:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        ds = ds.batch(COMPOSE_CHUNK).map(
            to_examples, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        # Unbatched frames are typed as 0-ragged-dimension RaggedTensors; make them
        # plain tensors, as every other source yields (mixtures need equal specs).
        return ds.unbatch().map(
            lambda ex: {**ex, features.LANDMARKS: tf.convert_to_tensor(ex[features.LANDMARKS])}
        )


def register(
    corpus_seed: int = CORPUS_SEED, config: landmarks.LandmarkConfig | None = None, suffix: str = ""
) -> None:
    """Registers the per-language tasks and their mixture (names get `suffix`).

    `config=None` uses `standardized_config(corpus_seed)`.
    """
    output_features = features.task_output_features()
    names = []
    for sign_language in SIGN_TO_SPOKEN:
        name = task_name(sign_language) + suffix
        names.append(name)
        LANDMARK_CONFIGS[name] = (
            functools.partial(standardized_config, corpus_seed)
            if config is None
            else (lambda c=config: c)
        )
        seqio.TaskRegistry.add(
            name,
            source=WordClipDataSource(sign_language, corpus_seed, config),
            preprocessors=[
                preprocessors.tokenize_text,
                seqio.preprocessors.append_eos_after_trim,
            ],
            output_features=output_features,
            shuffle_buffer_size=2048,
        )
    seqio.MixtureRegistry.add(MIXTURE + suffix, names, default_rate=1.0)


if MIXTURE not in seqio.MixtureRegistry.names():
    register()
