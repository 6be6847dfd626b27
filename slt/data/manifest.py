"""Manifests: which clips `slt.prepare` turns into training data.

A manifest is JSONL (one object per line) or TSV (a header line, then one row per
clip; the `captions` cell holds JSON). Fields:

  path             required. A video, `.pose`, `.npy` or `.npz` file; relative paths
                   are relative to the manifest's directory.
  text             the caption (translation target). Required unless `captions`.
  sign_language    ISO 639-3 code, e.g. "ase" (see slt/tasks/languages.py).
  spoken_language  BCP-47 code, e.g. "en".
  start, end       optional, seconds: only frames in [start, end) are used.
  captions         optional, for multi-caption clips: a list of
                   {"text", "start", "end"} (seconds from the start of the file). If
                   `text` is absent, it is the captions' texts joined by spaces.
  id               optional; default "<manifest name>:<line number>".
  fps              optional; the frame rate of a `.npy` file (which stores none), or an
                   override. Needed for start/end and target_fps.

  text_<code>      optional; the caption translated into spoken language <code> (e.g.
                   `text_de`), read by `slt.tasks.sources.TranslationTable(column=...)`.
  x_<anything>     optional; your own fields, kept out of every check.

An empty value (a JSONL `""`, an empty TSV cell) is the same as an absent field.

Any other field rejects the row as `unknown_field`, in JSONL and TSV alike (there, a
header column): a misnamed field is not ignored, since `caption` for `text` or `video`
for `path` would change what the row means. The message names the file and line, the
field, the known fields and the field likely meant (`ALIASES`, else the closest name).

Parsing is separate from reading the landmark files so that every row-level
problem (bad JSON, unknown field, empty or non-UTF-8 caption, unknown language, start
after end) is found without touching a file. Non-UTF-8 bytes are kept (as surrogate
escapes) until the caption check, so such a row is reported, not lost.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import json
from collections.abc import Collection, Iterator

from slt import storage
from slt.data import errors

REQUIRED = ("path", "sign_language", "spoken_language")
FIELDS = (*REQUIRED, "text", "captions", "start", "end", "id", "fps")
TRANSLATION_PREFIX = "text_"  # text_<spoken language code>
OWN_PREFIX = "x_"
# Names other manifests and datasets use for a field -> the field(s) meant.
ALIASES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            "caption",
            "sentence",
            "translation",
            "transcript",
            "transcription",
            "subtitle",
            "label",
            "target",
            "utterance",
            "txt",
        ),
        ("text",),
    ),
    **dict.fromkeys(("segments", "subtitles", "sentences"), ("captions",)),
    **dict.fromkeys(
        (
            "video",
            "video_path",
            "video_file",
            "file",
            "filename",
            "file_name",
            "filepath",
            "file_path",
            "pose",
            "pose_path",
            "landmarks",
            "src",
        ),
        ("path",),
    ),
    **dict.fromkeys(("lang", "language", "languages"), ("sign_language", "spoken_language")),
    **dict.fromkeys(
        ("sign_lang", "signed_language", "sign", "sl", "source_language"), ("sign_language",)
    ),
    **dict.fromkeys(
        ("spoken_lang", "text_language", "target_language", "tl"), ("spoken_language",)
    ),
    **dict.fromkeys(
        ("start_time", "start_sec", "start_s", "start_seconds", "begin", "onset"), ("start",)
    ),
    **dict.fromkeys(("end_time", "end_sec", "end_s", "end_seconds", "stop"), ("end",)),
    **dict.fromkeys(("name", "clip_id", "video_id", "example_id", "uid", "key"), ("id",)),
    **dict.fromkeys(("frame_rate", "framerate", "frames_per_second"), ("fps",)),
}


@dataclasses.dataclass(frozen=True)
class Caption:
    text: str
    start: float
    end: float


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """One manifest row, validated."""

    id: str
    path: str
    text: str
    sign_language: str
    spoken_language: str
    start: float | None = None
    end: float | None = None
    fps: float | None = None
    captions: tuple[Caption, ...] = ()


@dataclasses.dataclass(frozen=True)
class RowError:
    """A manifest row refused before any file is read."""

    id: str
    path: str
    reason: str
    message: str


def read_lines(manifest_path: str) -> list[str]:
    """The manifest's lines, bytes decoded as UTF-8 with surrogate escapes."""
    raw = storage.read_bytes(manifest_path)  # a local path or gs://...
    return raw.decode("utf-8", errors="surrogateescape").splitlines()


def raw_rows(manifest_path: str, lines: list[str]) -> Iterator[tuple[str, dict | str]]:
    """(row id, field dict) per data row, or (row id, error text) if unparsable."""
    name = storage.name(manifest_path)
    is_tsv = manifest_path.endswith((".tsv", ".tab"))
    if is_tsv:
        if not lines:
            return
        header = lines[0].split("\t")
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            cells = next(csv.reader(io.StringIO(line), delimiter="\t", quoting=csv.QUOTE_NONE))
            if len(cells) != len(header):
                yield f"{name}:{number}", (f"has {len(cells)} cells, the header {len(header)}")
                continue
            yield f"{name}:{number}", dict(zip(header, cells))
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield f"{name}:{number}", f"is not valid JSON ({e})"
            continue
        if not isinstance(row, dict):
            yield f"{name}:{number}", "is not a JSON object"
            continue
        yield f"{name}:{number}", row


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _seconds(row: dict, key: str) -> float | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    return float(value)


def likely_fields(field: str) -> tuple[str, ...]:
    """The manifest field(s) an unknown `field` most likely means; () if none is close."""
    key = field.strip().lower().replace("-", "_").replace(" ", "_")
    if key in FIELDS:
        return (key,)
    if key in ALIASES:
        return ALIASES[key]
    return tuple(difflib.get_close_matches(key, FIELDS, n=1, cutoff=0.6))


def unknown_fields(row: dict, spoken_languages: Collection[str]) -> list[str]:
    """The fields of `row` the manifest does not define, in row order."""

    def known(field: str) -> bool:
        if field in FIELDS or field.startswith(OWN_PREFIX):
            return True
        code = field.removeprefix(TRANSLATION_PREFIX)
        return code != field and code in spoken_languages

    return [field for field in row if not known(field)]


def _unknown_field_message(where: str, fields: list[str]) -> str:
    described = []
    for field in fields:
        likely = likely_fields(field)
        meant = " or ".join(repr(f) for f in likely)
        described.append(f"{field!r} (did you mean {meant}?)" if likely else repr(field))
    return (
        f"{where}: unknown field{'s' if len(fields) > 1 else ''} {', '.join(described)}. "
        f"The known fields are {', '.join(FIELDS)}, {TRANSLATION_PREFIX}<spoken language "
        f"code> and {OWN_PREFIX}<name> (your own). Rename the field to the one meant, or "
        f"prefix it with {OWN_PREFIX} to keep it out of the checks."
    )


def parse_row(
    row_id: str,
    row: dict | str,
    manifest_dir: str,
    sign_languages: Collection[str],
    spoken_languages: Collection[str],
) -> ClipSpec | RowError:
    """Validates one raw row; a RowError names the row, the field and the fix."""
    if isinstance(row, str):
        return RowError(row_id, "", "bad_manifest_row", f"{row_id}: the row {row}.")
    where = row_id  # <manifest name>:<line number>
    unknown = unknown_fields(row, spoken_languages)
    row = {k: v for k, v in row.items() if v != ""}
    path = str(row.get("path", ""))
    row_id = str(row.get("id", row_id))
    if unknown:
        if row_id != where:
            where = f"{where} (id {row_id!r})"
        return RowError(row_id, path, "unknown_field", _unknown_field_message(where, unknown))
    lacking = [k for k in REQUIRED if not str(row.get(k, "")).strip()]
    if lacking:
        return RowError(
            row_id,
            path,
            "bad_manifest_row",
            f"{row_id}: the row lacks {lacking}; every row needs {REQUIRED} "
            "and a `text` or `captions`.",
        )
    path = storage.resolve(manifest_dir, path)  # relative paths are under the manifest's dir
    try:
        start, end = _seconds(row, "start"), _seconds(row, "end")
        fps = _seconds(row, "fps")
        captions_field = row.get("captions") or []
        if isinstance(captions_field, str):
            captions_field = json.loads(captions_field)
        captions = tuple(
            Caption(str(c["text"]), float(c["start"]), float(c["end"])) for c in captions_field
        )
    except (ValueError, TypeError, KeyError) as e:
        return RowError(
            row_id,
            path,
            "bad_manifest_row",
            f"{row_id}: start/end/fps must be numbers (seconds) and captions "
            f"a list of {{text, start, end}} ({type(e).__name__}: {e}).",
        )
    text = row.get("text")
    if text is None and captions:
        text = " ".join(c.text for c in captions)
    texts = [str(text or "")] + [c.text for c in captions]
    for t in texts:
        if not _utf8(t):
            return RowError(
                row_id,
                path,
                "caption_not_utf8",
                f"{row_id}: the caption is not valid UTF-8 "
                f"({t.encode('utf-8', 'surrogateescape')[:40]!r}); re-encode "
                "the manifest as UTF-8.",
            )
        if not t.strip():
            return RowError(
                row_id,
                path,
                "empty_caption",
                f"{row_id}: the caption is empty; give `text` (or non-empty "
                "`captions`), or drop the row.",
            )
    sign, spoken = str(row["sign_language"]), str(row["spoken_language"])
    if sign not in sign_languages:
        return RowError(
            row_id,
            path,
            "unknown_sign_language",
            f"{row_id}: sign_language {sign!r} is not one of "
            f"{sorted(sign_languages)}; use an ISO 639-3 code or add it to "
            "slt/tasks/languages.py.",
        )
    if spoken not in spoken_languages:
        return RowError(
            row_id,
            path,
            "unknown_spoken_language",
            f"{row_id}: spoken_language {spoken!r} is not one of "
            f"{sorted(spoken_languages)}; use a BCP-47 code or add it to "
            "slt/tasks/languages.py.",
        )
    for label, (s, e) in [("start/end", (start, end))] + [
        (f"caption {c.text[:20]!r}", (c.start, c.end)) for c in captions
    ]:
        if s is not None and e is not None and not s < e:
            return RowError(
                row_id,
                path,
                "start_after_end",
                f"{row_id}: {label} start {s} is not before end {e} (seconds).",
            )
        if (s is not None and s < 0) or (e is not None and e < 0):
            return RowError(
                row_id,
                path,
                "bad_manifest_row",
                f"{row_id}: {label} times must be >= 0 seconds, got {s}, {e}.",
            )
    return ClipSpec(
        id=row_id,
        path=path,
        text=str(text),
        sign_language=sign,
        spoken_language=spoken,
        start=start,
        end=end,
        fps=fps,
        captions=captions,
    )


def bad_row_record(error: RowError) -> dict:
    return {"id": error.id, "path": error.path, "reason": error.reason, "message": error.message}


REASONS = errors.REASONS
