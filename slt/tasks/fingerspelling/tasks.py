"""seqio tasks over the embedded fingerspelling corpus (`slt/tasks/fingerspelling/corpus.py`).

One SLT task per sign language, `fingerspelling_slt_<sign>_<spoken>` (prompt
`<slt> <sign> <spoken>`), and the mixture `fingerspelling_slt` of all of them.
Registering touches no file: the letter recordings are read when a dataset is
first built.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import numpy as np
import seqio

from slt.data import landmarks
from slt.io import pose_files
from slt.tasks.fingerspelling import cache as corpus_cache
from slt.tasks.fingerspelling import corpus as fingerspelling
from slt.tasks.fingerspelling import sources as fingerspelling_sources
from slt.tasks.paper import tasks as paper_tasks

# Each training word is composed this many times, each time with other speeds,
# transitions and perturbations; eval splits use one fixed composition per word.
TRAIN_VARIANTS = 64
CORPUS_SEED = 0

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


def task_name(sign_language: str) -> str:
    return f"fingerspelling_slt_{sign_language}_{SIGN_TO_SPOKEN[sign_language]}"


@functools.cache
def standardized_config(
    corpus_seed: int = CORPUS_SEED, clips_per_language: int = 64
) -> landmarks.LandmarkConfig:
    """The default preprocessing plus per-feature statistics of training clips.

    Pooled over all 19 languages (so every task shares one config) and computed from
    training words only, on first use; registering stays free of disk access. The
    statistics are kept in the corpus cache (`slt/tasks/fingerspelling/cache.py`), keyed by every
    input of `corpus_feature_statistics`, so only the first process on a machine computes them.
    """
    mean, std = corpus_cache.cached(
        "fingerspelling_feature_statistics",
        statistics_key(corpus_seed, clips_per_language),
        lambda: corpus_feature_statistics(corpus_seed, clips_per_language),
    )
    return landmarks.LandmarkConfig(feature_mean=tuple(mean), feature_std=tuple(std))


def corpus_feature_statistics(
    corpus_seed: int = CORPUS_SEED, clips_per_language: int = 64
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature (mean, std) of `clips_per_language` training clips of each language,
    computed (never read from the cache)."""
    clips = []
    for sign_language in SIGN_TO_SPOKEN:
        lexicon = fingerspelling.load_lexicon(sign_language)
        words = fingerspelling.word_splits(sign_language, seed=corpus_seed)[0]["train"]
        rng = np.random.default_rng(corpus_seed)
        for word in rng.choice(words, size=min(clips_per_language, len(words)), replace=False):
            clips.append(fingerspelling.compose_clip(lexicon, lexicon.spell(word), rng))
    return landmarks.feature_statistics(clips)


def statistics_key(corpus_seed: int, clips_per_language: int) -> dict[str, Any]:
    """Everything `corpus_feature_statistics` depends on: its arguments, the lexicons, the
    recordings (index and files), the CLDR words (babel), the code that composes and
    normalises clips, and the packages whose numbers it uses."""
    recordings = [os.path.join(fingerspelling.lexicon_dir(), "index.csv")]  # local: package
    recordings += [path for path, _, _, _ in fingerspelling._index()]
    return {
        "corpus_seed": corpus_seed,
        "clips_per_language": clips_per_language,
        "sign_to_spoken": list(SIGN_TO_SPOKEN.items()),  # in the order clips are pooled
        "landmark_config": repr(landmarks.LandmarkConfig()),
        "augment_config": repr(fingerspelling.AugmentConfig()),
        "recordings": corpus_cache.files_digest(recordings),
        "code": corpus_cache.source_digest(
            [sys.modules[__name__], fingerspelling, landmarks, pose_files]
        ),
        "packages": corpus_cache.package_versions(
            "numpy", "babel", "spoken-to-signed", "pose-format"
        ),
    }


def register(
    corpus_seed: int = CORPUS_SEED, config: landmarks.LandmarkConfig | None = None, suffix: str = ""
) -> None:
    """Registers the per-language tasks and their mixture (names get `suffix`).

    `config=None` uses `standardized_config(corpus_seed)`.
    """
    names = []
    for sign_language, spoken_language in SIGN_TO_SPOKEN.items():
        name = task_name(sign_language) + suffix
        landmark_config = (
            functools.partial(standardized_config, corpus_seed)
            if config is None
            else (lambda c=config: c)
        )
        # Clips in variant-major order; the task's 2,048-example buffer shuffles them.
        source = fingerspelling_sources.WordClipSource(
            sign_language,
            spoken_language,
            corpus_seed,
            landmark_config,
            TRAIN_VARIANTS,
            shuffle_words=False,
        )
        paper_tasks.add_slt_task(
            name,
            source,
            languages_=(sign_language, spoken_language),
            landmark_config=landmark_config,
            shuffle_buffer_size=2048,
        )
        names.append(name)
    seqio.MixtureRegistry.add(MIXTURE + suffix, names, default_rate=1.0)


if MIXTURE not in seqio.MixtureRegistry.names():
    register()
