"""BLEURT scores from a BLEURT checkpoint directory, with TensorFlow only.

A BLEURT checkpoint (as released by google-research/bleurt, e.g. BLEURT-20) is a
TensorFlow SavedModel directory with a `bleurt_config.json` beside `saved_model.pb`:

  {"name": ..., "max_seq_length": 512, "vocab_file": "vocab.txt",
   "do_lower_case": false}                       (WordPiece checkpoints), or
  {"name": ..., "max_seq_length": 512, "sp_model": "sent_piece"}  (SentencePiece;
   the model file is `sent_piece.model`).

Its `serving_default` signature takes int64 `input_ids`, `input_mask` and
`segment_ids` [B, max_seq_length] and returns `predictions` [B]. Each pair is encoded
BERT style: `[CLS] reference [SEP] candidate [SEP]`, the longer side truncated first.
No checkpoint can be downloaded at run time: pass the path of an unpacked one, on local
disk or `gs://` (read through `slt.storage`; a `gs://` SavedModel is copied to a local
temporary directory while it loads, since TensorFlow's loader reads `gs://` only
through its own file system, which no emulator can stand in for).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from slt import storage

CONFIG_FILE = "bleurt_config.json"


class BleurtScorer:
    """Scores (reference, candidate) pairs with a BLEURT checkpoint (local or gs://)."""

    def __init__(self, checkpoint_dir: str):
        import tensorflow as tf
        import tensorflow_text as tf_text

        self.checkpoint_dir = storage.absolute(checkpoint_dir)
        config_path = storage.join(self.checkpoint_dir, CONFIG_FILE)
        if not storage.isfile(config_path):
            raise FileNotFoundError(
                f"BLEURT checkpoint {self.checkpoint_dir}: no {CONFIG_FILE} there. Pass the "
                "directory of an unpacked BLEURT checkpoint (e.g. BLEURT-20), the one that "
                "holds bleurt_config.json and saved_model.pb."
            )
        self.config = json.loads(storage.read_text(config_path))
        if "max_seq_length" not in self.config:
            raise ValueError(f"{config_path}: field max_seq_length is missing.")
        self.max_seq_length = int(self.config["max_seq_length"])
        self.name = str(self.config.get("name", storage.name(self.checkpoint_dir)))

        if self.config.get("sp_model"):
            model_path = storage.join(self.checkpoint_dir, self.config["sp_model"] + ".model")
            sp = tf_text.SentencepieceTokenizer(
                model=storage.read_bytes(model_path), out_type=tf.int64
            )
            self._tokenize = lambda texts: sp.tokenize(texts)
            self._cls, self._sep = (int(sp.string_to_id(t)) for t in ("[CLS]", "[SEP]"))
        elif self.config.get("vocab_file"):
            vocab_path = storage.join(self.checkpoint_dir, self.config["vocab_file"])
            # One token a line; \r\n and \r end lines too (text mode reads them so).
            text = storage.read_text(vocab_path).replace("\r\n", "\n").replace("\r", "\n")
            vocab = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
            missing = [t for t in ("[CLS]", "[SEP]", "[UNK]") if t not in vocab]
            if missing:
                raise ValueError(f"{vocab_path}: the vocabulary lacks {missing}.")
            table = tf.lookup.StaticVocabularyTable(
                tf.lookup.KeyValueTensorInitializer(vocab, tf.range(len(vocab), dtype=tf.int64)),
                num_oov_buckets=1,
            )
            wordpiece = tf_text.BertTokenizer(
                table,
                token_out_type=tf.int64,
                lower_case=bool(self.config.get("do_lower_case", False)),
            )
            self._tokenize = lambda texts: wordpiece.tokenize(texts).merge_dims(-2, -1)
            self._cls, self._sep = vocab.index("[CLS]"), vocab.index("[SEP]")
        else:
            raise ValueError(
                f"{config_path}: needs vocab_file (WordPiece) or sp_model (SentencePiece)."
            )
        try:
            # The loaded model holds its variables in memory: the local copy can go.
            with storage.local_copy(self.checkpoint_dir) as saved_model_dir:
                self._model = tf.saved_model.load(saved_model_dir)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"BLEURT checkpoint {self.checkpoint_dir}: not a loadable SavedModel ({e})."
            ) from e
        self._predict = self._model.signatures["serving_default"]

    def encode(
        self, references: Sequence[str], candidates: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """int64 (input_ids, input_mask, segment_ids), each [B, max_seq_length]."""
        refs = self._tokenize(list(references)).to_list()
        cands = self._tokenize(list(candidates)).to_list()
        size = (len(refs), self.max_seq_length)
        ids, mask, segments = (np.zeros(size, np.int64) for _ in range(3))
        for row, (ref, cand) in enumerate(zip(refs, cands)):
            ref, cand = list(ref), list(cand)
            while len(ref) + len(cand) > self.max_seq_length - 3:
                (ref if len(ref) > len(cand) else cand).pop()
            tokens = [self._cls, *ref, self._sep, *cand, self._sep]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
            segments[row, len(ref) + 2 : len(tokens)] = 1
        return ids, mask, segments

    def score(
        self, references: Sequence[str], candidates: Sequence[str], batch_size: int = 64
    ) -> list[float]:
        """One BLEURT score per pair."""
        import tensorflow as tf

        if len(references) != len(candidates):
            raise ValueError(f"{len(candidates)} candidates for {len(references)} references.")
        scores: list[float] = []
        for start in range(0, len(references), batch_size):
            ids, mask, segments = self.encode(
                references[start : start + batch_size], candidates[start : start + batch_size]
            )
            out = self._predict(
                input_ids=tf.constant(ids),
                input_mask=tf.constant(mask),
                segment_ids=tf.constant(segments),
            )["predictions"]
            scores.extend(float(s) for s in np.reshape(out.numpy(), [-1]))
        return scores
