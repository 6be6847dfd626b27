"""Data sources of the paper's tasks: where clips and parallel text come from.

Two record kinds flow from a source into the task factories (`slt/tasks/paper/tasks.py`):

Clip records (sign language video as landmarks, with captions):
  landmarks            float32 [T, 255] (after `slt.data.landmarks` preprocessing)
  text                 string: the caption (all captions joined, for multi-caption clips)
  sign_language        string, ISO 639-3;   spoken_language  string, BCP-47
  id                   string, unique within the dataset (keys translations files)
  caption_texts        string [C];  caption_start_frames, caption_end_frames  int64 [C]
                       (frame indices into `landmarks`, end exclusive; C = 0 when the
                       clip has one caption without timestamps)

Text pair records (parallel text, for MT):
  source_text, target_text, source_language, target_language, id   (strings)

A source is built without touching the disk; it looks for its files only when a
dataset is requested (`check` / `dataset`), and a missing directory raises
`MissingDataError`, naming the dataset and the command that prepares it.

Sources here: prepared shards (`slt.prepare`), MADLAD-400-style parallel text files
(TSV / JSONL) and TFDS Translation builders. The sign-language-datasets builders
(rwth_phoenix2014_t, dgs_corpus, wmt_slt, signsuisse) are in `slt/tasks/tfds_sources.py`,
the embedded corpus's sources in `slt/tasks/fingerspelling/sources.py`.

Records a source or task drops on purpose are counted in `SKIPPED`, by reason.
"""

from __future__ import annotations

import abc
import contextlib
import gzip
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from slt import storage
from slt.data import landmarks

log = logging.getLogger(__name__)

CLIP_SIGNATURE = {
    "landmarks": tf.TensorSpec([None, landmarks.FRAME_DIM], tf.float32),
    "text": tf.TensorSpec([], tf.string),
    "sign_language": tf.TensorSpec([], tf.string),
    "spoken_language": tf.TensorSpec([], tf.string),
    "id": tf.TensorSpec([], tf.string),
    "caption_texts": tf.TensorSpec([None], tf.string),
    "caption_start_frames": tf.TensorSpec([None], tf.int64),
    "caption_end_frames": tf.TensorSpec([None], tf.int64),
}
TEXT_PAIR_SIGNATURE = {
    k: tf.TensorSpec([], tf.string)
    for k in ("source_text", "target_text", "source_language", "target_language", "id")
}


class SkipCounter:
    """Records dropped on purpose, by reason (e.g. "no de translation"); logged at
    the 1st, 10th, 100th, ... of each reason."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()  # tf.data calls back from several threads

    def add(self, reason: str, n: int = 1) -> None:
        with self._lock:
            before = self.counts.get(reason, 0)
            self.counts[reason] = before + n
        if len(str(before + n)) > len(str(before)) or before == 0:
            log.warning("skipped %d examples so far: %s", before + n, reason)

    def __call__(self, reason: str):
        """A numpy_function body that counts one `reason` and returns False."""

        def note(_):
            self.add(reason)
            return np.bool_(False)

        return note


SKIPPED = SkipCounter()

# A path, or a function giving it when data is first needed (gin-configured roots).
PathOrFn = str | Callable[[], str]


class MissingDataError(FileNotFoundError):
    """A dataset's files are not where the mixture looks for them."""

    def __init__(self, dataset: str, where: str, what: str, command: str):
        self.dataset = dataset
        super().__init__(
            f"dataset {dataset!r}: {what} under {where!r}. Prepare it with:\n  {command}\n"
            f"or point the mixtures at it (gin): slt.mixture_settings.dataset_roots = "
            f"{{'{dataset}': '/path/to/{dataset}'}} or slt.mixture_settings.data_root."
        )


def _resolve(path: PathOrFn) -> str:
    return storage.absolute(path() if callable(path) else path)


@contextlib.contextmanager
def _open_text(path: str) -> Iterator[io.TextIOBase]:
    """A text file (gzip-compressed when named `.gz`) on any storage, strict UTF-8."""
    with storage.open_file(path, "rb") as raw:
        data = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        with io.TextIOWrapper(data, encoding="utf-8", errors="strict") as text:
            yield text


def shard_files(files: Sequence[str], shard_info: seqio.ShardInfo | None) -> list[str] | None:
    """This host's files when there are enough to split by file, else None."""
    if shard_info is None or shard_info.num_shards <= 1:
        return list(files)
    if len(files) >= shard_info.num_shards:
        return list(files)[shard_info.index :: shard_info.num_shards]
    return None


def _shard_examples(ds: tf.data.Dataset, shard_info: seqio.ShardInfo | None) -> tf.data.Dataset:
    if shard_info is None or shard_info.num_shards <= 1:
        return ds
    return ds.shard(shard_info.num_shards, shard_info.index)


def read_files(
    files: Sequence[str],
    reader: Callable[[str], tf.data.Dataset],
    shuffle: bool,
    seed: int | None,
    shard_info: seqio.ShardInfo | None,
) -> tf.data.Dataset:
    """Reads this host's part of `files`: whole files when there are enough, else
    every num_shards-th example. Shards are disjoint and together cover the files."""
    files = sorted(files)
    mine = shard_files(files, shard_info)
    by_file = mine is not None
    mine = mine if by_file else files
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(mine, tf.string))
    if shuffle and len(mine) > 1:
        ds = ds.shuffle(len(mine), seed=seed)
    ds = ds.interleave(
        reader,
        cycle_length=min(8, len(mine)),
        block_length=16,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds if by_file else _shard_examples(ds, shard_info)


class ClipSource(abc.ABC):
    """Yields clip records of one dataset."""

    name: str
    splits: tuple[str, ...] = ("train", "validation", "test")

    @abc.abstractmethod
    def check(self, split: str) -> None:
        """Raises MissingDataError if `split` cannot be read."""

    @abc.abstractmethod
    def dataset(
        self, split: str, shuffle: bool, seed: int | None, shard_info: seqio.ShardInfo | None
    ) -> tf.data.Dataset:
        """Clip records (CLIP_SIGNATURE) of this host's shard of `split`."""

    def num_examples(self, split: str) -> int | None:
        """The split's size when known without reading it all (for mixing rates)."""
        return None


class TextPairSource(abc.ABC):
    """Yields text pair records of one parallel corpus."""

    name: str
    splits: tuple[str, ...] = ("train", "validation", "test")

    @abc.abstractmethod
    def check(self, split: str) -> None: ...

    @abc.abstractmethod
    def dataset(
        self, split: str, shuffle: bool, seed: int | None, shard_info: seqio.ShardInfo | None
    ) -> tf.data.Dataset: ...

    def num_examples(self, split: str) -> int | None:
        return None


class SeqioSource(seqio.DataSource):
    """Adapts a ClipSource or TextPairSource to seqio (it shards by itself)."""

    def __init__(self, source: ClipSource | TextPairSource, splits: Sequence[str] | None = None):
        self.source = source
        super().__init__(
            splits=tuple(splits or source.splits), num_input_examples=None, caching_permitted=False
        )

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> Sequence[str]:
        return [split]

    def num_input_examples(self, split: str) -> int | None:
        return None  # sizes are read only by the mixing rates, lazily

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
        del sequence_length, use_cached, num_epochs
        self.source.check(split)
        return self.source.dataset(split, shuffle, seed, shard_info)


# --------------------------------------------------------------------------- prepared


class PreparedClipSource(ClipSource):
    """Shards written by `python -m slt.prepare` (format in `slt/data/shards.py`).

    `root` is the dataset directory. The shard files of a split are the ones its
    `dataset_info.json` lists (read through `slt.tasks.prepared`, when data is needed).
    """

    def __init__(
        self,
        name: str,
        root: PathOrFn,
        prepare_command: str,
        splits: Sequence[str] = ("train", "validation", "test"),
    ):
        self.name, self._root, self.prepare_command = name, root, prepare_command
        self.splits = tuple(splits)

    @property
    def root(self) -> str:
        return _resolve(self._root)

    def _missing(self, what: str, split: str) -> MissingDataError:
        return MissingDataError(
            self.name, self.root, what, self.prepare_command.format(split=split, root=self.root)
        )

    def info(self, split: str = "train") -> dict:
        from slt.tasks import prepared

        if not storage.isdir(self.root):
            raise self._missing("no directory", split)
        try:
            return prepared.dataset_info(self.root)
        except FileNotFoundError:
            raise self._missing(
                "no dataset_info.json (preparation did not finish, or "
                "ran with --strict and reported inputs)",
                split,
            ) from None

    def check(self, split: str) -> None:
        splits = self.info(split)["splits"]
        if split not in splits or not splits[split].get("shards"):
            raise self._missing(f"no prepared {split!r} split (it has {sorted(splits)})", split)

    def num_examples(self, split: str) -> int | None:
        try:
            return int(self.info(split)["splits"][split]["num_examples"])
        except (FileNotFoundError, KeyError, TypeError, ValueError):
            return None

    def landmark_config(self) -> landmarks.LandmarkConfig:
        from slt.tasks import prepared

        self.info()
        return prepared.landmark_config(self.root)

    def dataset(self, split, shuffle, seed, shard_info):
        from slt.data import shards  # the prepared-shard format

        files = [storage.join(self.root, n) for n in self.info(split)["splits"][split]["shards"]]

        def parse(serialized):
            ex = shards.parse(serialized)
            return {k: ex[k] for k in CLIP_SIGNATURE}

        return read_files(files, tf.data.TFRecordDataset, shuffle, seed, shard_info).map(
            parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )


# ------------------------------------------------------------------- parallel text


class ParallelTextFiles(TextPairSource):
    """MADLAD-400-style parallel text files under `root`, per split.

    Files: `<root>/<split>/*.tsv` (optionally `.gz`), named `<src>-<tgt>.tsv`, each line
    `source<TAB>target`; or `<root>/<split>/*.jsonl` lines `{"source_language",
    "target_language", "source", "target"}` (or `{"<src>": text, "<tgt>": text}` in a
    file named `<src>-<tgt>.jsonl`). A line that cannot be read is skipped and counted
    (`skipped()`), never silently.
    """

    def __init__(
        self,
        name: str,
        root: PathOrFn,
        prepare_command: str,
        splits: Sequence[str] = ("train", "validation", "test"),
    ):
        self.name, self._root, self.prepare_command = name, root, prepare_command
        self.splits = tuple(splits)
        self._skipped = {}

    def skipped(self) -> dict[str, int]:
        return dict(self._skipped)

    def _files(self, split):
        root = storage.join(_resolve(self._root), split)
        patterns = ("*.tsv", "*.tsv.gz", "*.jsonl", "*.jsonl.gz")
        return sorted(path for pattern in patterns for path in storage.glob(root, pattern))

    def check(self, split):
        root = _resolve(self._root)
        if not self._files(split):
            raise MissingDataError(
                self.name,
                storage.join(root, split),
                "no <src>-<tgt>.tsv or .jsonl parallel text files",
                self.prepare_command.format(root=root, split=split),
            )

    @staticmethod
    def _pair_of(path: str) -> tuple[str, str] | None:
        stem = storage.name(path).split(".")[0]
        parts = stem.split("-")
        return (parts[0], parts[1]) if len(parts) == 2 else None

    def _records(self, path: str):

        pair = self._pair_of(path)
        name = storage.name(path)
        with _open_text(path) as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                record = None
                try:
                    if ".tsv" in name:
                        cells = line.split("\t")
                        if pair and len(cells) == 2 and all(c.strip() for c in cells):
                            record = (cells[0], cells[1], pair[0], pair[1])
                    else:
                        row = json.loads(line)
                        if "source" in row:
                            record = (
                                row["source"],
                                row["target"],
                                row["source_language"],
                                row["target_language"],
                            )
                        elif pair and pair[0] in row and pair[1] in row:
                            record = (row[pair[0]], row[pair[1]], pair[0], pair[1])
                except (ValueError, KeyError, TypeError):
                    record = None
                if record is None or not all(str(v).strip() for v in record):
                    expected = "2 cells" if ".tsv" in name else "a pair object"
                    key = f"{name}: unreadable line (expected {expected})"
                    self._skipped[key] = self._skipped.get(key, 0) + 1
                    continue
                yield (*[str(v) for v in record], f"{name}:{number}")

    def dataset(self, split, shuffle, seed, shard_info):
        keys = ("source_text", "target_text", "source_language", "target_language", "id")

        def reader(path):
            return tf.data.Dataset.from_generator(
                lambda p: self._records(p.decode("utf-8")),
                args=(path,),
                output_signature=tuple(tf.TensorSpec([], tf.string) for _ in keys),
            )

        ds = read_files(self._files(split), reader, shuffle, seed, shard_info)
        return ds.map(
            lambda *values: dict(zip(keys, values)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )


class TfdsParallelText(TextPairSource):
    """A TFDS builder directory of `Translation` examples (`{lang: text}`)."""

    def __init__(
        self,
        name: str,
        root: PathOrFn,
        source_language: str,
        target_language: str,
        prepare_command: str,
        splits: Sequence[str] = ("train", "validation", "test"),
    ):
        self.name, self._root, self.prepare_command = name, root, prepare_command
        self.languages = (source_language, target_language)
        self.splits = tuple(splits)

    def _builder(self):
        import tensorflow_datasets as tfds

        root = _resolve(self._root)
        if not storage.exists(storage.join(root, "dataset_info.json")):
            raise MissingDataError(
                self.name,
                root,
                "no TFDS dataset_info.json",
                self.prepare_command.format(root=root, split=""),
            )
        return tfds.builder_from_directory(root)

    def check(self, split):
        self._builder()

    def dataset(self, split, shuffle, seed, shard_info):
        src, tgt = self.languages
        ds = _shard_examples(
            self._builder().as_dataset(split=split, shuffle_files=shuffle), shard_info
        )
        return ds.enumerate().map(
            lambda i, ex: {
                "source_text": ex[src],
                "target_text": ex[tgt],
                "source_language": tf.constant(src),
                "target_language": tf.constant(tgt),
                "id": tf.strings.join([self.name, ":", tf.strings.as_string(i)]),
            }
        )


# ---------------------------------------------------------------------- translations


class TranslationTable:
    """Machine translations of captions, keyed by caption id, for augmented SLT.

    From a translations file (JSONL lines `{"id", "language", "text"}` or `{"id",
    "translations": {lang: text}}`; TSV `id<TAB>language<TAB>text`), or from a
    manifest column (`column` of each JSONL/TSV manifest row, keyed by the row's `id`,
    or `<manifest file name>:<line number>` as `slt.data.manifest` numbers rows; name it
    `text_<code>`, the field `slt.prepare` accepts for translations). Read on first use;
    captions without a translation are counted by the task, not hidden.
    """

    def __init__(
        self,
        path: PathOrFn,
        language: str,
        column: str | None = None,
        dataset: str = "translations",
        prepare_command: str = "",
    ):
        self._path, self.language, self.column = path, language, column
        self.dataset, self.prepare_command = dataset, prepare_command

    def load(self) -> dict[str, str]:
        path = _resolve(self._path)
        if not storage.exists(path):
            raise MissingDataError(
                self.dataset,
                path,
                "no translations file",
                self.prepare_command
                or 'write one JSONL line {"id", "language", "text"} per translated caption',
            )
        table: dict[str, str] = {}
        name = storage.name(path)
        lines = storage.read_text(path).splitlines()
        is_tsv = path.endswith((".tsv", ".tab"))
        header = lines[0].split("\t") if is_tsv and self.column else None
        for number, line in enumerate(lines, start=1):
            if not line.strip() or (header and number == 1):
                continue
            if is_tsv:
                cells = line.split("\t")
                if header:
                    row = dict(zip(header, cells))
                    row_id = row.get("id") or f"{name}:{number}"
                    text = row.get(self.column, "")
                else:
                    if len(cells) != 3 or cells[1] != self.language:
                        continue
                    row_id, text = cells[0], cells[2]
            else:
                row = json.loads(line)
                row_id = str(row.get("id", f"{name}:{number}"))
                if self.column:
                    text = row.get(self.column, "")
                elif "translations" in row:
                    text = row["translations"].get(self.language, "")
                elif row.get("language") == self.language:
                    text = row.get("text", "")
                else:
                    continue
            if text and text.strip():
                table[row_id] = text
        return table

    def lookup(self) -> tf.lookup.StaticHashTable:
        table = self.load()
        keys = np.asarray(list(table) or [""], dtype=object)
        values = np.asarray(list(table.values()) or [""], dtype=object)
        return tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(keys.astype(str)), tf.constant(values.astype(str))
            ),
            default_value="",
        )


# ------------------------------------------------------------------------ in memory


class InMemoryClipSource(ClipSource):
    """Clip records held in memory: {split: [record dict, ...]} (small data, tests).

    Missing fields get defaults: no captions, id `<name>:<index>`.
    """

    def __init__(self, name: str, records: Mapping[str, Sequence[dict]]):
        self.name, self._records = name, records
        self.splits = tuple(records)

    def check(self, split):
        if split not in self._records:
            raise MissingDataError(
                self.name, "<memory>", f"no split {split!r}", "pass the split's records"
            )

    def num_examples(self, split):
        return len(self._records.get(split, ()))

    def dataset(self, split, shuffle, seed, shard_info):
        records = self._records[split]

        def generate():
            for i, r in enumerate(records):
                captions = r.get("captions", ())
                yield {
                    "landmarks": np.asarray(r["landmarks"], np.float32).reshape(
                        -1, landmarks.FRAME_DIM
                    ),
                    "text": r["text"],
                    "sign_language": r["sign_language"],
                    "spoken_language": r["spoken_language"],
                    "id": r.get("id", f"{self.name}:{i}"),
                    "caption_texts": np.asarray([c[0] for c in captions], object).astype(str)
                    if captions
                    else np.zeros([0], "U1"),
                    "caption_start_frames": np.asarray([c[1] for c in captions], np.int64),
                    "caption_end_frames": np.asarray([c[2] for c in captions], np.int64),
                }

        ds = tf.data.Dataset.from_generator(generate, output_signature=CLIP_SIGNATURE)
        return _shard_examples(ds, shard_info)


class InMemoryTextPairSource(TextPairSource):
    """Sentence pairs in memory: {split: [(src, tgt, src_lang, tgt_lang), ...]}."""

    def __init__(self, name: str, pairs: Mapping[str, Sequence[tuple[str, str, str, str]]]):
        self.name, self._pairs = name, pairs
        self.splits = tuple(pairs)

    def check(self, split):
        if split not in self._pairs:
            raise MissingDataError(
                self.name, "<memory>", f"no split {split!r}", "pass the split's pairs"
            )

    def num_examples(self, split):
        return len(self._pairs.get(split, ()))

    def dataset(self, split, shuffle, seed, shard_info):
        rows = self._pairs[split]
        columns = list(zip(*rows)) if rows else [[]] * 4
        ds = tf.data.Dataset.from_tensor_slices(
            {
                "source_text": tf.constant(list(columns[0]), tf.string),
                "target_text": tf.constant(list(columns[1]), tf.string),
                "source_language": tf.constant(list(columns[2]), tf.string),
                "target_language": tf.constant(list(columns[3]), tf.string),
                "id": tf.constant([f"{self.name}:{i}" for i in range(len(rows))], tf.string),
            }
        )
        return _shard_examples(ds, shard_info)
