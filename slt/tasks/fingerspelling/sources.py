"""Sources over the embedded corpus (`slt/tasks/fingerspelling/corpus.py`), offline, for every
kind of task.

- `WordClipSource`: one composed clip per word and variant, optionally only the words
  of a given set. The `fingerspelling_slt_*` tasks and the word tasks of
  `slt/tasks/fingerspelling/mixtures.py` both read it.
- `MultiWordClipSource`: 2-4 words of one split spelled in a row, with a pause of
  0.25-0.5 s between words, and each word's start and end frame as its caption
  timestamps (for alignment and timed SLT).

The clip sources of `slt/tasks/fingerspelling/mixtures.py` shuffle the list of (words,
variant) before composing any clip, so their tasks need only a small shuffle buffer of
clips (`CLIP_SHUFFLE_BUFFER`): a mixture of dozens of composed tasks then starts in
seconds, not after composing 2,048 clips per task.
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
import tensorflow as tf

from slt.data import landmarks
from slt.tasks import sources
from slt.tasks.fingerspelling import corpus as fingerspelling

PAUSE_FRAMES = (6, 12)  # at fingerspelling.BASE_FPS, between words of one clip
WORDS_PER_CLIP = (2, 4)
CLIP_SHUFFLE_BUFFER = 8
# The variant number of every eval-split composition; training variants count from 0.
EVAL_VARIANT = 10**6
# Word clips composed per Python call (bench/input_pipeline.py); the order is unchanged.
COMPOSE_CHUNK = 16


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

    def _rows(self, split: str) -> tuple[tuple[str, str, str], ...]:
        """(key, name in language a, name in language b) of a split."""
        return cldr_pairs(*self.languages, self.seed)[split]

    def num_examples(self, split):
        return len(self._rows(split))

    def dataset(self, split, shuffle, seed, shard_info):
        rows = self._rows(split)
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


class _CorpusClipSource(sources.ClipSource):
    """Clips composed from one sign language's words; nothing to read but the lexicon."""

    name_suffix = ""

    def __init__(
        self,
        sign_language: str,
        spoken_language: str,
        corpus_seed: int,
        config: Callable[[], landmarks.LandmarkConfig],
        train_variants: int,
    ):
        self.name = f"fingerspelling_{sign_language}{self.name_suffix}"
        self.sign_language, self.spoken_language = sign_language, spoken_language
        self.corpus_seed, self.config, self.train_variants = corpus_seed, config, train_variants

    def check(self, split):
        pass

    def split_words(self, split: str) -> tuple[str, ...]:
        return fingerspelling.word_splits(self.sign_language, seed=self.corpus_seed)[0][split]

    def variants(self, split: str) -> np.ndarray:
        """The variant numbers of a split's compositions: training words are composed
        `train_variants` times, eval words once, numbered apart so no clip is shared."""
        if split == "train":
            return np.arange(self.train_variants)
        return np.asarray([EVAL_VARIANT])


class WordClipSource(_CorpusClipSource):
    """One composed clip per word and variant: the clips of the `fingerspelling_slt_*`
    tasks and of the word tasks in `slt/tasks/fingerspelling/mixtures.py`.

    The (word, variant) list is variant-major (every word once before any word twice).
    With `shuffle_words` a shuffled dataset permutes that list before composing any
    clip, so its task needs only a small clip shuffle buffer; without, the order is
    kept and the task's shuffle buffer mixes the clips. The source shards the list
    itself, before composing: a host that reads shard i of n composes only every n-th
    clip. `only_words` keeps only the words of a set (read when data is built).
    """

    def __init__(
        self,
        sign_language: str,
        spoken_language: str,
        corpus_seed: int,
        config: Callable[[], landmarks.LandmarkConfig],
        train_variants: int,
        only_words: Callable[[], set] | None = None,
        shuffle_words: bool = True,
    ):
        super().__init__(sign_language, spoken_language, corpus_seed, config, train_variants)
        self.only_words, self.shuffle_words = only_words, shuffle_words

    def words(self, split: str) -> tuple[str, ...]:
        words = self.split_words(split)
        if self.only_words is not None:
            keep = self.only_words()
            words = tuple(w for w in words if w in keep)
        return words

    def num_examples(self, split):
        return len(self.words(split)) * len(self.variants(split))

    def dataset(self, split, shuffle, seed, shard_info):
        words = self.words(split)
        if not words:
            raise ValueError(
                f"the {self.sign_language} fingerspelling corpus has no {split} words."
            )
        variants = self.variants(split)
        word_column = np.tile(np.asarray(words, dtype=object), len(variants)).astype(str)
        variant_column = np.repeat(variants, len(words))
        if shuffle and self.shuffle_words:
            order = np.random.default_rng(seed).permutation(len(word_column))
            word_column, variant_column = word_column[order], variant_column[order]
        config, sign, corpus_seed = self.config(), self.sign_language, self.corpus_seed

        def compose(words: np.ndarray, variants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            clips = [
                fingerspelling.clip_frames(
                    sign, word.decode("utf-8"), int(variant), seed=corpus_seed, config=config
                )
                for word, variant in zip(words, variants)
            ]
            return np.concatenate(clips), np.asarray([clip.shape[0] for clip in clips], np.int64)

        def compose_chunk(words, variants):
            # One Python call composes a chunk of clips: a call per clip cost about as
            # much as composing it (tf.numpy_function overhead).
            frames, lengths = tf.numpy_function(
                compose, [words, variants], [tf.float32, tf.int64], stateful=False
            )
            frames.set_shape([None, landmarks.FRAME_DIM])
            lengths.set_shape([None])
            return tf.RaggedTensor.from_row_lengths(frames, lengths), words, variants

        def to_record(frames, word, variant):
            return {
                # Unbatched, frames are a RaggedTensor without ragged dimensions.
                "landmarks": tf.convert_to_tensor(frames),
                "text": word,
                "sign_language": tf.constant(sign),
                "spoken_language": tf.constant(self.spoken_language),
                "id": tf.strings.join([sign, "/", word, "/", tf.strings.as_string(variant)]),
                **_empty_captions(),
            }

        ds = tf.data.Dataset.from_tensor_slices(
            (tf.constant(word_column), tf.constant(variant_column, tf.int64))
        )
        ds = sources._shard_examples(ds, shard_info)
        ds = ds.batch(COMPOSE_CHUNK).map(
            compose_chunk, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        return ds.unbatch().map(to_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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


class MultiWordClipSource(_CorpusClipSource):
    """Clips of 2-4 words of one split, each word a timed caption."""

    name_suffix = "_multiword"

    def groups(self, split: str) -> list[tuple[int, tuple[str, ...]]]:
        """(variant, words) of every clip: each variant permutes the split's words
        and cuts them into groups of 2, 3, 4, 2, ... words."""
        words = self.split_words(split)
        sizes = range(WORDS_PER_CLIP[0], WORDS_PER_CLIP[1] + 1)
        out = []
        for variant in map(int, self.variants(split)):
            digest = hashlib.sha256(f"{self.corpus_seed}:{self.sign_language}:{variant}".encode())
            order = np.random.default_rng(
                int.from_bytes(digest.digest()[:8], "little")
            ).permutation(len(words))
            i, k = 0, 0
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
