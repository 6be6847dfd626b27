"""Clip sources over sign-language-datasets TFDS builders that carry poses and text.

The feature structures below are those of the real builders' `_info()` (github.com/
sign-language-processing/datasets, `sign_language_datasets/datasets/<name>/<name>.py`,
read at commit d71f97f, Feb 2026). A `PoseFeature` decodes to
`{"data": float32 [T, 1, N, D], "conf": float32 [T, 1, N], "fps": int32}` (plus
`"path"` with `include_path=True`):

  rwth_phoenix2014_t 3.0.0  one sentence per example. id, signer, gloss, text (German);
                            pose N=543 holistic (configs default, poses). Splits
                            train / validation / test. DGS (gsg) -> de.
  dgs_corpus 3.0.0          data_type "document" (configs default, openpose, holistic):
                            one recorded conversation per example: id, paths
                            {ilex, eaf, srt, cmdi}, poses {a, b} (holistic N=543;
                            openpose N=137, D=2). The
                            sentences are not features: they are the ELAN file's
                            `Deutsche_Übersetzung_<A|B>` tier (start and end in ms),
                            read from `paths/eaf` as the builder itself does.
                            data_type "sentence" (a DgsCorpusConfig with a pose): id
                            (`<document>_<sentence>`), document_id, sentence {id,
                            participant, start, end (ms, int32), german, english,
                            glosses, mouthings}, pose (already cut). gsg -> de.
  wmt_slt 1.2.0             one subtitle per example: id, source (srf|focusnews), fps,
                            subtitle {text, start, end (text timestamps)}, video (a
                            path), pose when a config sets include_pose (holistic
                            N=203: pose, face contours, hands; openpose N=135, D=2),
                            already cut to the subtitle. Split train. DSGS (sgg) -> de.
  signsuisse 1.0.0          one lexicon entry per example: id, name, category,
                            spokenLanguage (de|fr|it), signedLanguage (ch-de|ch-fr|
                            ch-it), url, paraphrase, definition, exampleText, video,
                            exampleVideo; config holistic adds pose and examplePose
                            (N=543, with path). An entry gives up to two records: the
                            sign (`pose` -> `name`) and its example sentence
                            (`examplePose` -> `exampleText`). Split train. Languages
                            per entry: de -> sgg, fr -> ssr, it -> slf.

DGS document segmentation cuts each sentence's frames from its participant's pose
exactly as the builder's sentence configuration does, at the pose's own frame rate:
frames `floor(start * fps) .. ceil(end * fps)` inclusive (times in seconds).
Sentences without a valid timing (a time slot without a value, or end before start),
with an empty frame span (beyond the pose, or a participant without pose) or without
text, and records of other builders with no pose frames, no text or languages other
than the dataset's, are skipped and counted in `sources.SKIPPED` (keys
`<dataset>: <reason>`), never dropped silently.

Reading a builder directory with `tfds.builder_from_directory` needs the
sign-language-datasets package installed (its `PoseFeature` class decodes the pose).
"""

from __future__ import annotations

import abc
import dataclasses
import math
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from slt import storage
from slt.data import landmarks
from slt.tasks import sources

# signsuisse's spokenLanguage -> the Swiss sign language of that language region.
SIGNSUISSE_SIGN_LANGUAGES = {"de": "sgg", "fr": "ssr", "it": "slf"}


@dataclasses.dataclass(frozen=True)
class BuilderSpec:
    """Where a builder keeps what a clip record needs (paths are `/`-joined keys)."""

    name: str
    version: str
    splits: tuple[str, ...]
    # (pose feature, text feature, id suffix) per record an example gives.
    views: tuple[tuple[str, str, str], ...]
    languages: tuple[str, str] | None  # fixed (sign, spoken), or None: per example
    holistic_points: tuple[int, ...]  # point counts of the builder's holistic poses


BUILDERS: dict[str, BuilderSpec] = {
    s.name: s
    for s in (
        BuilderSpec(
            "rwth_phoenix2014_t",
            "3.0.0",
            ("train", "validation", "test"),
            (("pose", "text", ""),),
            ("gsg", "de"),
            (543,),
        ),
        BuilderSpec(
            "dgs_corpus",
            "3.0.0",
            ("train", "validation", "test"),
            (("pose", "sentence/german", ""),),
            ("gsg", "de"),
            (543,),
        ),
        BuilderSpec(
            "wmt_slt", "1.2.0", ("train",), (("pose", "subtitle/text", ""),), ("sgg", "de"), (203,)
        ),
        BuilderSpec(
            "signsuisse",
            "1.0.0",
            ("train",),
            (("pose", "name", ""), ("examplePose", "exampleText", "_example")),
            None,
            (543,),
        ),
    )
}


def builder_name(path: str) -> str:
    """The sign-language-datasets builder named in a TFDS directory path."""
    for part in reversed(path.replace("\\", "/").split("/")):
        if part in BUILDERS:
            return part
    raise ValueError(
        f"{path}: no known sign-language-datasets builder name "
        f"({sorted(BUILDERS)}) in the TFDS path; give the versioned builder "
        "directory, e.g. tfds:/data/tfds/wmt_slt/holistic/1.2.0."
    )


def _get(example, key: str):
    for part in key.split("/"):
        example = example[part]
    return example


def _has(spec, key: str) -> bool:
    for part in key.split("/"):
        if not isinstance(spec, Mapping) or part not in spec:
            return False
        spec = spec[part]
    return True


def _count(dataset: str, reason: str, n: int = 1) -> None:
    sources.SKIPPED.add(f"{dataset}: {reason}", n)


def _frames(
    data: np.ndarray, conf: np.ndarray, fps: float, source: str, config: landmarks.LandmarkConfig
) -> np.ndarray:
    from slt.io import arrays

    pose = arrays.from_tfds_pose({"data": data, "conf": conf, "fps": fps}, source=source)
    points, present = pose.youtube_asl()
    return landmarks.to_frames(points, present, config, fps=pose.fps or None)


_EMPTY_FRAMES = np.zeros([0, landmarks.FRAME_DIM], np.float32)


# ------------------------------------------------------------------ dgs_corpus ELAN


def elan_sentences(eaf_path: str) -> list[dict]:
    """The sentences of a DGS Corpus ELAN file, as the builder's `get_elan_sentences`
    reads them: per participant A and B, each annotation of the
    `Deutsche_Übersetzung_<P>` tier, with the `Translation_into_English_<P>`
    annotation of the same time slots. Times in ms; None where a time slot has no
    value (unaligned)."""
    with storage.open_file(eaf_path, "rb") as f:
        root = ElementTree.parse(f).getroot()
    slots = {}
    for slot in root.iter("TIME_SLOT"):
        value = slot.get("TIME_VALUE")
        slots[slot.get("TIME_SLOT_ID")] = int(value) if value not in (None, "") else None
    tiers = {tier.get("TIER_ID"): tier for tier in root.iter("TIER")}

    def annotations(tier_id):
        tier = tiers.get(tier_id)
        if tier is None:
            return []
        return [
            (
                a.get("ANNOTATION_ID"),
                a.get("TIME_SLOT_REF1"),
                a.get("TIME_SLOT_REF2"),
                a.findtext("ANNOTATION_VALUE") or "",
            )
            for a in tier.iter("ALIGNABLE_ANNOTATION")
        ]

    out = []
    for participant in ("A", "B"):
        english = {
            (s, e): text for _, s, e, text in annotations(f"Translation_into_English_{participant}")
        }
        for annotation_id, s, e, text in annotations(f"Deutsche_Übersetzung_{participant}"):
            out.append(
                {
                    "id": annotation_id,
                    "participant": participant,
                    "start": slots.get(s),
                    "end": slots.get(e),
                    "german": text,
                    "english": english.get((s, e), ""),
                }
            )
    return out


def sentence_span(start_ms, end_ms, fps: float, num_frames: int) -> tuple[int, int] | str:
    """Frames [first, last + 1) of a sentence, or the reason it has none.

    As the builder's sentence configuration: `floor(start * fps)` to
    `ceil(end * fps)` inclusive, times in seconds, clipped to the pose.
    """
    if start_ms is None or end_ms is None or start_ms < 0 or end_ms < start_ms:
        return "sentence without valid timing"
    if num_frames == 0 or not fps > 0:
        return "sentence of a participant without pose"
    first = int(start_ms / 1000 * fps)
    last = min(math.ceil(end_ms / 1000 * fps) + 1, num_frames)
    if first >= last:
        return "sentence with an empty frame span"
    return first, last


def segment_document(
    document_id: str,
    eaf_path: str,
    poses: Mapping[str, Mapping],
    config: landmarks.LandmarkConfig,
    dataset: str,
    text: str = "german",
) -> list[tuple[str, str, np.ndarray]]:
    """(sentence id, text, frames [T, 255]) of every usable sentence of a document.

    `poses` maps "a" / "b" to decoded PoseFeatures. Unusable sentences are counted.
    """
    if not storage.exists(eaf_path):
        raise FileNotFoundError(
            f"{dataset}: document {document_id}: its ELAN file {eaf_path!r} (paths/eaf, "
            "recorded when the dgs_corpus builder was prepared) is not there. Keep the "
            "TFDS download directory where it was, or prepare a sentence-level config, "
            "DgsCorpusConfig(name=..., data_type='sentence', include_pose='holistic')."
        )
    out = []
    for sentence in elan_sentences(eaf_path):
        caption = sentence[text].strip()
        pose = poses[sentence["participant"].lower()]
        data = np.asarray(pose["data"])
        span = sentence_span(sentence["start"], sentence["end"], float(pose["fps"]), data.shape[0])
        if isinstance(span, str):
            _count(dataset, span)
            continue
        if not caption:
            _count(dataset, "sentence without text")
            continue
        first, last = span
        source = f"{dataset}:{document_id}_{sentence['id']}"
        frames = _frames(
            data[first:last],
            np.asarray(pose["conf"])[first:last],
            float(pose["fps"]),
            source,
            config,
        )
        out.append((f"{document_id}_{sentence['id']}", caption, frames))
    return out


# ------------------------------------------------------------------------- sources


class TfdsExampleSource(sources.ClipSource, abc.ABC):
    """Clip records from the decoded examples of a sign-language-datasets builder.

    Subclasses give the examples (`examples`); this class turns them into clip
    records (`sources.CLIP_SIGNATURE`) as the module docstring describes. With
    `languages=(sign, spoken)` only records in that pair are kept (others counted);
    a builder with other fixed languages is refused.
    """

    def __init__(
        self,
        name: str,
        builder: str,
        config: Callable[[], landmarks.LandmarkConfig],
        languages: tuple[str, str] | None = None,
    ):
        if builder not in BUILDERS:
            raise ValueError(f"{name}: unknown builder {builder!r}; known: {sorted(BUILDERS)}.")
        self.name, self.spec, self.config, self.languages = (
            name,
            BUILDERS[builder],
            config,
            languages,
        )
        fixed = self.spec.languages
        if languages and fixed and tuple(languages) != fixed:
            raise ValueError(
                f"dataset {name!r} is {languages[0]}->{languages[1]}, but the {builder} "
                f"builder holds {fixed[0]}->{fixed[1]}; point {name} at data of its "
                "languages, or use the builder under a dataset whose records keep their "
                "own languages (yt_full)."
            )

    @abc.abstractmethod
    def examples(
        self, split: str, shuffle: bool, seed: int | None, shard_info: seqio.ShardInfo | None
    ) -> tf.data.Dataset:
        """The builder's decoded examples of this host's shard of `split`."""

    def dataset(self, split, shuffle, seed, shard_info):
        examples = self.examples(split, shuffle, seed, shard_info)
        spec = examples.element_spec
        if self.spec.name == "dgs_corpus" and _has(spec, "poses"):
            records = self._dgs_documents(examples)
        else:
            self._check_poses(spec)
            records = self._views(examples)
        return records

    # -- checks

    def _refuse(self, what: str):
        return ValueError(
            f"{self.name}: the {self.spec.name} data {what}. Prepare a builder config with "
            f"holistic poses (include_pose='holistic'; {self.spec.name} writes "
            f"{'/'.join(map(str, self.spec.holistic_points))} points per frame), e.g. "
            f"tfds.load('{self.spec.name}', builder_kwargs={{'config': "
            f"SignDatasetConfig(name='holistic', include_video=False, "
            f"include_pose='holistic')}})."
        )

    def _check_pose_spec(self, pose_spec, key: str) -> None:
        data = pose_spec["data"]
        if data.shape.rank != 4 or data.shape[-1] is None or data.shape[-1] < 3:
            raise self._refuse(
                f"has `{key}` of shape {data.shape}; x, y, z holistic "
                "landmarks [T, 1, N, 3] are needed (OpenPose is 2-D)"
            )

    def _check_poses(self, spec) -> None:
        for pose_key, text_key, _ in self.spec.views:
            if not _has(spec, pose_key):
                raise self._refuse(f"has no `{pose_key}` feature (a config without poses)")
            if not _has(spec, text_key):
                raise ValueError(
                    f"{self.name}: the {self.spec.name} examples have no "
                    f"`{text_key}` feature (features: {sorted(spec)})."
                )
            self._check_pose_spec(_get(spec, pose_key), pose_key)

    # -- one record per view of each example

    def _languages(self, example):
        if self.spec.languages is not None:
            return tf.constant(self.spec.languages[0]), tf.constant(self.spec.languages[1])
        spoken = example["spokenLanguage"]  # signsuisse
        sign = tf.constant("")
        for code, sign_code in SIGNSUISSE_SIGN_LANGUAGES.items():
            sign = tf.where(tf.equal(spoken, code), tf.constant(sign_code), sign)
        return sign, spoken

    def _views(self, examples: tf.data.Dataset) -> tf.data.Dataset:
        views, name, config_fn = self.spec.views, self.name, self.config
        wanted = self.languages

        def expand(example):
            sign, spoken = self._languages(example)
            out = None
            for pose_key, text_key, suffix in views:
                pose = _get(example, pose_key)
                one = tf.data.Dataset.from_tensors(
                    {
                        "data": pose["data"],
                        "conf": pose["conf"],
                        "fps": tf.cast(pose["fps"], tf.float32),
                        "text": _get(example, text_key),
                        "id": tf.strings.join([example["id"], suffix]),
                        "sign_language": sign,
                        "spoken_language": spoken,
                    }
                )
                out = one if out is None else out.concatenate(one)
            return out

        config = config_fn()

        def frames_of(data, conf, fps, text, record_id, sign, spoken):
            record_id = record_id.decode("utf-8", "replace")
            if not sign:
                _count(name, f"unknown spokenLanguage {spoken.decode()!r}")
            elif wanted and (sign.decode(), spoken.decode()) != tuple(wanted):
                _count(name, f"languages other than {wanted[0]}->{wanted[1]}")
            elif data.shape[0] == 0:
                _count(name, "example without pose frames")
            elif not text.strip():
                _count(name, "example without text")
            else:
                return _frames(data, conf, fps, f"{name}:{record_id}", config)
            return _EMPTY_FRAMES

        def to_record(view):
            frames = tf.numpy_function(
                frames_of,
                [
                    view["data"],
                    view["conf"],
                    view["fps"],
                    view["text"],
                    view["id"],
                    view["sign_language"],
                    view["spoken_language"],
                ],
                tf.float32,
                stateful=False,
            )
            frames.set_shape([None, landmarks.FRAME_DIM])
            return _record(
                frames, view["text"], view["sign_language"], view["spoken_language"], view["id"]
            )

        return (
            examples.flat_map(expand)
            .map(to_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .filter(lambda r: tf.shape(r["landmarks"])[0] > 0)
        )

    # -- dgs_corpus documents -> sentences

    def _dgs_documents(self, examples: tf.data.Dataset) -> tf.data.Dataset:
        spec = examples.element_spec
        for person in ("a", "b"):
            self._check_pose_spec(spec["poses"][person], f"poses/{person}")
        if not _has(spec, "paths/eaf"):
            raise ValueError(f"{self.name}: dgs_corpus documents without paths/eaf.")
        name, config_fn = self.name, self.config
        sign, spoken = self.spec.languages

        def segment(doc_id, eaf, a_data, a_conf, a_fps, b_data, b_conf, b_fps):
            doc_id = doc_id.decode("utf-8")
            poses = {
                "a": {"data": a_data, "conf": a_conf, "fps": a_fps},
                "b": {"data": b_data, "conf": b_conf, "fps": b_fps},
            }
            sentences = segment_document(doc_id, eaf.decode("utf-8"), poses, config_fn(), name)
            frames = np.concatenate([f for _, _, f in sentences]) if sentences else _EMPTY_FRAMES
            return (
                frames,
                np.asarray([len(f) for _, _, f in sentences], np.int64),
                np.asarray([t.encode() for _, t, _ in sentences], object),
                np.asarray([i.encode() for i, _, _ in sentences], object),
            )

        def split_sentences(example):
            a, b = example["poses"]["a"], example["poses"]["b"]
            frames, lengths, texts, ids = tf.numpy_function(
                segment,
                [
                    example["id"],
                    example["paths"]["eaf"],
                    a["data"],
                    a["conf"],
                    a["fps"],
                    b["data"],
                    b["conf"],
                    b["fps"],
                ],
                (tf.float32, tf.int64, tf.string, tf.string),
                stateful=False,
            )
            frames.set_shape([None, landmarks.FRAME_DIM])
            lengths.set_shape([None])
            texts.set_shape([None])
            ids.set_shape([None])
            ends = tf.cumsum(lengths)
            starts = ends - lengths
            return tf.data.Dataset.range(tf.size(lengths, out_type=tf.int64)).map(
                lambda i: _record(
                    frames[starts[i] : ends[i]],
                    texts[i],
                    tf.constant(sign),
                    tf.constant(spoken),
                    ids[i],
                )
            )

        return examples.flat_map(split_sentences)


def _record(frames, text, sign, spoken, record_id):
    return {
        "landmarks": frames,
        "text": text,
        "sign_language": sign,
        "spoken_language": spoken,
        "id": record_id,
        "caption_texts": tf.zeros([0], tf.string),
        "caption_start_frames": tf.zeros([0], tf.int64),
        "caption_end_frames": tf.zeros([0], tf.int64),
    }


class TfdsClipSource(TfdsExampleSource):
    """A prepared builder directory (`<data_dir>/<name>/<config>/<version>`, the one
    holding `dataset_info.json`), read with `tfds.builder_from_directory`."""

    def __init__(
        self,
        name: str,
        root: sources.PathOrFn,
        builder: str,
        config: Callable[[], landmarks.LandmarkConfig],
        prepare_command: str,
        languages: tuple[str, str] | None = None,
        splits: Sequence[str] | None = None,
    ):
        super().__init__(name, builder, config, languages)
        self._root, self.prepare_command = root, prepare_command
        self.splits = tuple(splits or self.spec.splits)

    @property
    def root(self) -> str:
        return sources._resolve(self._root)

    def _builder(self):
        import tensorflow_datasets as tfds

        root = self.root
        if not storage.exists(storage.join(root, "dataset_info.json")):
            raise sources.MissingDataError(
                self.name,
                root,
                "no TFDS dataset_info.json",
                self.prepare_command.format(root=root, split=""),
            )
        try:
            return tfds.builder_from_directory(root)
        except ValueError as e:
            if "Unrecognized FeatureConnector" not in str(e):
                raise
            raise ImportError(
                f"{self.name}: {root} stores sign-language-datasets' "
                "PoseFeature; reading it needs that package: pip install "
                "sign-language-datasets"
            ) from e

    def check(self, split):
        builder = self._builder()
        if split not in builder.info.splits:
            raise sources.MissingDataError(
                self.name,
                self.root,
                f"no split {split!r} (has {list(builder.info.splits)})",
                self.prepare_command.format(root=self.root, split=split),
            )

    def num_examples(self, split):
        try:
            return int(self._builder().info.splits[split].num_examples)
        except Exception:  # noqa: BLE001 - sizes are only a mixing-rate hint
            return None

    def examples(self, split, shuffle, seed, shard_info):
        import tensorflow_datasets as tfds

        read_config = tfds.ReadConfig(shuffle_seed=seed)
        if shard_info is not None and shard_info.num_shards > 1:
            read_config = tfds.ReadConfig(
                shuffle_seed=seed,
                input_context=(
                    tf.distribute.InputContext(
                        num_input_pipelines=shard_info.num_shards,
                        input_pipeline_id=shard_info.index,
                    )
                ),
            )
        return self._builder().as_dataset(
            split=split, shuffle_files=shuffle, read_config=read_config
        )


class InMemoryTfdsSource(TfdsExampleSource):
    """Decoded builder examples already in a `tf.data.Dataset` per split (e.g. from
    `tfds.load(...)` in the caller's process, or written by a test)."""

    def __init__(
        self,
        name: str,
        builder: str,
        examples: Mapping[str, Callable[[], tf.data.Dataset]],
        config: Callable[[], landmarks.LandmarkConfig] = landmarks.LandmarkConfig,
        languages: tuple[str, str] | None = None,
    ):
        super().__init__(name, builder, config, languages)
        self._examples = dict(examples)
        self.splits = tuple(self._examples)

    def check(self, split):
        if split not in self._examples:
            raise sources.MissingDataError(
                self.name, "<memory>", f"no split {split!r}", "pass the split's examples"
            )

    def examples(self, split, shuffle, seed, shard_info):
        del shuffle, seed  # the task shuffles
        return sources._shard_examples(self._examples[split](), shard_info)
