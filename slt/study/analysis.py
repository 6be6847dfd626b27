"""What the study reads from a run's predictions beyond the evaluation's metrics:
script accuracy, the references' own language accuracy, and the zero-shot words split
by whether their MT pair was in training."""

from __future__ import annotations

import json
import unicodedata
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


def script_accuracy(eval_dir: str, split: str = "test") -> dict[str, float]:
    """Per E1 direction, the share of predictions written in their reference's script:
    a coarse language check that holds on single words, where the language identifier
    is weak (it separates Latin from Cyrillic, Greek and Arabic only)."""
    out = {}
    for task in E1_TASKS:
        path = storage.join(eval_dir, f"{task}.{split}.predictions.jsonl")
        if storage.isfile(path):
            rows = _read_jsonl(path)
            if rows:
                hits = sum(script(r["prediction"]) == script(r["target"]) for r in rows)
                out[task] = hits / len(rows)
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
            language = "en" if task == fm.word_name("ase") else task.rsplit("_", 1)[1]
            targets = [r["target"] for r in rows]
            out[task] = metrics_lib.language_accuracy(targets, [language] * len(targets))
    return out


def mt_overlap_breakdown(eval_dir: str, split: str = "test") -> dict[str, dict[str, Any]]:
    """For each zero-shot direction: chrF and exact match of the held-out words whose
    (English, target) pair is in the MT training split, and of the others."""
    out = {}
    for language in em.E1_ZERO_SHOT:
        task = fm.aug_name(language)
        path = storage.join(eval_dir, f"{task}.{split}.predictions.jsonl")
        if not storage.isfile(path):
            continue
        rows = _read_jsonl(path)
        train_pairs = {(r[1], r[2]) for r in fs_sources.cldr_pairs("en", language)["train"]}
        parts: dict[str, list] = {"in_mt_train": [], "not_in_mt_train": []}
        for row in rows:
            word = row["id"].split("/")[1]  # ids are <sign>/<word>/<variant>
            known = (word, row["target"]) in train_pairs
            parts["in_mt_train" if known else "not_in_mt_train"].append(row)
        out[task] = {}
        for part, part_rows in parts.items():
            if not part_rows:
                out[task][part] = {"num_examples": 0}
                continue
            m = metrics_lib.translation_metrics(
                [r["prediction"] for r in part_rows], [r["target"] for r in part_rows]
            )
            out[task][part] = {
                "num_examples": len(part_rows),
                "chrf": m["chrf"],
                "exact_match": m["exact_match"],
            }
    return out
