"""python -m slt.manifest_makers: manifests for `slt.prepare` from downloads and releases.

  # A folder of YouTube downloads: VIDEO.mp4 with VIDEO.vtt / VIDEO.en.vtt / VIDEO.srt
  python -m slt.manifest_makers youtube --input_dir=downloads --output=clips.jsonl \\
    --sign_language=ase --spoken_language=en [--level=clip --max_clip_seconds=16]

  # How2Sign's sentence-level CSV (tab-separated)
  python -m slt.manifest_makers how2sign --csv=how2sign_realigned_test.csv \\
    --videos_dir=test_rgb_front_clips/raw_videos --layout=raw --output=h2s_test.jsonl

`youtube` writes one row per kept caption (`--level=sentence`), or rows of several
consecutive captions with their times (`--level=clip`, how the paper pretrains), a
clip ending before it would exceed `--max_clip_seconds` or at a gap over
`--max_gap_seconds`. Captions go through YouTube-ASL's filters (`slt/data/captions.py`).
Every caption or file not turned into a row is written to the report (`--output` with
`.report.jsonl` for its extension, or `--report`) with its reason, and the counts are
printed: captions = kept + dropped, always.

Paths in the manifest are relative to its directory (absolute where they cannot be: a
`gs://` file outside a `gs://` manifest's directory). Inputs and outputs may be local
or `gs://` paths (through `slt.storage`). The languages are checked as `slt.prepare`
checks them (slt/tasks/languages.py).
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import io
import json
import logging
import sys
from collections.abc import Collection, Iterable

from slt import gin_utils, storage
from slt.data import captions
from slt.io import readers

log = logging.getLogger(__name__)

MEDIA_EXTENSIONS = readers.VIDEO_EXTENSIONS + readers.POSE_EXTENSIONS + readers.ARRAY_EXTENSIONS
DEFAULT_MAX_CLIP_SECONDS = 16.0  # 256 frames at 30 fps after prepare's default frame_step 2
DEFAULT_MAX_GAP_SECONDS = 3.0

FILE_REASONS = {
    "no_captions": "a video with no caption file in the spoken language",
    "no_video": "a caption file with no video of the same name (its cues are not read)",
    "other_language": "a caption file tagged with another spoken language",
    "duplicate_caption_file": "a second caption file for a video that has one already",
    "unreadable_file": "the caption file cannot be read or decoded",
}
ROW_REASONS = {
    "missing_column": "the CSV lacks a column the release defines",
    "missing_video": "the row's video file does not exist under --videos_dir",
    "bad_timestamp": "a start or end time is not a number",
    "start_after_end": "the start time is not before the end time",
    "empty_caption": "the sentence is empty",
}


@dataclasses.dataclass
class Made:
    """What a maker wrote: manifest rows and report records (dropped inputs)."""

    rows: list[dict] = dataclasses.field(default_factory=list)
    report: list[dict] = dataclasses.field(default_factory=list)
    num_captions: int = 0  # captions (cues or CSV rows) read
    num_kept: int = 0  # captions in some row

    def drop(self, reason: str, message: str, **fields) -> None:
        self.report.append({"reason": reason, "message": message, **fields})

    def counts(self) -> dict:
        by_reason = collections.Counter(r["reason"] for r in self.report)
        return {
            "rows": len(self.rows),
            "captions": self.num_captions,
            "captions_kept": self.num_kept,
            "captions_dropped": self.num_captions - self.num_kept,
            "dropped_by_reason": dict(sorted(by_reason.items())),
        }


def check_languages(
    sign_language: str,
    spoken_language: str,
    sign_languages: Collection[str],
    spoken_languages: Collection[str],
) -> None:
    """Raises ValueError naming the flag and the fix, as prepare reports a row."""
    if sign_language not in sign_languages:
        raise ValueError(
            f"--sign_language {sign_language!r} is not one of {sorted(sign_languages)}; use "
            "an ISO 639-3 code or add it to slt/tasks/languages.py."
        )
    if spoken_language not in spoken_languages:
        raise ValueError(
            f"--spoken_language {spoken_language!r} is not one of {sorted(spoken_languages)}; "
            "use a BCP-47 code or add it to slt/tasks/languages.py."
        )


def _relative(path: str, manifest_dir: str) -> str:
    return storage.relative_to(path, manifest_dir)


def _pair_files(input_dir: str, spoken_language: str, made: Made):
    """(video, caption file) pairs under input_dir; unpaired files are reported."""
    videos: dict[str, str] = {}  # path without extension -> video path
    caption_files = []
    for path in storage.walk_files(input_dir):
        base, extension = storage.split_extension(path)
        if extension.lower() in MEDIA_EXTENSIONS:
            videos[base] = path
        elif extension.lower() in captions.CAPTION_EXTENSIONS:
            caption_files.append(path)
    language = spoken_language.split("-")[0].lower()
    chosen: dict[str, str] = {}
    for path in caption_files:
        base = storage.split_extension(path)[0]
        if base in videos:
            key, tag = base, None
        else:
            key, _, tag = base.rpartition(".")
            if key not in videos:
                made.drop(
                    "no_video",
                    f"{path}: no video named {storage.name(base)}.<video extension> next "
                    "to it; put the video beside its captions, or remove the file.",
                    file=path,
                )
                continue
        if tag is not None and tag.split("-")[0].lower() != language:
            made.drop(
                "other_language",
                f"{path}: tagged {tag!r}, not --spoken_language {spoken_language!r}; skipped.",
                file=path,
            )
            continue
        if key in chosen:
            made.drop(
                "duplicate_caption_file",
                f"{path}: {videos[key]} already has captions {chosen[key]}; skipped (remove "
                "one of them).",
                file=path,
            )
            continue
        chosen[key] = path
    for key, video in sorted(videos.items()):
        if key not in chosen:
            made.drop(
                "no_captions",
                f"{video}: no caption file ({storage.name(key)}.vtt, .srt or "
                f".{language}.vtt) in {spoken_language}.",
                file=video,
            )
    return [(videos[key], chosen[key]) for key in sorted(chosen)]


def _clips(cues: list[captions.Cue], max_seconds: float, max_gap: float) -> list[list]:
    groups: list[list[captions.Cue]] = []
    for cue in cues:
        current = groups[-1] if groups else None
        if (
            current
            and cue.end - current[0].start <= max_seconds
            and cue.start - current[-1].end <= max_gap
        ):
            current.append(cue)
        else:
            groups.append([cue])
    return groups


def from_youtube(
    input_dir: str,
    manifest_dir: str,
    sign_language: str,
    spoken_language: str,
    level: str = "sentence",
    max_clip_seconds: float = DEFAULT_MAX_CLIP_SECONDS,
    max_gap_seconds: float = DEFAULT_MAX_GAP_SECONDS,
    encoding: str = "utf-8",
) -> Made:
    """Videos and their caption files -> manifest rows (see the module docstring)."""
    if level not in ("sentence", "clip"):
        raise ValueError(f"--level must be sentence or clip, not {level!r}")
    if not storage.isdir(input_dir):
        raise ValueError(f"--input_dir {input_dir}: no such directory.")
    made = Made()
    languages = {"sign_language": sign_language, "spoken_language": spoken_language}
    for video, caption_file in _pair_files(input_dir, spoken_language, made):
        try:
            text = captions.decode(storage.read_bytes(caption_file), encoding)
        except (OSError, LookupError) as e:
            made.drop("unreadable_file", f"{caption_file}: {e}", file=caption_file)
            continue
        kept, dropped = captions.parse(text, caption_file)
        made.num_captions += len(kept) + len(dropped)
        made.num_kept += len(kept)
        for cue in dropped:
            made.drop(
                cue.reason,
                cue.message,
                file=caption_file,
                block=cue.block,
                text=cue.text,
                start=cue.start,
                end=cue.end,
            )
        path = _relative(video, manifest_dir)
        stem = storage.split_extension(storage.relative_to(video, input_dir))[0]
        if level == "sentence":
            for k, cue in enumerate(kept):
                made.rows.append(
                    {
                        "id": f"{stem}:{k:05d}",
                        "path": path,
                        "text": cue.text,
                        **languages,
                        "start": cue.start,
                        "end": cue.end,
                    }
                )
            continue
        for k, group in enumerate(_clips(kept, max_clip_seconds, max_gap_seconds)):
            made.rows.append(
                {
                    "id": f"{stem}:clip{k:05d}",
                    "path": path,
                    **languages,
                    "start": group[0].start,
                    "end": group[-1].end,
                    "captions": [{"text": c.text, "start": c.start, "end": c.end} for c in group],
                }
            )
    return made


HOW2SIGN_COLUMNS = ("VIDEO_NAME", "SENTENCE_NAME", "SENTENCE")
HOW2SIGN_TIMES = (("START_REALIGNED", "END_REALIGNED"), ("START", "END"))


def from_how2sign(
    csv_path: str,
    videos_dir: str,
    manifest_dir: str,
    layout: str = "clips",
    extension: str = ".mp4",
    sign_language: str = "ase",
    spoken_language: str = "en",
) -> Made:
    """How2Sign's sentence CSV -> one row per sentence.

    The release's tab-separated CSV has VIDEO_ID, VIDEO_NAME, SENTENCE_ID,
    SENTENCE_NAME, START_REALIGNED, END_REALIGNED (START, END in the original
    alignment) and SENTENCE. `layout="clips"`: the per-sentence clips
    (SENTENCE_NAME + extension, whole file); `layout="raw"`: the full videos
    (VIDEO_NAME + extension, cut at the sentence's times).
    """
    if layout not in ("clips", "raw"):
        raise ValueError(f"--layout must be clips or raw, not {layout!r}")
    text = storage.read_bytes(csv_path).decode("utf-8-sig", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = reader.fieldnames or []
    times = next((t for t in HOW2SIGN_TIMES if set(t) <= set(header)), None)
    lacking = [c for c in HOW2SIGN_COLUMNS if c not in header]
    if lacking or (layout == "raw" and times is None):
        needed = list(HOW2SIGN_COLUMNS) + (["START_REALIGNED", "END_REALIGNED"] * (layout == "raw"))
        raise ValueError(
            f"{csv_path}: the header has columns {header}; How2Sign's sentence CSV has "
            f"{needed} (tab-separated). Pass the release's how2sign_realigned_<split>.csv."
        )
    made = Made()
    for number, row in enumerate(reader, start=2):
        made.num_captions += 1
        where = f"{storage.name(csv_path)}:{number}"
        name = row["SENTENCE_NAME"] if layout == "clips" else row["VIDEO_NAME"]
        sentence = " ".join((row["SENTENCE"] or "").split())
        fields = {"file": csv_path, "line": number, "id": row["SENTENCE_NAME"]}
        if not sentence:
            made.drop("empty_caption", f"{where}: the sentence is empty.", **fields)
            continue
        video = storage.join(videos_dir, (name or "") + extension)
        if not storage.isfile(video):
            made.drop(
                "missing_video",
                f"{where}: {video} does not exist; check --videos_dir, --layout and --extension.",
                **fields,
            )
            continue
        entry = {
            "id": row["SENTENCE_NAME"],
            "path": _relative(video, manifest_dir),
            "text": sentence,
            "sign_language": sign_language,
            "spoken_language": spoken_language,
        }
        if layout == "raw":
            try:
                start, end = float(row[times[0]]), float(row[times[1]])
            except (TypeError, ValueError):
                made.drop(
                    "bad_timestamp",
                    f"{where}: {times[0]}={row[times[0]]!r}, {times[1]}={row[times[1]]!r} "
                    "are not numbers (seconds).",
                    **fields,
                )
                continue
            if not start < end:
                made.drop(
                    "start_after_end", f"{where}: start {start} is not before end {end}.", **fields
                )
                continue
            entry.update(start=start, end=end)
        made.num_kept += 1
        made.rows.append(entry)
    return made


def write(made: Made, output: str, report: str) -> None:
    def lines(records: Iterable[dict]) -> str:
        return "".join(
            json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogateescape").decode() + "\n"
            for r in records
        )

    storage.write_text(output, lines(made.rows))
    storage.write_text(report, lines(made.report))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m slt.manifest_makers",
        description=__doc__,
        formatter_class=gin_utils.HelpFormatter,
    )
    parser.add_argument(
        "--verbosity",
        choices=gin_utils.LOG_LEVELS,
        default=None,
        help=f"log level of slt's messages (default: ${gin_utils.LOG_LEVEL_ENV}, else info)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    youtube = commands.add_parser(
        "youtube", help="a folder of videos with .vtt/.srt captions", description=__doc__
    )
    youtube.add_argument("--input_dir", required=True, help="videos and captions (recursive)")
    youtube.add_argument("--sign_language", required=True, help="ISO 639-3, e.g. ase")
    youtube.add_argument("--spoken_language", required=True, help="BCP-47, e.g. en")
    youtube.add_argument(
        "--level", choices=("sentence", "clip"), default="sentence", help="row per caption or clip"
    )
    youtube.add_argument(
        "--max_clip_seconds",
        type=float,
        default=DEFAULT_MAX_CLIP_SECONDS,
        help="--level=clip: a clip ends before it would exceed this",
    )
    youtube.add_argument(
        "--max_gap_seconds",
        type=float,
        default=DEFAULT_MAX_GAP_SECONDS,
        help="--level=clip: a clip ends at a pause between captions longer than this",
    )
    youtube.add_argument(
        "--encoding", default="utf-8", help="of the caption files (a BOM is always removed)"
    )
    how2sign = commands.add_parser(
        "how2sign", help="How2Sign's sentence-level CSV", description=__doc__
    )
    how2sign.add_argument("--csv", required=True, help="how2sign_realigned_<split>.csv")
    how2sign.add_argument("--videos_dir", required=True, help="the split's clips or raw videos")
    how2sign.add_argument(
        "--layout",
        choices=("clips", "raw"),
        default="clips",
        help="clips: SENTENCE_NAME files; raw: VIDEO_NAME files cut at the sentence times",
    )
    how2sign.add_argument(
        "--extension", default=".mp4", help=".mp4, or .pose/.npz if you extracted them"
    )
    how2sign.add_argument("--sign_language", default="ase")
    how2sign.add_argument("--spoken_language", default="en")
    for command in (youtube, how2sign):
        command.add_argument("--output", required=True, help="the manifest (.jsonl) to write")
        command.add_argument(
            "--report", default=None, help="default: --output with .report.jsonl for its extension"
        )
    args = parser.parse_args(argv)
    gin_utils.setup_logging(args.verbosity)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from slt.tasks import languages  # seqio: only once the flags are known to be good

    try:
        check_languages(
            args.sign_language,
            args.spoken_language,
            languages.SIGN_LANGUAGES,
            languages.SPOKEN_LANGUAGES,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    manifest_dir = storage.parent(args.output)
    try:
        if args.command == "youtube":
            made = from_youtube(
                args.input_dir,
                manifest_dir,
                args.sign_language,
                args.spoken_language,
                level=args.level,
                max_clip_seconds=args.max_clip_seconds,
                max_gap_seconds=args.max_gap_seconds,
                encoding=args.encoding,
            )
        else:
            made = from_how2sign(
                args.csv,
                args.videos_dir,
                manifest_dir,
                layout=args.layout,
                extension=args.extension,
                sign_language=args.sign_language,
                spoken_language=args.spoken_language,
            )
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = args.report or storage.split_extension(args.output)[0] + ".report.jsonl"
    write(made, args.output, report)
    print(json.dumps({"manifest": args.output, "report": report, **made.counts()}))
    return 0


if __name__ == "__main__":
    gin_utils.run_job(main)
