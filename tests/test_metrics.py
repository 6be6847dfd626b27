import pytest
import sacrebleu

from slt.evaluation import metrics


def test_metrics_match_sacrebleu_and_carry_signatures():
    predictions = ["Peru", "Bulgaria", "", "Januar"]
    references = ["Peru", "Bulgarian", "Chile", "January"]
    m = metrics.translation_metrics(predictions, references)
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, [references]).score)
    assert m["empty_rate"] == 0.25 and m["exact_match"] == 0.25 and m["num_examples"] == 4
    assert m["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert m["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0")


def test_perfect_predictions_score_100():
    m = metrics.translation_metrics(["Peru", "Chile"], ["Peru", "Chile"])
    assert m["chrf"] == pytest.approx(100.0) and m["exact_match"] == 1.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        metrics.translation_metrics(["a", "b"], ["a"])
