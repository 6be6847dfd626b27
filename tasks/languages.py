"""Languages the project knows, and the one task-prompt builder.

Prompts are plain text in the model's vocabulary: `<task> <src> <tgt>`, e.g.
`<slt> <ase> <en>`. Sign languages are named by ISO 639-3 code, spoken languages
by BCP-47 code. With ByT5 the prompt is simply its UTF-8 bytes.
"""
from __future__ import annotations

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

SPOKEN_LANGUAGES: dict[str, str] = {
    "ar": "Arabic",
    "cs": "Czech",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fr": "French",
    "hr": "Croatian",
    "it": "Italian",
    "lt": "Lithuanian",
    "pt": "Portuguese",
    "sk": "Slovak",
    "sv": "Swedish",
    "tr": "Turkish",
    "uk": "Ukrainian",
}


def _check_language(code: str) -> None:
    if code not in SIGN_LANGUAGES and code not in SPOKEN_LANGUAGES:
        raise ValueError(
            f"unknown language code {code!r}: use an ISO 639-3 sign language code "
            f"({', '.join(sorted(SIGN_LANGUAGES))}) or a BCP-47 spoken language code "
            f"({', '.join(sorted(SPOKEN_LANGUAGES))}); add new ones to tasks/languages.py.")


def prompt(task: str, source_language: str, target_language: str) -> str:
    """The encoder's text prompt, e.g. `prompt("slt", "ase", "en") == "<slt> <ase> <en>"`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}.")
    _check_language(source_language)
    _check_language(target_language)
    return f"<{task}> <{source_language}> <{target_language}>"
