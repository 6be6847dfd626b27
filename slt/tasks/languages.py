"""Languages the project knows, and the one task-prompt builder.

Prompts are plain text in the model's vocabulary: `<task> <src> <tgt>`, e.g.
`<slt> <ase> <en>`. Sign languages are named by ISO 639-3 code, spoken languages
by BCP-47 code. With ByT5 the prompt is simply its UTF-8 bytes.

With a SentencePiece vocabulary (mT5) no piece is added for the tags. They survive as
stable pieces because every tag is a whitespace-separated word and SentencePiece (with
its default `split_by_whitespace`) never makes a piece that crosses a word boundary:
`<slt>` is always the same few pieces (e.g. `▁<`, `s`, `lt`, `>`), whatever stands
before or after it. `check_prompt_pieces(vocabulary)` verifies this for a vocabulary.
Prompts never add vocabulary entries, so pretrained embedding tables load unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

TASKS = ("slt", "align", "mt")

SIGN_LANGUAGES: dict[str, str] = {
    "ase": "American Sign Language",
    "asq": "Austrian Sign Language",
    "bzs": "Brazilian Sign Language",
    "csq": "Croatian Sign Language",
    "cse": "Czech Sign Language",
    "eso": "Estonian Sign Language",
    "fsl": "French Sign Language",
    "gsg": "German Sign Language",
    "gss": "Greek Sign Language",
    "ise": "Italian Sign Language",
    "jos": "Jordanian Sign Language",
    "lls": "Lithuanian Sign Language",
    "mfs": "Mexican Sign Language",
    "psr": "Portuguese Sign Language",
    "sgg": "Swiss-German Sign Language",
    "slf": "Swiss-Italian Sign Language",
    "ssp": "Spanish Sign Language",
    "ssr": "Swiss-French Sign Language",
    "svk": "Slovakian Sign Language",
    "swl": "Swedish Sign Language",
    "tsm": "Turkish Sign Language",
    "ukl": "Ukrainian Sign Language",
}

# The 42 target languages of the FLEURS-ASL#0 evaluation (ASL -> 42 languages). The
# paper names the count, not the list; these are 42 FLORES/FLEURS languages that
# mT5 covers, English first. Replace the tuple to evaluate other directions.
FLEURS_ASL0_LANGUAGES: tuple[str, ...] = (
    "en",
    "ar",
    "bg",
    "bn",
    "ca",
    "cs",
    "da",
    "de",
    "el",
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

SPOKEN_LANGUAGES: dict[str, str] = {
    "ar": "Arabic",
    "bg": "Bulgarian",
    "bn": "Bangla",
    "ca": "Catalan",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fa": "Persian",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "hu": "Hungarian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "ms": "Malay",
    "nb": "Norwegian Bokmål",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sr": "Serbian",
    "sv": "Swedish",
    "sw": "Swahili",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "vi": "Vietnamese",
    "zh": "Chinese",
}


def _check_language(code: str) -> None:
    if code not in SIGN_LANGUAGES and code not in SPOKEN_LANGUAGES:
        raise ValueError(
            f"unknown language code {code!r}: use an ISO 639-3 sign language code "
            f"({', '.join(sorted(SIGN_LANGUAGES))}) or a BCP-47 spoken language code "
            f"({', '.join(sorted(SPOKEN_LANGUAGES))}); add new ones to slt/tasks/languages.py."
        )


def prompt(task: str, source_language: str, target_language: str) -> str:
    """The encoder's text prompt, e.g. `prompt("slt", "ase", "en") == "<slt> <ase> <en>"`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}.")
    _check_language(source_language)
    _check_language(target_language)
    return f"<{task}> <{source_language}> <{target_language}>"


def prompt_tensor(task, source_language, target_language):
    """`prompt` built in the graph from string tensors (per-example languages).

    The codes are not checked here: manifests are checked against this registry when
    they are prepared (`slt.prepare`), and `check_codes` checks other sources.
    """
    import tensorflow as tf

    return tf.strings.join(["<", task, "> <", source_language, "> <", target_language, ">"])


def check_codes(codes: Iterable[str], where: str) -> None:
    """Raises naming `where` if any code is not in the registry."""
    unknown = sorted({c for c in codes if c not in SIGN_LANGUAGES and c not in SPOKEN_LANGUAGES})
    if unknown:
        raise ValueError(
            f"{where}: unknown language codes {unknown}; use ISO 639-3 for sign "
            "and BCP-47 for spoken languages, and add new ones to "
            "slt/tasks/languages.py."
        )


@functools.cache
def all_tags() -> tuple[str, ...]:
    """Every prompt tag: `<slt>`, `<align>`, `<mt>` and one per language."""
    return tuple(f"<{name}>" for name in (*TASKS, *SIGN_LANGUAGES, *SPOKEN_LANGUAGES))


def check_prompt_pieces(vocabulary) -> dict[str, tuple[int, ...]]:
    """Checks that each prompt tag encodes to the same ids alone and inside prompts.

    `vocabulary` is a seqio Vocabulary (ByT5 bytes or a SentencePiece model such as
    mT5's). Returns tag -> ids; raises ValueError naming the first unstable tag and
    the context it changed in. Also checks that decoding the ids gives the tag back.
    """
    ids = {tag: tuple(vocabulary.encode(tag)) for tag in all_tags()}
    contexts = (
        [prompt(t, "ase", "en") for t in TASKS]
        + [prompt("slt", s, "en") for s in SIGN_LANGUAGES]
        + [prompt("mt", "en", t) for t in SPOKEN_LANGUAGES]
        + [prompt("mt", t, "en") + " Hello world." for t in SPOKEN_LANGUAGES]
    )
    for text in contexts:
        encoded = list(vocabulary.encode(text))
        for tag in text.split(" ")[:3]:
            tag_ids = list(ids[tag])
            if not any(
                encoded[i : i + len(tag_ids)] == tag_ids
                for i in range(len(encoded) - len(tag_ids) + 1)
            ):
                raise ValueError(
                    f"the prompt tag {tag} is not a stable piece sequence in "
                    f"{text!r}: {tag_ids} (alone) is not inside {encoded}."
                )
    for tag, tag_ids in ids.items():
        if vocabulary.decode(list(tag_ids)).strip() != tag:
            raise ValueError(f"{tag!r} does not decode back from its ids {tag_ids}.")
    return ids
