"""Mixtures of the study in experiments/ (docs/results.md), over the embedded corpus.

E1, zero-shot SLT through MT data (the paper's Fig. 3b and Table 10):
  experiment_e1_slt_aug              arm A: ASL -> English SLT, plus augmented SLT from
                                     ASL into the languages S (`E1_SEEN`)
  experiment_e1_slt_aug_mt           arm B: arm A plus MT between English and every
                                     language of S and Z (`E1_ZERO_SHOT`), both
                                     directions, p_mt of the batch
  experiment_e1_slt_aug_mt_disjoint  arm B with MT pairs whose English side is a
                                     held-out ASL word (validation or test) left out
  The arms are evaluated on `fingerspelling_eval_ase_multilingual`: ASL -> English and
  the 14 other languages, on the held-out ASL words.

E2, more sign languages:
  experiment_e2_ase                  SLT on the ASL lexicon only
  experiment_e2_all_signs            SLT on all 19 lexicons

Where MT knowledge of a held-out word can come from: the CLDR MT pairs are split by
CLDR key, independently of the word split of the sign corpus, so about 80% of the
held-out ASL words have their pair in MT training (`mt_overlap` counts them). This is
the paper's situation: its MT data is general text, not split against the SLT test
captions. The `_disjoint` MT tasks remove that overlap.
"""

from __future__ import annotations

import functools

import seqio

from slt.tasks import mixing, sources
from slt.tasks.fingerspelling import corpus as fingerspelling
from slt.tasks.fingerspelling import mixtures as fm
from slt.tasks.fingerspelling import sources as fs_sources
from slt.tasks.paper import tasks as paper_tasks

E1_SEEN = fm.AUG_TRAIN_LANGUAGES
E1_ZERO_SHOT = tuple(x for x in fm.MT_LANGUAGES if x not in E1_SEEN)
E1_EVAL = "fingerspelling_eval_ase_multilingual"
HELD_OUT_SPLITS = ("validation", "test")


@functools.cache
def held_out_asl_words() -> frozenset[str]:
    """The ASL (English) words of the validation and test splits of the sign corpus."""
    splits = fingerspelling.word_splits("ase", seed=fm.CORPUS_SEED)[0]
    return frozenset(w for s in HELD_OUT_SPLITS for w in splits[s])


def mt_overlap(language: str, split: str = "test") -> dict[str, int]:
    """How many held-out ASL words of `split` with a CLDR name in `language` have that
    (English, `language`) pair in the MT training split: {"words", "in_mt_train"}."""
    translations = fs_sources.cldr_word_translations("en", language)
    train = {(r[1], r[2]) for r in fs_sources.cldr_pairs("en", language)["train"]}
    words = fingerspelling.word_splits("ase", seed=fm.CORPUS_SEED)[0][split]
    words = [w for w in words if w in translations]
    return {"words": len(words), "in_mt_train": sum((w, translations[w]) in train for w in words)}


class CldrParallelTextWithoutHeldOut(fs_sources.CldrParallelText):
    """CLDR pairs of English and another language, without the training pairs whose
    English name is a held-out ASL word; each left-out pair is counted in
    `slt.tasks.sources.SKIPPED`."""

    def __init__(self, language: str, seed: int = 0):
        super().__init__("en", language, seed)
        self.name = f"cldr_en_{language}_without_held_out_asl"

    def _rows(self, split: str) -> tuple[tuple[str, str, str], ...]:
        rows = super()._rows(split)
        if split != "train":
            return rows
        held_out = held_out_asl_words()
        return tuple(r for r in rows if r[1] not in held_out)

    def dataset(self, split, shuffle, seed, shard_info):
        all_rows = super()._rows(split)
        rows = self._rows(split)
        if len(rows) < len(all_rows):
            sources.SKIPPED.add(
                f"{self.name}: MT pair whose English side is a held-out ASL word",
                len(all_rows) - len(rows),
            )
        return super().dataset(split, shuffle, seed, shard_info)


def disjoint_mt_name(language: str) -> str:
    return f"experiment_mt_disjoint_en_{language}"


def word_name() -> str:
    return "experiment_word_slt_ase_en"


def aug_name(language: str) -> str:
    return f"experiment_aug_slt_ase_{language}"


def mt_name(language: str) -> str:
    return f"experiment_mt_en_{language}"


def _register_e1_tasks() -> None:
    """E1's training tasks: the corpus's ASL word, augmented-SLT and MT tasks, each with
    the `signed_text` feature (the English word a clip spells; empty for MT), which the
    encoder's CTC loss learns in every E1 arm (experiments/base.gin)."""
    config, buffer = fm.corpus_landmark_config, fs_sources.CLIP_SHUFFLE_BUFFER
    paper_tasks.add_slt_task(
        word_name(),
        fs_sources.WordClipSource("ase", "en", fm.CORPUS_SEED, config, fm.TRAIN_VARIANTS),
        languages_=("ase", "en"),
        landmark_config=config,
        shuffle_buffer_size=buffer,
        signed_text=True,
    )
    for language in E1_SEEN:
        fm.add_aug_task(aug_name(language), language, signed_text=True)
    for language in fm.MT_LANGUAGES:
        paper_tasks.add_mt_task(
            mt_name(language), fs_sources.CldrParallelText("en", language), signed_text=True
        )
        paper_tasks.add_mt_task(
            disjoint_mt_name(language),
            CldrParallelTextWithoutHeldOut(language),
            metric_fns=[paper_tasks.bleu_chrf],
            signed_text=True,
        )


def register() -> None:
    _register_e1_tasks()
    disjoint = [disjoint_mt_name(x) for x in fm.MT_LANGUAGES]
    sign = [word_name()] + [aug_name(x) for x in E1_SEEN]
    mt = [mt_name(x) for x in fm.MT_LANGUAGES]
    mixing.register_mixture("experiment_e1_slt_aug", {"sign": sign})
    mixing.register_mixture("experiment_e1_slt_aug_mt", {"sign": sign, "mt": mt})
    mixing.register_mixture("experiment_e1_slt_aug_mt_disjoint", {"sign": sign, "mt": disjoint})
    mixing.register_mixture("experiment_e2_ase", {"sign": [fm.word_name("ase")]})
    mixing.register_mixture(
        "experiment_e2_all_signs", {"sign": [fm.word_name(s) for s in fm.SIGN_TO_SPOKEN]}
    )


if "experiment_e1_slt_aug" not in seqio.MixtureRegistry.names():
    register()
