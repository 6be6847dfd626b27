"""Language accuracy, BLEURT from a checkpoint on disk, and the sacrebleu figures."""

import json

import numpy as np
import pytest
import sacrebleu

from slt.evaluation import metrics

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "peru", "chile", "##s", "january"]


def make_tiny_bleurt_checkpoint(directory, max_seq_length=8):
    """A BLEURT-format checkpoint: bleurt_config.json, vocab.txt and a SavedModel whose
    `serving_default` maps (input_ids, input_mask, segment_ids) to `predictions`.

    Its "model" is a learned-weight lookup, not a BERT: enough to check that the
    checkpoint is read, the pairs are encoded as BLEURT does and the signature is
    called; the weights make the expected score computable by hand."""
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self):
            self.weights = tf.Variable(np.arange(len(VOCAB) + 1, dtype=np.float32) / 10)

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64)] * 3)
        def serve(self, input_ids, input_mask, segment_ids):
            w = tf.gather(self.weights, input_ids) * tf.cast(input_mask, tf.float32)
            w *= 1.0 + tf.cast(segment_ids, tf.float32)
            return {"predictions": tf.reduce_sum(w, axis=1)}

    module = Tiny()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (directory / "bleurt_config.json").write_text(
        json.dumps(
            {
                "name": "tiny-test",
                "max_seq_length": max_seq_length,
                "vocab_file": "vocab.txt",
                "do_lower_case": True,
            }
        )
    )
    return directory


def test_bleurt_reads_a_checkpoint_and_encodes_pairs_as_bleurt(tmp_path):
    from slt.evaluation import bleurt

    scorer = bleurt.BleurtScorer(str(make_tiny_bleurt_checkpoint(tmp_path / "tiny")))
    pairs = (["Peru", "January Peru Chile Peru"], ["Chiles", "Chiles"])
    ids, mask, segments = scorer.encode(*pairs)
    # [CLS] peru [SEP] chile ##s [SEP]; the second pair (4 + 2 tokens for 5 places)
    # loses the last token of the longer side, the reference.
    np.testing.assert_array_equal(ids[0], [2, 4, 3, 5, 6, 3, 0, 0])
    np.testing.assert_array_equal(segments[0], [0, 0, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(ids[1], [2, 7, 4, 5, 3, 5, 6, 3])
    np.testing.assert_array_equal(segments[1], [0, 0, 0, 0, 0, 1, 1, 1])
    scores = scorer.score(*pairs, batch_size=1)
    weights = np.arange(len(VOCAB) + 1) / 10
    expected = [
        weights[[2, 4, 3]].sum() + 2 * weights[[5, 6, 3]].sum(),
        weights[[2, 7, 4, 5, 3]].sum() + 2 * weights[[5, 6, 3]].sum(),
    ]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)

    m = metrics.translation_metrics(pairs[1], pairs[0], bleurt_scorer=scorer)
    assert m["bleurt"] == pytest.approx(np.mean(expected)) and m["bleurt_checkpoint"] == "tiny-test"


def test_bleurt_without_a_checkpoint_says_what_to_pass(tmp_path):
    from slt.evaluation import bleurt

    with pytest.raises(FileNotFoundError, match="no bleurt_config.json there"):
        bleurt.BleurtScorer(str(tmp_path))


def test_language_accuracy_counts_intended_languages_and_empties_as_wrong():
    predictions = [
        "the weather is nice today and we go for a walk",
        "das Wetter ist heute schön und wir gehen spazieren",
        "el tiempo es bueno hoy y vamos a pasear",
        "",
    ]
    assert metrics.identify_languages(predictions) == ["en", "de", "es", None]
    # The third should be German: wrong; the empty one is wrong too.
    assert metrics.language_accuracy(predictions, ["en", "de", "de", "en"]) == 0.5
    with pytest.raises(ValueError, match=r"not among the language identifier's candidates"):
        metrics.language_accuracy(["hello"], ["xx"])


def test_all_metrics_agree_with_sacrebleu_computed_independently():
    predictions = ["the cat sat on the mat", "der Hund", "", "Januar"]
    references = ["the cat sat on a mat", "der Hund bellt", "Chile", "January"]
    m = metrics.translation_metrics(
        predictions, references, target_languages=["en", "de", "en", "en"]
    )
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, [references]).score)
    assert m["empty_rate"] == 0.25
    found = metrics.identify_languages(predictions)
    assert found[0] == "en" and found[2] is None
    assert (
        m["language_accuracy"] == sum(f == t for f, t in zip(found, ["en", "de", "en", "en"])) / 4
    )
    assert m["language_id_signature"].startswith("lingua:2.1.1|candidates:ar,bg,bn,ca,cs")
