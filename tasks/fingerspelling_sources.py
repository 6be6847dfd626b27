"""Offline sources over the embedded corpus, for every kind of paper task.

- `WordClipSource`: one composed clip per word (exactly the clips of the
  `fingerspelling_slt_*` tasks), optionally only the words of a given set.

Both clip sources shuffle the list of (words, variant) before composing any clip, so
their tasks need only a small shuffle buffer of clips (`CLIP_SHUFFLE_BUFFER`): a mixture
of dozens of composed tasks then starts in seconds, not after composing 2,048 clips
per task.
- `MultiWordClipSource`: 2-4 words of one split spelled in a row, with a pause of
  0.25-0.5 s between words, and each word's start and end frame as its caption
  timestamps (for alignment and timed SLT).
- `CldrParallelText`: MT pairs from CLDR (babel). The same territory, language,
  script or currency code, month or weekday named in two locales is a parallel
  pair ("Germany" / "Deutschland"). Pairs are split train/validation/test by a
  seeded hash of the CLDR key.
- `CldrTranslations`: for augmented SLT, a word of the sign language's spoken language
  -> the same CLDR entry's name in another language. Only single-word names map back
  to a key; a word that names several keys takes the first key in sorted order.

Babel's locale data is read when a dataset is built, never when tasks register.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence

import babel
import numpy as np
import seqio
import tensorflow as tf

from slt import landmarks
from tasks import fingerspelling, sources

PAUSE_FRAMES = (6, 12)  # at fingerspelling.BASE_FPS, between words of one clip
WORDS_PER_CLIP = (2, 4)
CLIP_SHUFFLE_BUFFER = 8


def _cldr_tables(locale: babel.Locale) -> dict[str, dict]:
    tables = {
        "territory": dict(locale.territories),
        "language": dict(locale.languages),
        "script": dict(locale.scripts),
        "currency": dict(locale.currencies),
    }
    for context in ("format", "stand-alone"):
        tables[f"month-{context}"] = dict(locale.months[context]["wide"])
        tables[f"day-{context}"] = dict(locale.days[context]["wide"])
    return tables


@functools.cache
def cldr_names(language: str) -> dict[str, str]:
    """CLDR key ("territory:DE", "month-format:1", ...) -> display name."""
    tables = _cldr_tables(babel.Locale.parse(language))
    return {
        f"{table}:{key}": str(name)
        for table, entries in tables.items()
        for key, name in entries.items()
        if str(name).strip()
    }


def _hash_split(text: str, seed: int, fractions=(0.8, 0.1)) -> str:
    u = int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "little") / 2**64
    return "train" if u < fractions[0] else "validation" if u < sum(fractions) else "test"


@functools.cache
def cldr_pairs(
    language_a: str, language_b: str, seed: int = 0
) -> dict[str, tuple[tuple[str, str, str], ...]]:
    """Split -> (key, name in a, name in b) for every CLDR key both locales name.

    Identical names in the two languages (e.g. many currency codes) are kept: MT
    learns to copy them too. A key is in one split for every language pair.
    """
    a, b = cldr_names(language_a), cldr_names(language_b)
    out = {s: [] for s in fingerspelling.SPLITS}
    for key in sorted(set(a) & set(b)):
        out[_hash_split(key, seed)].append((key, a[key], b[key]))
    return {s: tuple(v) for s, v in out.items()}


@functools.cache
def cldr_word_translations(source_language: str, target_language: str) -> dict[str, str]:
    """Single-word names in source_language -> the same key's name in target_language."""
    source, target = cldr_names(source_language), cldr_names(target_language)
    out: dict[str, str] = {}
    for key in sorted(source):
        word = source[key]
        if len(word.split()) == 1 and key in target and word not in out:
            out[word] = target[key]
    return out


class CldrParallelText(sources.TextPairSource):
    """CLDR parallel names of a language pair (both directions come from the MT task)."""

    def __init__(self, language_a: str, language_b: str, seed: int = 0):
        self.name = f"cldr_{language_a}_{language_b}"
        self.languages, self.seed = (language_a, language_b), seed

    def check(self, split):
        pass

    def num_examples(self, split):
        return len(cldr_pairs(*self.languages, self.seed)[split])

    def dataset(self, split, shuffle, seed, shard_info):
        rows = cldr_pairs(*self.languages, self.seed)[split]
        if not rows:
            raise ValueError(f"CLDR has no {split} pairs for {self.languages}.")
        a, b = self.languages
        ds = tf.data.Dataset.from_tensor_slices(
            {
                "source_text": tf.constant([r[1] for r in rows]),
                "target_text": tf.constant([r[2] for r in rows]),
                "source_language": tf.constant([a] * len(rows)),
                "target_language": tf.constant([b] * len(rows)),
                "id": tf.constant([f"cldr:{r[0]}" for r in rows]),
            }
        )
        return sources._shard_examples(ds, shard_info)


class CldrTranslations:
    """Word -> its CLDR name in `target_language` (an augmented-SLT translations table)."""

    def __init__(self, source_language: str, target_language: str):
        self.source_language, self.target_language = source_language, target_language

    def load(self) -> dict[str, str]:
        return cldr_word_translations(self.source_language, self.target_language)

    def lookup(self) -> tf.lookup.StaticHashTable:
        table = self.load()
        return tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(table)), tf.constant(list(table.values()))
            ),
            default_value="",
        )


def _empty_captions():
    return {
        "caption_texts": tf.zeros([0], tf.string),
        "caption_start_frames": tf.zeros([0], tf.int64),
        "caption_end_frames": tf.zeros([0], tf.int64),
    }


class WordClipSource(sources.ClipSource):
    """One composed clip per word and variant, as in `fingerspelling_tasks`."""

    def __init__(
        self,
        sign_language: str,
        spoken_language: str,
        corpus_seed: int,
        config: Callable[[], landmarks.LandmarkConfig],
        train_variants: int,
        only_words: Callable[[], set] | None = None,
    ):
        self.name = f"fingerspelling_{sign_language}"
        self.sign_language, self.spoken_language = sign_language, spoken_language
        self.corpus_seed, self.config, self.train_variants = corpus_seed, config, train_variants
        self.only_words = only_words

    def check(self, split):
        pass

    def words(self, split: str) -> tuple[str, ...]:
        words = fingerspelling.word_splits(self.sign_language, seed=self.corpus_seed)[0][split]
        if self.only_words is not None:
            keep = self.only_words()
            words = tuple(w for w in words if w in keep)
        return words

    def num_examples(self, split):
        return len(self.words(split)) * (self.train_variants if split == "train" else 1)

    def dataset(self, split, shuffle, seed, shard_info):
        words = self.words(split)
        if not words:
            raise ValueError(f"the {self.sign_language} corpus has no {split} words here.")
        variants = self.train_variants if split == "train" else 1
        word_column = np.tile(np.asarray(words, dtype=object), variants).astype(str)
        variant_column = np.repeat(np.arange(variants), len(words)) + (
            0 if split == "train" else 10**6
        )
        config, sign, seed_ = self.config(), self.sign_language, self.corpus_seed

        def compose(word, variant):
            return fingerspelling.clip_frames(
                sign, word.decode("utf-8"), int(variant), seed=seed_, config=config
            )

        def to_record(word, variant):
            frames = tf.numpy_function(compose, [word, variant], tf.float32, stateful=False)
            frames.set_shape([None, landmarks.FRAME_DIM])
            return {
                "landmarks": frames,
                "text": word,
                "sign_language": tf.constant(sign),
                "spoken_language": tf.constant(self.spoken_language),
                "id": tf.strings.join([sign, "/", word, "/", tf.strings.as_string(variant)]),
                **_empty_captions(),
            }

        if shuffle:  # a full permutation of the (cheap) words, before composing clips
            order = np.random.default_rng(seed).permutation(len(word_column))
            word_column, variant_column = word_column[order], variant_column[order]
        ds = tf.data.Dataset.from_tensor_slices(
            (tf.constant(word_column), tf.constant(variant_column, tf.int64))
        )
        ds = sources._shard_examples(ds, shard_info)
        return ds.map(to_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def multiword_clip(
    sign_language: str,
    words: Sequence[str],
    variant: int,
    seed: int,
    config: landmarks.LandmarkConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames [T, 255] of words spelled in a row, and [C, 2] start/end model frames.

    Word i covers model frames [start_i, end_i): the frames kept by the frame-rate
    reduction that fall in its letters (pauses belong to no word). Words cut off by
    `config.max_frames` get clipped or empty spans; the task drops those.
    """
    lexicon = fingerspelling.load_lexicon(sign_language)
    digest = hashlib.sha256(f"{seed}:{sign_language}:{' '.join(words)}:{variant}".encode())
    rng = np.random.default_rng(int.from_bytes(digest.digest()[:8], "little"))
    points, present, spans, t = [], [], [], 0
    for i, word in enumerate(words):
        spelled = lexicon.spell(word)
        if spelled is None:
            raise ValueError(f"{word!r} cannot be spelled with the {sign_language} lexicon.")
        p, m = fingerspelling.compose_clip(lexicon, spelled, rng)
        if i:
            pause = int(rng.integers(PAUSE_FRAMES[0], PAUSE_FRAMES[1] + 1))
            points.append(np.repeat(points[-1][-1:], pause, axis=0))
            present.append(np.repeat(present[-1][-1:], pause, axis=0))
            t += pause
        points.append(p)
        present.append(m)
        spans.append((t, t + p.shape[0]))
        t += p.shape[0]
    points_all, present_all = np.concatenate(points), np.concatenate(present)
    frames = landmarks.to_frames(points_all, present_all, config, fps=fingerspelling.BASE_FPS)
    kept = landmarks.frame_indices(points_all.shape[0], config, fingerspelling.BASE_FPS)
    kept = kept[: frames.shape[0]]
    bounds = np.asarray(
        [[np.searchsorted(kept, s), np.searchsorted(kept, e)] for s, e in spans], np.int64
    )
    return frames, bounds


class MultiWordClipSource(sources.ClipSource):
    """Clips of 2-4 words of one split, each word a timed caption."""

    def __init__(
        self,
        sign_language: str,
        spoken_language: str,
        corpus_seed: int,
        config: Callable[[], landmarks.LandmarkConfig],
        train_variants: int,
    ):
        self.name = f"fingerspelling_{sign_language}_multiword"
        self.sign_language, self.spoken_language = sign_language, spoken_language
        self.corpus_seed, self.config, self.train_variants = corpus_seed, config, train_variants

    def check(self, split):
        pass

    def groups(self, split: str) -> list[tuple[int, tuple[str, ...]]]:
        """(variant, words) of every clip: each variant permutes the split's words
        and cuts them into groups of 2, 3, 4, 2, ... words."""
        words = list(
            fingerspelling.word_splits(self.sign_language, seed=self.corpus_seed)[0][split]
        )
        variants = self.train_variants if split == "train" else 1
        out = []
        for v in range(variants):
            variant = v + (0 if split == "train" else 10**6)
            digest = hashlib.sha256(f"{self.corpus_seed}:{self.sign_language}:{variant}".encode())
            order = np.random.default_rng(
                int.from_bytes(digest.digest()[:8], "little")
            ).permutation(len(words))
            i, k = 0, 0
            sizes = range(WORDS_PER_CLIP[0], WORDS_PER_CLIP[1] + 1)
            while i + WORDS_PER_CLIP[0] <= len(order):
                n = sizes[k % len(sizes)]
                out.append((variant, tuple(words[j] for j in order[i : i + n])))
                i, k = i + n, k + 1
        return out

    def num_examples(self, split):
        return len(self.groups(split))

    def dataset(self, split, shuffle, seed, shard_info):
        groups = self.groups(split)
        if not groups:
            raise ValueError(
                f"the {self.sign_language} corpus has too few {split} words "
                f"for {WORDS_PER_CLIP[0]}-word clips."
            )
        config, sign, seed_ = self.config(), self.sign_language, self.corpus_seed

        def compose(text, variant):
            return multiword_clip(
                sign, text.decode("utf-8").split(" "), int(variant), seed_, config
            )

        def to_record(text, variant):
            frames, bounds = tf.numpy_function(
                compose, [text, variant], (tf.float32, tf.int64), stateful=False
            )
            frames.set_shape([None, landmarks.FRAME_DIM])
            bounds.set_shape([None, 2])
            return {
                "landmarks": frames,
                "text": text,
                "sign_language": tf.constant(sign),
                "spoken_language": tf.constant(self.spoken_language),
                "id": tf.strings.join([sign, "/", text, "/", tf.strings.as_string(variant)]),
                "caption_texts": tf.strings.split(text, " "),
                "caption_start_frames": bounds[:, 0],
                "caption_end_frames": bounds[:, 1],
            }

        if shuffle:
            order = np.random.default_rng(seed).permutation(len(groups))
            groups = [groups[i] for i in order]
        ds = tf.data.Dataset.from_tensor_slices(
            (
                tf.constant([" ".join(w) for _, w in groups]),
                tf.constant([v for v, _ in groups], tf.int64),
            )
        )
        ds = sources._shard_examples(ds, shard_info)
        return ds.map(to_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


__all__ = [
    "CldrParallelText",
    "CldrTranslations",
    "MultiWordClipSource",
    "WordClipSource",
    "cldr_pairs",
    "cldr_word_translations",
    "multiword_clip",
    "seqio",
]
