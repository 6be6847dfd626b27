"""Caption files (WebVTT, SRT) -> cues, every cue kept or dropped with a reason.

Cue timing and text are parsed by webvtt-py (WebVTT: cue settings, voice and class
tags, NOTE/STYLE/REGION blocks) and srt (SubRip, strict about timestamps). Both
parsers skip or refuse a whole file on one bad cue, so the file is first cut into
its blank-line-separated blocks and each block is parsed alone: one bad timestamp
costs one cue, and that cue is counted.

Filters (YouTube-ASL's, Uthus et al. 2023): drop captions over 300 characters and
segments shorter than 0.2 s or longer than 60 s. A cue that starts before the
previous kept cue ends (YouTube's rolling captions repeat lines) is dropped as
`overlapping_cue`.
"""

from __future__ import annotations

import dataclasses
import datetime
import re

import srt
import webvtt

CAPTION_EXTENSIONS = (".vtt", ".srt")
MAX_CHARACTERS = 300
MIN_SECONDS = 0.2
MAX_SECONDS = 60.0

# Why a cue is dropped, and what to do about it.
DROP_REASONS = {
    "bad_timestamp": "the timing line is not `start --> end` in the format's timestamps",
    "bad_cue": "the block is neither a cue nor a header, NOTE, STYLE or REGION block",
    "caption_not_utf8": "the cue's text is not valid UTF-8; re-encode the file or pass --encoding",
    "empty_cue": "the cue has no text (after removing markup)",
    "start_after_end": "the cue's start is not before its end",
    "text_too_long": f"over {MAX_CHARACTERS} characters (YouTube-ASL's filter)",
    "too_short": f"shorter than {MIN_SECONDS} s (YouTube-ASL's filter)",
    "too_long": f"longer than {MAX_SECONDS} s (YouTube-ASL's filter)",
    "overlapping_cue": "starts before the previous kept cue ends",
}

_BLOCKS = re.compile(r"\n[ \t]*\n")
_TAGS = re.compile(r"</?[a-zA-Z][^>]*>")  # SRT's <i>, <b>, <font ...>
_VTT_NON_CUES = ("WEBVTT", "NOTE", "STYLE", "REGION")


@dataclasses.dataclass(frozen=True)
class Cue:
    text: str
    start: float  # seconds
    end: float


@dataclasses.dataclass(frozen=True)
class DroppedCue:
    block: int  # 1-based index of the block in the file
    reason: str  # a key of DROP_REASONS
    message: str
    text: str = ""
    start: float | None = None
    end: float | None = None


def decode(data: bytes, encoding: str = "utf-8") -> str:
    """Bytes -> text, a BOM removed; undecodable bytes kept as surrogate escapes so
    that the cue holding them is dropped and counted, not the whole file."""
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"
    return data.decode(encoding, errors="surrogateescape")


def _clean(text: str) -> str:
    return " ".join(_TAGS.sub(" ", text).split())


def _vtt_seconds(timestamp) -> float:
    return (
        timestamp.hours * 3600
        + timestamp.minutes * 60
        + timestamp.seconds
        + timestamp.milliseconds / 1000
    )


def _parse_vtt_block(block: str) -> tuple[str, float, float] | str:
    """(text, start, end), or the drop reason."""
    if "-->" not in block:
        return "bad_cue"
    try:
        parsed = webvtt.from_string("WEBVTT\n\n" + block + "\n").captions
    except Exception:  # noqa: BLE001 - any parser failure is this cue's bad timestamp
        return "bad_timestamp"
    if len(parsed) != 1:
        return "bad_timestamp"
    cue = parsed[0]
    return cue.text, _vtt_seconds(cue.start_time), _vtt_seconds(cue.end_time)


def _parse_srt_block(block: str) -> tuple[str, float, float] | str:
    if "-->" not in block:
        return "bad_cue"
    try:
        parsed = list(srt.parse(block + "\n\n"))
    except (srt.SRTParseError, ValueError):
        return "bad_timestamp"
    if len(parsed) != 1:
        return "bad_timestamp"
    # srt reads "00:00:0z,000" as 00:00:00 followed by proprietary text "z,000":
    # both timestamps of the timing line must parse whole.
    timing = next(line for line in block.splitlines() if "-->" in line)
    start_text, _, rest = timing.partition("-->")
    try:
        for token in (start_text.strip(), (rest.split() or [""])[0]):
            srt.srt_timestamp_to_timedelta(token)
    except (srt.TimestampParseError, ValueError):
        return "bad_timestamp"
    cue = parsed[0]
    seconds = datetime.timedelta.total_seconds
    return cue.content, seconds(cue.start), seconds(cue.end)


def parse(text: str, name: str) -> tuple[list[Cue], list[DroppedCue]]:
    """Cues of a .vtt or .srt file's text, kept or dropped (see the module docstring)."""
    is_vtt = name.lower().endswith(".vtt")
    blocks = [b.strip("\n") for b in _BLOCKS.split(text.replace("\r\n", "\n").replace("\r", "\n"))]
    kept: list[Cue] = []
    dropped: list[DroppedCue] = []
    for number, block in enumerate(blocks, start=1):
        if not block.strip():
            continue
        if is_vtt and block.lstrip().startswith(_VTT_NON_CUES):
            continue  # the header and NOTE, STYLE, REGION blocks carry no captions
        parsed = _parse_vtt_block(block) if is_vtt else _parse_srt_block(block)
        if isinstance(parsed, str):
            first_line = block.splitlines()[0][:80]
            dropped.append(
                DroppedCue(
                    number,
                    parsed,
                    f"{name}: block {number} ({first_line!r}): {DROP_REASONS[parsed]}.",
                )
            )
            continue
        raw, start, end = parsed
        caption = _clean(raw)
        reason = _check(caption, start, end, kept[-1] if kept else None)
        if reason:
            dropped.append(
                DroppedCue(
                    number,
                    reason,
                    f"{name}: cue {number} at {start:.3f}-{end:.3f} s: {DROP_REASONS[reason]}.",
                    caption.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                    start,
                    end,
                )
            )
            continue
        kept.append(Cue(caption, start, end))
    return kept, dropped


def _check(text: str, start: float, end: float, previous: Cue | None) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "caption_not_utf8"
    if not text:
        return "empty_cue"
    if not start < end:
        return "start_after_end"
    if len(text) > MAX_CHARACTERS:
        return "text_too_long"
    if end - start < MIN_SECONDS:
        return "too_short"
    if end - start > MAX_SECONDS:
        return "too_long"
    if previous is not None and start < previous.end:
        return "overlapping_cue"
    return None
