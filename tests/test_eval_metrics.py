"""Language accuracy, BLEURT from a checkpoint on disk, and BLEU and chrF against values
computed by hand."""

import json

import numpy as np
import pytest

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


def test_chrf_and_bleu_equal_hand_computed_values():
    # chrF (sacrebleu's defaults: character n-grams 1-6, beta 2, spaces removed) sums the
    # n-gram counts over the corpus, then averages precision and recall over the orders
    # that both sides have. "abc"/"abcd" and "xy"/"xy", as (hypothesis, reference,
    # matching) counts:
    #   1-grams: 5, 6, 5;  2-grams: 3, 4, 3;  3-grams: 1, 2, 1;  4-grams: 0, 1, 0 (left out)
    # precision (1 + 1 + 1) / 3 = 1, recall (5/6 + 3/4 + 1/2) / 3 = 25/36, and
    # F-beta = (1 + 4) * 1 * 25/36 / (4 * 1 + 25/36) = 125/169.
    m = metrics.translation_metrics(["abc", "xy"], ["abcd", "xy"])
    assert m["chrf"] == pytest.approx(100 * 125 / 169)
    assert m["exact_match"] == 0.5 and m["empty_rate"] == 0.0
    # BLEU (13a tokens, one reference): clipped n-gram precisions 5/6, 3/5, 2/4, 1/3
    # ("the" counts once), equal lengths so no brevity penalty: the geometric mean.
    m = metrics.translation_metrics(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert m["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    # Single words have no 4-grams: BLEU is 0 however right they are (the demo's case).
    assert metrics.translation_metrics(["Peru"], ["Peru"])["bleu"] == 0.0


def test_all_metrics_together():
    predictions = ["the cat sat on the mat", "der Hund", "", "Januar"]
    references = ["the cat sat on a mat", "der Hund bellt", "Chile", "January"]
    m = metrics.translation_metrics(
        predictions, references, target_languages=["en", "de", "en", "en"]
    )
    # Corpus scores are not means of sentence scores: the one-sentence BLEU above with
    # three more sentences.
    assert 0.0 < m["bleu"] < 100 * (1 / 12) ** 0.25
    assert m["empty_rate"] == 0.25 and m["exact_match"] == 0.0
    found = metrics.identify_languages(predictions)
    assert found[0] == "en" and found[1] == "de" and found[2] is None
    assert (
        m["language_accuracy"] == sum(f == t for f, t in zip(found, ["en", "de", "en", "en"])) / 4
    )
    assert m["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert m["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no")
    assert m["language_id_signature"].startswith("lingua:2.1.1|candidates:ar,bg,bn,ca,cs")
