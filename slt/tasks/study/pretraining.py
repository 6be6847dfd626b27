"""The study's text-pretrained start: byte-level span corruption on the corpus's text.

Every arm of the paper starts from ByT5, which was pretrained with span corruption on
mC4: monolingual text in all its languages, no parallel data. The stand-in here is the
same objective on the text of the corpus's 15 spoken languages: every CLDR display name
(territories, languages, scripts, currencies, months, days) of each language, on its own.

- It teaches the decoder to write each language's words and scripts, as ByT5 can before
  any SLT training, and it teaches no translation: no example pairs a name with its
  name in another language, so what arm B knows of a Z word's translation still comes
  only from its MT data.
- The names of held-out words are in it, monolingually, as mC4 holds the paper's test
  captions' words: knowing the string "Німеччина" says nothing about which sign it is.

Tasks `experiment_text_spans_<language>`, mixture `experiment_text_pretrain` (text only,
sized by each language's number of names). An example is a name with random byte spans
replaced by sentinels, `inputs` the corrupted name and `targets` the sentinels each
followed by the bytes it replaced (T5's format). The sentinels are ByT5's: ids 258,
257, ..., the byte values 0xFF, 0xFE, ..., which never occur in UTF-8 text.
"""

from __future__ import annotations

import hashlib

import numpy as np
import seqio
import tensorflow as tf

from slt.data import landmarks
from slt.tasks import mixing, sources
from slt.tasks.fingerspelling import mixtures as fm
from slt.tasks.fingerspelling import sources as fs_sources
from slt.tasks.paper import tasks as paper_tasks

LANGUAGES = ("en", *fm.MT_LANGUAGES)
MIXTURE = "experiment_text_pretrain"
# Names are short (median about 9 bytes), so the spans are shorter and denser than
# ByT5's (mean 20 bytes at 15% of documents): about 30% of a name's bytes in spans of
# about 3 bytes, at least one span per name.
NOISE_DENSITY = 0.3
MEAN_SPAN_BYTES = 3.0
# Each name is corrupted this many times, each time with other spans.
VARIANTS = 8


def task_name(language: str) -> str:
    return f"experiment_text_spans_{language}"


def _rng(language: str, name: str, variant: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{language}:{variant}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def corrupt(text: bytes, rng: np.random.Generator) -> tuple[bytes, bytes]:
    """(inputs, targets) of span corruption of `text`'s bytes: about NOISE_DENSITY of
    them, in spans of about MEAN_SPAN_BYTES, each replaced in `inputs` by one sentinel
    byte (0xFF, 0xFE, ...) that starts its span in `targets`."""
    n = len(text)
    noise = min(n - 1, max(1, round(n * NOISE_DENSITY))) if n > 1 else 1
    spans = max(1, min(round(noise / MEAN_SPAN_BYTES), noise, n - noise if n > 1 else 1))
    # Split the noise and the kept bytes into `spans` non-empty runs each, then
    # interleave them (kept, noise, kept, noise, ...), as T5's random_spans_noise_mask.
    noise_lengths = _split(noise, spans, rng)
    kept_lengths = _split(max(n - noise, spans), spans, rng) if n > 1 else [0]
    inputs, targets, position = bytearray(), bytearray(), 0
    for i, (keep, drop) in enumerate(zip(kept_lengths, noise_lengths)):
        sentinel = 0xFF - i
        inputs += text[position : position + keep]
        position += keep
        inputs.append(sentinel)
        targets.append(sentinel)
        targets += text[position : position + drop]
        position += drop
    inputs += text[position:]
    return bytes(inputs), bytes(targets)


def _split(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """`total` as `parts` positive integers, uniformly among such splits."""
    if parts <= 1:
        return [total]
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]])).astype(int).tolist()


class CorpusTextSpans(sources.TextPairSource):
    """Span-corrupted CLDR names of one language (see the module docstring); every
    split holds every name, since pretraining is only trained, never evaluated."""

    def __init__(self, language: str, variants: int = VARIANTS):
        self.name = f"cldr_text_spans_{language}"
        self.language, self.variants = language, variants

    def check(self, split):
        pass

    def names(self) -> list[str]:
        return sorted(set(fs_sources.cldr_names(self.language).values()))

    def num_examples(self, split):
        return len(self.names()) * self.variants

    def dataset(self, split, shuffle, seed, shard_info):
        inputs, targets, ids = [], [], []
        for variant in range(self.variants):
            for name in self.names():
                corrupted, spans = corrupt(name.encode("utf-8"), _rng(self.language, name, variant))
                inputs.append(corrupted)
                targets.append(spans)
                ids.append(f"{self.language}/{variant}/{name}")
        ds = tf.data.Dataset.from_tensor_slices(
            {"inputs": tf.constant(inputs), "targets": tf.constant(targets), "id": ids}
        )
        return sources._shard_examples(ds, shard_info)


def _to_example(dataset: tf.data.Dataset) -> tf.data.Dataset:
    empty = tf.zeros([0, landmarks.FRAME_DIM], tf.float32)
    return dataset.map(
        lambda r: paper_tasks._example(empty, r["inputs"], r["targets"], r["id"]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def register() -> None:
    for language in LANGUAGES:
        paper_tasks._register(
            task_name(language),
            CorpusTextSpans(language),
            _to_example,
            None,
            (),
            None,
            None,
            shuffle_buffer_size=4096,
        )
    mixing.register_mixture(MIXTURE, {"mt": [task_name(x) for x in LANGUAGES]})


if MIXTURE not in seqio.MixtureRegistry.names():
    register()
