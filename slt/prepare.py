"""python -m slt.prepare: a manifest of clips -> sharded TFRecord training data + report.

  python -m slt.prepare --manifest=clips.jsonl --output_dir=data/mycorpus --split=train

Every input row ends up either written to a shard or reported in `report.jsonl` with
its reason (see `slt.data.errors.REASONS`): inputs = written + reported, always.
Clips are read and converted in parallel worker processes (numpy only); the parent
writes the shards in manifest order, so the output does not depend on the number of
workers. A shard is finished when its `.done.json` exists; a re-run with the same
manifest rows and settings skips it (resume after a crash or a kill). `--strict`
turns any reported input into exit status 1 (the report is still written, and
`dataset_info.json` is not, so the data source refuses the directory).

The manifest format is in `slt/data/manifest.py`, the shard format in `slt/data/shards.py`.
Workers fork from a fork server that imports `slt.io.clips` (numpy and the readers)
and the caller's main script once; this module imports no TensorFlow at import time.

`--runner=NAME` runs the same preparation as an Apache Beam pipeline instead
(`slt/prepare_beam.py`; DirectRunner locally, DataflowRunner, FlinkRunner or SparkRunner
at scale), with the same output files; flags this parser does not know go to Beam.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Collection, Iterable, Iterator

from etils import epath

from slt import gin_utils, storage
from slt.data import landmarks, manifest
from slt.io import clips

log = logging.getLogger(__name__)

DEFAULT_EXAMPLES_PER_SHARD = 1000


@dataclasses.dataclass(frozen=True)
class PrepareResult:
    split: str
    num_inputs: int
    num_written: int
    num_reported: int
    reported_by_reason: dict[str, int]
    shards_written: int
    shards_skipped: int
    seconds: float
    complete: bool  # dataset_info.json written for this split
    messages: tuple[str, ...]  # of this split's reported inputs


def _fingerprint(options: clips.PrepareOptions, split: str, manifest_dir: str, rows: list) -> str:
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "format": "slt.prepared/1",
                "split": split,
                "config": options.config.to_json(),
                "min_frames": options.min_frames,
                "truncate_long": options.truncate_long,
                "manifest_dir": manifest_dir,
            },
            sort_keys=True,
        ).encode()
    )
    for row_id, row in rows:
        digest.update(
            json.dumps([row_id, row], sort_keys=True, default=str, ensure_ascii=True).encode(
                "utf-8", "surrogateescape"
            )
        )
    return digest.hexdigest()


def _histogram(lengths: list[int]) -> dict:
    """Frame counts in power-of-two bins: counts[i] clips with edges[i] <= T < edges[i+1]."""
    top = max(lengths, default=1)
    edges = [0] + [2**k for k in range(0, max(1, math.ceil(math.log2(top + 1))) + 1)]
    counts = [0] * (len(edges) - 1)
    for t in lengths:
        for i in range(len(edges) - 1):
            if edges[i] <= t < edges[i + 1]:
                counts[i] += 1
                break
    return {"edges": edges, "counts": counts}


class _Progress:
    """A progress bar with rate and ETA on stderr (tqdm), else a log line every 100 clips."""

    def __init__(self, total: int, enabled: bool, label: str):
        self._bar = None
        self._done, self._total, self._enabled = 0, total, enabled
        self._start = time.time()
        self._label = label
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=label, unit="clip", file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int = 1) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._enabled and (self._done % 100 == 0 or self._done == self._total):
            elapsed = time.time() - self._start
            rate = self._done / max(elapsed, 1e-9)
            eta = (self._total - self._done) / max(rate, 1e-9)
            log.info(
                "%s: %d/%d clips, %.1f/s, ETA %.0fs",
                self._label,
                self._done,
                self._total,
                rate,
                eta,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _results(jobs: list, num_workers: int) -> Iterator:
    """(index, PreparedClip | (reason, message)) per job, in job order."""
    if num_workers <= 1 or len(jobs) <= 1:
        yield from map(clips.prepare_or_reason, jobs)
        return
    # Not fork: the parent may have TensorFlow (threads) loaded already. The fork
    # server imports the caller's main script and slt.io.clips once, and workers fork
    # from it; with spawn each worker would re-import the main script (which may
    # import TensorFlow: seconds and 0.5 GB per worker).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "slt.io.clips"])
    with context.Pool(num_workers) as pool:
        yield from pool.imap(
            clips.prepare_or_reason, jobs, chunksize=max(1, min(16, len(jobs) // (8 * num_workers)))
        )


def _language_sets() -> tuple[Collection[str], Collection[str]]:
    from slt.tasks import languages  # registers the tasks package; parent process only

    return languages.SIGN_LANGUAGES, languages.SPOKEN_LANGUAGES


@dataclasses.dataclass(frozen=True)
class WrittenClip:
    """A clip ready for its shard: the serialized example and what dataset_info sums."""

    example: bytes
    num_frames: int
    language_pair: str  # "<sign>-<spoken>"
    absent_points: tuple[str, ...]
    truncated: bool


def written_clip(clip: clips.PreparedClip) -> WrittenClip:
    from slt.data import shards  # TensorFlow

    return WrittenClip(
        example=shards.serialize(clip),
        num_frames=int(clip.frames.shape[0]),
        language_pair=f"{clip.spec.sign_language}-{clip.spec.spoken_language}",
        absent_points=tuple(clip.absent_points),
        truncated=bool(clip.truncated_from),
    )


def reported_record(split: str, spec: manifest.ClipSpec | manifest.RowError, outcome) -> dict:
    """The report.jsonl row of an input that is not written."""
    if isinstance(spec, manifest.RowError):
        return {"split": split, **manifest.bad_row_record(spec)}
    reason, message = outcome
    return {"split": split, "id": spec.id, "path": spec.path, "reason": reason, "message": message}


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    index: int
    name: str
    first_row: int  # index into the manifest's data rows
    num_rows: int
    fingerprint: str


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run of one split writes: every shard's name, and the shards still to do."""

    manifest_dir: str
    names: list[str]
    pending: list[ShardPlan]
    skipped: int
    rows: list  # (row id, raw row) per manifest data row


def manifest_dir_of(manifest_path: str) -> str:
    """The directory relative clip paths are under (gs://bucket/dir for gs://bucket/dir/m.jsonl)."""
    return storage.parent(manifest_path)


def plan(
    manifest_path: str,
    output_dir: str,
    options: clips.PrepareOptions,
    split: str,
    examples_per_shard: int,
) -> Plan:
    """Reads the manifest, checks the landmark config, removes stale shards, finds the
    finished ones (same rows and settings: skipped)."""
    from slt.data import shards

    # Before anything is written: a failed run leaves no output directory behind.
    if not storage.exists(manifest_path):
        raise FileNotFoundError(
            f"--manifest={manifest_path}: no such file. Give the JSONL or TSV manifest of "
            "the clips (docs/data.md, 'The manifest'); python -m slt.manifest_makers "
            "writes one from videos and captions."
        )
    out = epath.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(output_dir, options.config)
    manifest_dir = manifest_dir_of(manifest_path)
    rows = list(manifest.raw_rows(manifest_path, manifest.read_lines(manifest_path)))
    num_shards = max(1, math.ceil(len(rows) / examples_per_shard))
    names = [shards.shard_name(split, k, num_shards) for k in range(num_shards)]
    for stale in out.glob(f"{split}.tfrecord-*"):
        # From an earlier run with another shard count, or a writer that died before
        # its rename (one run writes a directory at a time).
        if ".tmp" in stale.name or stale.name.split(".done")[0] not in names:
            stale.unlink()
    pending, skipped = [], 0
    for k, name in enumerate(names):
        first = k * examples_per_shard
        shard_rows = rows[first : first + examples_per_shard]
        fingerprint = _fingerprint(options, split, manifest_dir, shard_rows)
        marker = out / (name + ".done.json")
        finished = marker.exists() and (out / name).exists()
        if finished and json.loads(marker.read_text()).get("fingerprint") == fingerprint:
            skipped += 1
            continue
        pending.append(ShardPlan(k, name, first, len(shard_rows), fingerprint))
    return Plan(manifest_dir, names, pending, skipped, rows)


def prepare(
    manifest_path: str,
    output_dir: str,
    options: clips.PrepareOptions,
    split: str = "train",
    examples_per_shard: int = DEFAULT_EXAMPLES_PER_SHARD,
    num_workers: int | None = None,
    strict: bool = False,
    progress: bool = True,
    sign_languages: Collection[str] | None = None,
    spoken_languages: Collection[str] | None = None,
) -> PrepareResult:
    """Prepares one split of a manifest into `output_dir` (see the module docstring)."""
    began = time.time()
    if sign_languages is None or spoken_languages is None:
        sign_languages, spoken_languages = _language_sets()
    num_workers = num_workers or os.cpu_count() or 1
    work = plan(manifest_path, output_dir, options, split, examples_per_shard)
    bar = _Progress(sum(s.num_rows for s in work.pending), progress, f"prepare {split}")
    # Row-level checks first (no file is read), then the files in parallel.
    parsed = {}
    jobs = []
    for shard in work.pending:
        for index in range(shard.first_row, shard.first_row + shard.num_rows):
            row_id, row = work.rows[index]
            spec = manifest.parse_row(
                row_id, row, work.manifest_dir, sign_languages, spoken_languages
            )
            parsed[index] = spec
            if isinstance(spec, manifest.ClipSpec):
                jobs.append((index, spec, options))
    results = _results(jobs, num_workers)

    def outcomes(shard: ShardPlan) -> Iterator[WrittenClip | dict]:
        for index in range(shard.first_row, shard.first_row + shard.num_rows):
            spec = parsed[index]
            bar.update()
            if isinstance(spec, manifest.RowError):
                yield reported_record(split, spec, None)
                continue
            done, outcome = next(results)
            assert done == index, (done, index)
            if isinstance(outcome, tuple):
                yield reported_record(split, spec, outcome)
            else:
                yield written_clip(outcome)

    for shard in work.pending:
        write_shard(output_dir, shard, outcomes(shard), temporary_suffix=".tmp")
    bar.close()
    return finish(
        output_dir,
        split,
        work.names,
        options,
        strict,
        len(work.pending),
        work.skipped,
        time.time() - began,
    )


def write_shard(
    output_dir: str,
    shard: ShardPlan,
    outcomes: Iterable[WrittenClip | dict],
    temporary_suffix: str,
) -> dict:
    """Writes one shard under a temporary name, renames it, then writes its marker.

    A retried or duplicated writer (Beam) passes its own `temporary_suffix`, so
    attempts never share a file; the shard's bytes do not depend on the attempt, so
    whichever rename lands last leaves the same shard (exactly-once output).
    """
    import tensorflow as tf

    out = epath.Path(output_dir)
    reported, lengths = [], []
    languages, absent = collections.Counter(), collections.Counter()
    truncated = 0
    temporary = out / (shard.name + temporary_suffix)
    with tf.io.TFRecordWriter(os.fspath(temporary)) as writer:
        for outcome in outcomes:
            if isinstance(outcome, dict):
                reported.append(outcome)
                continue
            writer.write(outcome.example)
            lengths.append(outcome.num_frames)
            languages[outcome.language_pair] += 1
            absent.update(outcome.absent_points)
            truncated += outcome.truncated
    temporary.replace(out / shard.name)
    summary = {
        "shard": shard.name,
        "num_inputs": len(reported) + len(lengths),
        "num_written": len(lengths),
        "reported": reported,
        "frame_lengths": lengths,
        "languages": dict(languages),
        "absent_points": dict(absent),
        "truncated": truncated,
        "fingerprint": shard.fingerprint,
    }
    assert summary["num_inputs"] == shard.num_rows, (shard, summary["num_inputs"])
    marker = out / (shard.name + ".done.json" + temporary_suffix)
    marker.write_text(json.dumps(summary))
    marker.replace(out / (shard.name + ".done.json"))
    return summary


def _check_config(output_dir: str, config: landmarks.LandmarkConfig) -> None:
    from slt.data import shards

    path = epath.Path(output_dir) / shards.CONFIG_FILE
    if path.exists():
        existing = landmarks.LandmarkConfig.from_json(path.read_text())
        if existing != config:
            raise ValueError(
                f"{output_dir} was prepared with another landmark config ({path}: "
                f"{existing}); all splits of a dataset share one. Use a new --output_dir."
            )
    else:
        path.write_text(config.to_json())


def _replace_text(path: epath.Path, text: str) -> None:
    """Writes `text` to a temporary name, then renames: readers never see half a file."""
    temporary = path.parent / (path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def finish(
    output_dir: str,
    split: str,
    names: list[str],
    options: clips.PrepareOptions,
    strict: bool,
    written_now: int,
    skipped: int,
    seconds: float,
) -> PrepareResult:
    """From the shards' markers: report.jsonl, dataset_info.json and the result."""
    from slt.data import shards

    out = epath.Path(output_dir)
    markers = {}
    for marker in sorted(out.glob("*.tfrecord-*.done.json"), key=lambda p: p.name):
        markers[marker.name[: -len(".done.json")]] = json.loads(marker.read_text())
    lines = []
    for summary in markers.values():
        for record in summary["reported"]:
            lines.append(
                json.dumps(record, ensure_ascii=False, default=str)
                .encode("utf-8", "surrogateescape")
                .decode("utf-8", "replace")
                + "\n"
            )
    _replace_text(out / shards.REPORT_FILE, "".join(lines))
    mine = [markers[n] for n in names]
    reported = [r for s in mine for r in s["reported"]]
    by_reason = dict(collections.Counter(r["reason"] for r in reported))
    num_inputs = sum(s["num_inputs"] for s in mine)
    num_written = sum(s["num_written"] for s in mine)
    assert num_inputs == num_written + len(reported), "inputs != written + reported"
    complete = not (strict and reported)
    if complete:
        _write_info(output_dir, split, names, mine, options, by_reason)
    else:
        _drop_split(output_dir, split)  # an earlier, non-strict run's entry
    return PrepareResult(
        split=split,
        num_inputs=num_inputs,
        num_written=num_written,
        num_reported=len(reported),
        reported_by_reason=by_reason,
        shards_written=written_now,
        shards_skipped=skipped,
        seconds=seconds,
        complete=complete,
        messages=tuple(r["message"] for r in reported),
    )


def _drop_split(output_dir: str, split: str) -> None:
    from slt.data import shards

    path = epath.Path(output_dir) / shards.INFO_FILE
    if not path.exists():
        return
    info = json.loads(path.read_text())
    if info.get("splits", {}).pop(split, None) is None:
        return
    if not info["splits"]:
        path.unlink()
        return
    _replace_text(path, json.dumps(info, indent=1, sort_keys=True))


def _write_info(output_dir, split, names, summaries, options, by_reason) -> None:
    from slt.data import shards

    path = epath.Path(output_dir) / shards.INFO_FILE
    info = {"format": shards.FORMAT, "splits": {}}
    if path.exists():
        info = json.loads(path.read_text())
    lengths = [t for s in summaries for t in s["frame_lengths"]]
    languages = collections.Counter()
    absent = collections.Counter()
    for s in summaries:
        languages.update(s["languages"])
        absent.update(s["absent_points"])
    info["landmark_config"] = json.loads(options.config.to_json())
    info["splits"][split] = {
        "shards": names,
        "num_inputs": sum(s["num_inputs"] for s in summaries),
        "num_examples": len(lengths),
        "num_reported": sum(len(s["reported"]) for s in summaries),
        "reported_by_reason": by_reason,
        "num_truncated": sum(s["truncated"] for s in summaries),
        "frames": {
            "total": sum(lengths),
            "min": min(lengths, default=0),
            "max": max(lengths, default=0),
            "mean": round(sum(lengths) / max(len(lengths), 1), 2),
            "histogram": _histogram(lengths),
        },
        "languages": dict(sorted(languages.items())),
        "absent_points": dict(sorted(absent.items())),
        "min_frames": options.min_frames,
        "truncate_long": options.truncate_long,
    }
    _replace_text(path, json.dumps(info, indent=1, sort_keys=True))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m slt.prepare",
        description=__doc__,
        formatter_class=gin_utils.HelpFormatter,
    )
    parser.add_argument("--manifest", required=True, help="JSONL or TSV (see slt/data/manifest.py)")
    parser.add_argument(
        "--output_dir", required=True, help="the dataset directory (all splits share one)"
    )
    parser.add_argument("--split", default="train", help="the split the manifest's rows go to")
    parser.add_argument(
        "--examples_per_shard",
        type=int,
        default=DEFAULT_EXAMPLES_PER_SHARD,
        help="input rows per TFRecord shard",
    )
    parser.add_argument("--num_workers", type=int, default=0, help="0: one per CPU core")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any input is reported")
    parser.add_argument(
        "--min_frames",
        type=int,
        default=2,
        help="clips with fewer frames (after --frame_step) are reported",
    )
    parser.add_argument(
        "--truncate_long",
        action="store_true",
        help="cut clips over --max_frames instead of reporting them",
    )
    parser.add_argument(
        "--landmark_config",
        default=None,
        help="a landmark_config.json (e.g. from a checkpoint); the flags below are then ignored",
    )
    defaults = landmarks.LandmarkConfig()
    parser.add_argument(
        "--normalization",
        default=defaults.normalization,
        choices=landmarks.NORMALIZATIONS,
        help="LandmarkConfig.normalization",
    )
    parser.add_argument(
        "--frame_step", type=int, default=defaults.frame_step, help="keep every N-th frame"
    )
    parser.add_argument(
        "--target_fps", type=float, default=None, help="resample to this rate instead"
    )
    parser.add_argument(
        "--max_frames",
        type=int,
        default=defaults.max_frames,
        help="clips with more frames (after --frame_step) are reported",
    )
    parser.add_argument(
        "--missing_value",
        type=float,
        default=defaults.missing_value,
        help="coordinate value of points the pose estimator did not find",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--runner",
        default=None,
        help="run on Apache Beam with this runner (DirectRunner, DataflowRunner, FlinkRunner, "
        "SparkRunner, ...); the flags this parser does not know go to Beam as pipeline "
        "options, e.g. --direct_num_workers=2 --direct_running_mode=multi_processing. "
        "Unset: in-process workers (--num_workers). See docs/data_at_scale.md",
    )
    parser.add_argument(
        "--max_attempts",
        type=int,
        default=3,
        help="with --runner: tries of a clip whose worker dies before it is reported "
        "worker_lost (0: keep no try counts)",
    )
    parser.add_argument(
        "--verbosity",
        choices=gin_utils.LOG_LEVELS,
        default=None,
        help=f"log level of slt's messages (default: ${gin_utils.LOG_LEVEL_ENV}, else info)",
    )
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and not args.runner:
        parser.error(
            f"unrecognized arguments: {' '.join(beam_args)} (Beam pipeline options "
            "need --runner=NAME)"
        )
    args.beam_args = [f"--runner={args.runner}", *beam_args] if args.runner else []
    gin_utils.setup_logging(args.verbosity)
    return args


def main(argv: list[str] | None = None) -> int:
    gin_utils.quiet_tensorflow()
    args = _parse_args(argv)
    if args.landmark_config:
        config = landmarks.LandmarkConfig.from_json(epath.Path(args.landmark_config).read_text())
    else:
        config = landmarks.LandmarkConfig(
            normalization=args.normalization,
            frame_step=args.frame_step,
            target_fps=args.target_fps,
            max_frames=args.max_frames,
            missing_value=args.missing_value,
        )
    options = clips.PrepareOptions(
        config=config, min_frames=args.min_frames, truncate_long=args.truncate_long
    )
    counters = None
    if args.runner:
        from slt import prepare_beam  # Apache Beam: only when asked for

        result, counters = prepare_beam.prepare_beam(
            args.manifest,
            args.output_dir,
            options,
            args.beam_args,
            split=args.split,
            examples_per_shard=args.examples_per_shard,
            strict=args.strict,
            max_attempts=args.max_attempts,
        )
    else:
        result = prepare(
            args.manifest,
            args.output_dir,
            options,
            split=args.split,
            examples_per_shard=args.examples_per_shard,
            num_workers=args.num_workers or None,
            strict=args.strict,
            progress=not args.no_progress,
        )
    summary = {k: v for k, v in dataclasses.asdict(result).items() if k != "messages"}
    if counters is not None:
        summary["beam_counters"] = counters
    summary["clips_per_second"] = round(result.num_inputs / max(result.seconds, 1e-9), 2)
    print(json.dumps(summary, sort_keys=True))
    if result.num_reported:
        print(
            f"{result.num_reported} inputs not written; see "
            f"{epath.Path(args.output_dir) / 'report.jsonl'}",
            file=sys.stderr,
        )
    if not result.complete:
        for message in result.messages:
            print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    gin_utils.run_job(main)
