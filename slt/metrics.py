"""Corpus-level translation metrics, with sacrebleu signatures."""
from __future__ import annotations

from collections.abc import Sequence

import sacrebleu


def translation_metrics(predictions: Sequence[str], references: Sequence[str]
                        ) -> dict[str, float | str | int]:
    """BLEU and chrF (sacrebleu defaults: 13a tokenisation, mixed case) and empty rate.

    Returns values plus `bleu_signature` / `chrf_signature`, so numbers from
    different runs can be compared honestly.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references.")
    if not references:
        raise ValueError("no examples to score.")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(list(predictions), [list(references)])
    chrf_score = chrf.corpus_score(list(predictions), [list(references)])
    return {
        "bleu": bleu_score.score,
        "chrf": chrf_score.score,
        "empty_rate": sum(not p.strip() for p in predictions) / len(predictions),
        "exact_match": sum(p == r for p, r in zip(predictions, references)) / len(predictions),
        "num_examples": len(predictions),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
