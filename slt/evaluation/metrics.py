"""Corpus-level translation metrics, with signatures that say how they were computed.

BLEU and chrF come from sacrebleu; language accuracy from the offline identifier
`lingua` (its models ship inside the wheel); BLEURT from a checkpoint on disk
(`slt.evaluation.bleurt`), only when one is given.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import sacrebleu

# Candidate languages of the language identifier: every spoken language the project
# knows (`slt.tasks.languages.SPOKEN_LANGUAGES`: the 42 FLEURS-ASL#0 targets, which include
# the 16 of the embedded corpus; a test keeps the two equal). Identification is among
# these only, so a signature records them.
LANGUAGE_ID_CANDIDATES = (
    "ar",
    "bg",
    "bn",
    "ca",
    "cs",
    "da",
    "de",
    "el",
    "en",
    "es",
    "et",
    "fa",
    "fi",
    "fr",
    "he",
    "hi",
    "hr",
    "hu",
    "id",
    "it",
    "ja",
    "ko",
    "lt",
    "lv",
    "ms",
    "nb",
    "nl",
    "pl",
    "pt",
    "ro",
    "ru",
    "sk",
    "sl",
    "sr",
    "sv",
    "sw",
    "th",
    "tr",
    "uk",
    "ur",
    "vi",
    "zh",
)


@functools.lru_cache(maxsize=4)
def _language_detector(candidates: tuple[str, ...]):
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    languages = []
    for code in candidates:
        iso = getattr(IsoCode639_1, code.upper(), None)
        if iso is None:
            raise ValueError(
                f"language {code!r} is not known to the lingua language "
                "identifier; remove it from the candidate languages."
            )
        languages.append(Language.from_iso_code_639_1(iso))
    return LanguageDetectorBuilder.from_languages(*languages).build()


def identify_languages(
    texts: Sequence[str], candidates: Sequence[str] = LANGUAGE_ID_CANDIDATES
) -> list[str | None]:
    """ISO 639-1 code of each text among `candidates`; None when empty or undecided."""
    detector = _language_detector(tuple(candidates))
    found = [None] * len(texts)
    nonempty = [i for i, t in enumerate(texts) if t.strip()]
    detected = detector.detect_languages_in_parallel_of([texts[i] for i in nonempty])
    for i, language in zip(nonempty, detected):
        found[i] = language.iso_code_639_1.name.lower() if language is not None else None
    return found


def language_id_signature(candidates: Sequence[str] = LANGUAGE_ID_CANDIDATES) -> str:
    return (
        f"lingua:{metadata.version('lingua-language-detector')}|"
        f"candidates:{','.join(sorted(candidates))}"
    )


def language_accuracy(
    predictions: Sequence[str],
    target_languages: Sequence[str],
    candidates: Sequence[str] = LANGUAGE_ID_CANDIDATES,
) -> float:
    """Share of predictions identified as their intended language.

    Empty predictions and ones the identifier cannot decide count as wrong.
    """
    if len(predictions) != len(target_languages):
        raise ValueError(
            f"{len(predictions)} predictions for {len(target_languages)} target languages."
        )
    unknown = sorted(set(target_languages) - set(candidates))
    if unknown:
        raise ValueError(
            f"target languages {unknown} are not among the language "
            f"identifier's candidates {sorted(candidates)}."
        )
    found = identify_languages(predictions, candidates)
    return sum(f == t for f, t in zip(found, target_languages)) / len(predictions)


def empty_rate(predictions: Sequence[str]) -> float:
    """Share of predictions that are empty or whitespace only."""
    if not predictions:
        raise ValueError("no predictions to score.")
    return sum(not p.strip() for p in predictions) / len(predictions)


def language_metrics(
    targets: Sequence[str], predictions: Sequence[str], *, target_language: str
) -> dict[str, float]:
    """seqio metric function (bind `target_language` with functools.partial).

    Language accuracy and empty rate of a task whose outputs should all be in
    `target_language` (the targets are only counted: the language is the task's).
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets.")
    predictions = [str(p) for p in predictions]
    return {
        "language_accuracy": language_accuracy(predictions, [target_language] * len(predictions)),
        "empty_rate": empty_rate(predictions),
    }


def translation_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    target_languages: Sequence[str] | None = None,
    bleurt_scorer: Any | None = None,
) -> dict[str, float | str | int]:
    """BLEU and chrF (sacrebleu defaults: 13a tokenisation, mixed case) and empty rate.

    Returns values plus `bleu_signature` / `chrf_signature`, so numbers from
    different runs can be compared honestly. With `target_languages` (one code per
    example) also `language_accuracy` and its `language_id_signature`; with a
    `slt.evaluation.bleurt.BleurtScorer` also `bleurt` (the mean) and `bleurt_checkpoint`.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references.")
    if not references:
        raise ValueError("no examples to score.")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(list(predictions), [list(references)])
    chrf_score = chrf.corpus_score(list(predictions), [list(references)])
    results: dict[str, float | str | int] = {
        "bleu": bleu_score.score,
        "chrf": chrf_score.score,
        "empty_rate": empty_rate(predictions),
        "exact_match": sum(p == r for p, r in zip(predictions, references)) / len(predictions),
        "num_examples": len(predictions),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
    if target_languages is not None:
        results["language_accuracy"] = language_accuracy(predictions, target_languages)
        results["language_id_signature"] = language_id_signature()
    if bleurt_scorer is not None:
        scores = bleurt_scorer.score(list(references), list(predictions))
        results["bleurt"] = sum(scores) / len(scores)
        results["bleurt_checkpoint"] = bleurt_scorer.name
    return results
