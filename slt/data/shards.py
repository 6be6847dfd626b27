"""The on-disk format of a prepared dataset: TFRecord shards of `tf.train.Example`s.

A prepared dataset directory holds:
  <split>.tfrecord-00000-of-00004 ...   the shards
  <split>.tfrecord-00000-of-00004.done.json   per shard: counts and refused inputs
                                         (written last; a re-run skips such shards)
  dataset_info.json                      counts, frame-length histogram, languages,
                                         the landmark config (written when a split is
                                         complete; readers require it)
  landmark_config.json                   `LandmarkConfig.to_json()`, to repeat at
                                         translation time
  report.jsonl                           one line per input not written, with reason

Each example:
  landmarks         bytes: float32 [num_frames, 255], little-endian, row-major
  num_frames        int64
  text              bytes (UTF-8): the caption (all captions, joined, for multi-caption)
  sign_language, spoken_language, id, source   bytes
  start, end        float: seconds within the source file (-1: not given)
  fps               float: frames per second of the stored frames (0: unknown)
  caption_texts     bytes list; caption_start_frames, caption_end_frames: int64 lists
                    (indices into the stored frames; empty for single-caption clips)
"""

from __future__ import annotations

import tensorflow as tf

from slt.data import landmarks

FORMAT = "slt.prepared/1"
INFO_FILE = "dataset_info.json"
CONFIG_FILE = "landmark_config.json"
REPORT_FILE = "report.jsonl"


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}.tfrecord-{index:05d}-of-{count:05d}"


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def serialize(clip) -> bytes:
    """A `clips.PreparedClip` as a serialized tf.train.Example."""
    spec = clip.spec
    feature = {
        "landmarks": _bytes([clip.frames.astype("<f4").tobytes()]),
        "num_frames": _ints([clip.frames.shape[0]]),
        "text": _bytes([spec.text.encode("utf-8")]),
        "sign_language": _bytes([spec.sign_language.encode()]),
        "spoken_language": _bytes([spec.spoken_language.encode()]),
        "id": _bytes([spec.id.encode("utf-8", "surrogateescape")]),
        "source": _bytes([spec.path.encode("utf-8", "surrogateescape")]),
        "start": _floats([-1.0 if spec.start is None else spec.start]),
        "end": _floats([-1.0 if spec.end is None else spec.end]),
        "fps": _floats([clip.fps]),
        "caption_texts": _bytes([c.text.encode("utf-8") for c in spec.captions]),
        "caption_start_frames": _ints(clip.caption_frames[:, 0].tolist()),
        "caption_end_frames": _ints(clip.caption_frames[:, 1].tolist()),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Deterministic: map entries in key order. Otherwise their order follows a hash
    # seeded per process, and the same clip prepared by two processes (Beam workers,
    # a resumed run) would give different bytes.
    return example.SerializeToString(deterministic=True)


FEATURE_SPEC = {
    "landmarks": tf.io.FixedLenFeature([], tf.string),
    "num_frames": tf.io.FixedLenFeature([], tf.int64),
    "text": tf.io.FixedLenFeature([], tf.string),
    "sign_language": tf.io.FixedLenFeature([], tf.string),
    "spoken_language": tf.io.FixedLenFeature([], tf.string),
    "id": tf.io.FixedLenFeature([], tf.string),
    "source": tf.io.FixedLenFeature([], tf.string),
    "start": tf.io.FixedLenFeature([], tf.float32),
    "end": tf.io.FixedLenFeature([], tf.float32),
    "fps": tf.io.FixedLenFeature([], tf.float32),
    "caption_texts": tf.io.VarLenFeature(tf.string),
    "caption_start_frames": tf.io.VarLenFeature(tf.int64),
    "caption_end_frames": tf.io.VarLenFeature(tf.int64),
}


def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """A serialized example -> tensors; `landmarks` becomes float32 [T, 255]."""
    example = tf.io.parse_single_example(serialized, FEATURE_SPEC)
    frames = tf.io.decode_raw(example["landmarks"], tf.float32, little_endian=True)
    example["landmarks"] = tf.reshape(frames, [-1, landmarks.FRAME_DIM])
    for key in ("caption_texts", "caption_start_frames", "caption_end_frames"):
        example[key] = tf.sparse.to_dense(example[key])
    return example
