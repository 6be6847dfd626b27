"""What the study reads from a run's predictions beyond the evaluation's metrics:
script accuracy, exact match up to surrounding whitespace, the references' own language
accuracy, and the zero-shot words split by whether their MT pair was in training."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from typing import Any

from slt import storage
from slt.evaluation import metrics as metrics_lib
from slt.study.design import E1_TASKS
from slt.tasks.fingerspelling import mixtures as fm
from slt.tasks.fingerspelling import sources as fs_sources
from slt.tasks.study import mixtures as em


def _read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]


def script(text: str) -> str | None:
    """The Unicode script most of `text`'s letters are in (LATIN, CYRILLIC, GREEK,
    ARABIC, ...); None without letters."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            if name:
                counts[name.split()[0]] = counts.get(name.split()[0], 0) + 1
    return max(counts, key=counts.get) if counts else None


def _target_language(task: str) -> str:
    """The spoken language of an E1 direction's outputs, from its name (`..._ase_de`)."""
    return "en" if task == fm.word_name("ase") else task.rsplit("_", 1)[1]


def _script_share(rows: list[dict]) -> float:
    return sum(script(r["prediction"]) == script(r["target"]) for r in rows) / len(rows)


def exact_match_share(rows: list[dict]) -> float:
    """Share of rows whose prediction equals the target, surrounding whitespace aside
    (a trailing space is not a different word)."""
    return sum(r["prediction"].strip() == r["target"].strip() for r in rows) / len(rows)


def script_accuracy(eval_dir: str, split: str = "test") -> dict[str, float]:
    """Per E1 direction, the share of predictions written in their reference's script:
    a coarse language check that holds on single words, where the language identifier
    is weak (it separates Latin from Cyrillic, Greek and Arabic only)."""
    return _per_task(eval_dir, E1_TASKS, split, _script_share)


def exact_match(eval_dir: str, tasks: Iterable[str], split: str = "test") -> dict[str, float]:
    """Per task of `tasks` whose predictions file is in `eval_dir`, `exact_match_share`
    of its predictions; tasks without the file (or rows) are left out."""
    return _per_task(eval_dir, tasks, split, exact_match_share)


def _per_task(eval_dir: str, tasks: Iterable[str], split: str, fn) -> dict[str, float]:
    """`fn(rows)` per task whose predictions file in `eval_dir` has rows."""
    out = {}
    for task in tasks:
        path = storage.join(eval_dir, f"{task}.{split}.predictions.jsonl")
        if storage.isfile(path):
            rows = _read_jsonl(path)
            if rows:
                out[task] = fn(rows)
    return out


def reference_language_accuracy(eval_dir: str, split: str = "test") -> dict[str, float]:
    """Per E1 direction, the language accuracy of the references themselves: how often
    the identifier places the correct single words in their language (the ceiling of
    a model's language accuracy here)."""
    out = {}
    for task in E1_TASKS:
        path = storage.join(eval_dir, f"{task}.{split}.predictions.jsonl")
        if storage.isfile(path):
            rows = _read_jsonl(path)
            targets = [r["target"] for r in rows]
            out[task] = metrics_lib.language_accuracy(
                targets, [_target_language(task)] * len(targets)
            )
    return out


def subset_metrics(rows: list[dict], language: str) -> dict[str, Any]:
    """The metrics of some rows of a direction, as the evaluation computes them for all
    of it: corpus chrF over these rows, language accuracy into `language`, script
    accuracy, empty rate, and `exact_match_share`."""
    predictions = [r["prediction"] for r in rows]
    scores = metrics_lib.translation_metrics(predictions, [r["target"] for r in rows])
    return {
        "num_examples": len(rows),
        "chrf": scores["chrf"],
        "exact_match": exact_match_share(rows),
        "language_accuracy": metrics_lib.language_accuracy(
            predictions, [language] * len(predictions)
        ),
        "script_accuracy": _script_share(rows),
        "empty_rate": scores["empty_rate"],
    }


def mt_overlap_breakdown(eval_dir: str, split: str = "test") -> dict[str, dict[str, Any]]:
    """For each zero-shot direction: `subset_metrics` of the held-out words whose
    (English, target) pair is in the MT training split (`in_mt_train`), and of the
    others (`not_in_mt_train`); a part without words is `{"num_examples": 0}`."""
    out = {}
    for language in em.E1_ZERO_SHOT:
        task = fm.aug_name(language)
        path = storage.join(eval_dir, f"{task}.{split}.predictions.jsonl")
        if not storage.isfile(path):
            continue
        train_pairs = {(r[1], r[2]) for r in fs_sources.cldr_pairs("en", language)["train"]}
        parts: dict[str, list] = {"in_mt_train": [], "not_in_mt_train": []}
        for row in _read_jsonl(path):
            word = row["id"].split("/")[1]  # ids are <sign>/<word>/<variant>
            known = (word, row["target"]) in train_pairs
            parts["in_mt_train" if known else "not_in_mt_train"].append(row)
        out[task] = {
            part: subset_metrics(part_rows, _target_language(task))
            if part_rows
            else {"num_examples": 0}
            for part, part_rows in parts.items()
        }
    return out
