"""Every kind of paper task and mixture over the embedded corpus, offline.

Tasks (`<sign>_<spoken>` as in `fingerspelling_tasks.SIGN_TO_SPOKEN`):
  fingerspelling_word_slt_<sign>_<spoken>   one word -> the word: the examples of
                                            `fingerspelling_slt_<sign>_<spoken>`, shuffled
                                            before composition (small clip buffer), so
                                            the mixtures below start fast
  fingerspelling_slt_timed_<sign>_<spoken>  2-4 words -> each word with its frames
  fingerspelling_align_<sign>_<spoken>      2-4 words + their texts -> their frames
  fingerspelling_mt_en_<x>                  CLDR names, en -> x and x -> en
  fingerspelling_aug_slt_ase_<x>            an ASL word clip -> the CLDR name in x

Mixtures:
  fingerspelling_slt_timed, fingerspelling_align, fingerspelling_mt, fingerspelling_aug
  fingerspelling_pretrain_slt_align         SLT + alignment
  fingerspelling_pretrain_slt_mt            SLT + MT (p_mt)
  fingerspelling_pretrain_slt_mt_aug        SLT + alignment + augmented SLT + MT (p_mt)
  fingerspelling_finetune_ase_en / _gss_el / _sgg_de, fingerspelling_finetune_all
  fingerspelling_eval_ase_multilingual      ASL -> en and the 14 MT languages; the
                                            augmented pretraining covers only
                                            AUG_TRAIN_LANGUAGES, the rest are zero-shot
"""

from __future__ import annotations

import functools

import seqio

from slt.tasks import mixing
from slt.tasks.fingerspelling import sources as fs_sources
from slt.tasks.fingerspelling import tasks as fingerspelling_tasks
from slt.tasks.paper import tasks as paper_tasks

SIGN_TO_SPOKEN = fingerspelling_tasks.SIGN_TO_SPOKEN
CORPUS_SEED = fingerspelling_tasks.CORPUS_SEED
TRAIN_VARIANTS = fingerspelling_tasks.TRAIN_VARIANTS
# Spoken languages of the corpus other than English: MT pairs with English, and
# augmented-SLT targets for ASL.
MT_LANGUAGES = tuple(sorted(set(SIGN_TO_SPOKEN.values()) - {"en"}))
AUG_TRAIN_LANGUAGES = ("cs", "de", "es", "it", "pt", "sv", "tr")
FINETUNE = (("ase", "en"), ("gss", "el"), ("sgg", "de"))


def corpus_landmark_config():
    """The landmark config of the corpus tasks: frames standardised by corpus statistics."""
    return fingerspelling_tasks.standardized_config(CORPUS_SEED)


def add_aug_task(name: str, language: str, metric_fns=(), signed_text: bool = False) -> seqio.Task:
    """Augmented SLT over the corpus: an ASL word clip -> its CLDR name in `language`
    (only the words that have one); `signed_text` adds the English word as the task's
    `signed_text` feature."""
    translations = fs_sources.CldrTranslations("en", language)
    source = fs_sources.WordClipSource(
        "ase",
        "en",
        CORPUS_SEED,
        corpus_landmark_config,
        TRAIN_VARIANTS,
        only_words=functools.partial(lambda t: set(t.load()), translations),
    )
    return paper_tasks.add_augmented_slt_task(
        name,
        source,
        language,
        translations,
        sign_language="ase",
        key_field="text",
        metric_fns=metric_fns,
        landmark_config=corpus_landmark_config,
        shuffle_buffer_size=fs_sources.CLIP_SHUFFLE_BUFFER,
        signed_text=signed_text,
    )


def word_name(sign: str) -> str:
    return f"fingerspelling_word_slt_{sign}_{SIGN_TO_SPOKEN[sign]}"


def timed_name(sign: str) -> str:
    return f"fingerspelling_slt_timed_{sign}_{SIGN_TO_SPOKEN[sign]}"


def align_name(sign: str) -> str:
    return f"fingerspelling_align_{sign}_{SIGN_TO_SPOKEN[sign]}"


def mt_name(language: str) -> str:
    return f"fingerspelling_mt_en_{language}"


def aug_name(language: str) -> str:
    return f"fingerspelling_aug_slt_ase_{language}"


def register() -> None:
    buffer = fs_sources.CLIP_SHUFFLE_BUFFER
    slt, timed, align, mt, aug = [], [], [], [], []
    for sign, spoken in SIGN_TO_SPOKEN.items():
        words = fs_sources.WordClipSource(
            sign, spoken, CORPUS_SEED, corpus_landmark_config, TRAIN_VARIANTS
        )
        paper_tasks.add_slt_task(
            word_name(sign),
            words,
            languages_=(sign, spoken),
            metric_fns=paper_tasks.translation_metric_fns(spoken),
            landmark_config=corpus_landmark_config,
            shuffle_buffer_size=buffer,
        )
        slt.append(word_name(sign))
        source = fs_sources.MultiWordClipSource(
            sign, spoken, CORPUS_SEED, corpus_landmark_config, train_variants=TRAIN_VARIANTS
        )
        paper_tasks.add_slt_task(
            timed_name(sign),
            source,
            languages_=(sign, spoken),
            timed=True,
            landmark_config=corpus_landmark_config,
            shuffle_buffer_size=buffer,
        )
        paper_tasks.add_alignment_task(
            align_name(sign),
            source,
            languages_=(sign, spoken),
            landmark_config=corpus_landmark_config,
            shuffle_buffer_size=buffer,
        )
        timed.append(timed_name(sign))
        align.append(align_name(sign))
    for language in MT_LANGUAGES:
        paper_tasks.add_mt_task(
            mt_name(language),
            fs_sources.CldrParallelText("en", language),
            metric_fns=[paper_tasks.bleu_chrf],
        )
        mt.append(mt_name(language))
        add_aug_task(aug_name(language), language, paper_tasks.translation_metric_fns(language))
        aug.append(aug_name(language))
    aug_train = [aug_name(x) for x in AUG_TRAIN_LANGUAGES]

    mixing.register_mixture("fingerspelling_slt_timed", {"sign": timed})
    mixing.register_mixture("fingerspelling_align", {"sign": align})
    mixing.register_mixture("fingerspelling_mt", {"mt": mt})
    mixing.register_mixture("fingerspelling_aug", {"sign": aug_train})
    mixing.register_mixture("fingerspelling_pretrain_slt_align", {"sign": slt + align})
    mixing.register_mixture("fingerspelling_pretrain_slt_mt", {"sign": slt, "mt": mt})
    mixing.register_mixture(
        "fingerspelling_pretrain_slt_mt_aug", {"sign": slt + align + aug_train, "mt": mt}
    )
    for sign, spoken in FINETUNE:
        mixing.register_mixture(
            f"fingerspelling_finetune_{sign}_{spoken}", {"sign": [word_name(sign)]}
        )
    mixing.register_mixture(
        "fingerspelling_finetune_all", {"sign": [word_name(s) for s, _ in FINETUNE]}
    )
    mixing.register_mixture(
        "fingerspelling_eval_ase_multilingual", {"sign": [word_name("ase")] + aug}
    )


if "fingerspelling_pretrain_slt_mt_aug" not in seqio.MixtureRegistry.names():
    register()
