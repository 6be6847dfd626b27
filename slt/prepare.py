"""python -m slt.prepare: a manifest of clips -> sharded TFRecord training data + report.

  python -m slt.prepare --manifest=clips.jsonl --output_dir=data/mycorpus --split=train

Every input row ends up either written to a shard or reported in `report.jsonl` with
its reason (see `slt.io.errors.REASONS`): inputs = written + reported, always.
Clips are read and converted in parallel worker processes (numpy only); the parent
writes the shards in manifest order, so the output does not depend on the number of
workers. A shard is finished when its `.done.json` exists; a re-run with the same
manifest rows and settings skips it (resume after a crash or a kill). `--strict`
turns any reported input into exit status 1 (the report is still written, and
`dataset_info.json` is not, so the data source refuses the directory).

The manifest format is in `slt/manifest.py`, the shard format in `slt/shards.py`.
Workers fork from a fork server that imports `slt.clips` (numpy and the readers)
and the caller's main script once; this module imports no TensorFlow at import time.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import hashlib
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Collection, Iterator

from slt import clips, gin_utils, landmarks, manifest

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
    # server imports the caller's main script and slt.clips once, and workers fork
    # from it; with spawn each worker would re-import the main script (which may
    # import TensorFlow: seconds and 0.5 GB per worker).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "slt.clips"])
    with context.Pool(num_workers) as pool:
        yield from pool.imap(
            clips.prepare_or_reason, jobs, chunksize=max(1, min(16, len(jobs) // (8 * num_workers)))
        )


def _language_sets() -> tuple[Collection[str], Collection[str]]:
    from tasks import languages  # registers the tasks package; parent process only

    return languages.SIGN_LANGUAGES, languages.SPOKEN_LANGUAGES


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
    from slt import shards  # TensorFlow: parent only

    began = time.time()
    if sign_languages is None or spoken_languages is None:
        sign_languages, spoken_languages = _language_sets()
    num_workers = num_workers or os.cpu_count() or 1
    os.makedirs(output_dir, exist_ok=True)
    _check_config(output_dir, options.config)
    manifest_dir = os.path.dirname(os.path.abspath(manifest_path))
    rows = list(manifest.raw_rows(manifest_path, manifest.read_lines(manifest_path)))
    num_shards = max(1, math.ceil(len(rows) / examples_per_shard))
    names = [shards.shard_name(split, k, num_shards) for k in range(num_shards)]
    for stale in glob.glob(os.path.join(output_dir, f"{split}.tfrecord-*")):
        if os.path.basename(stale).split(".done")[0].removesuffix(".tmp") not in names:
            os.remove(stale)  # from an earlier run with another shard count
    pending, skipped = [], 0
    for k, name in enumerate(names):
        shard_rows = rows[k * examples_per_shard : (k + 1) * examples_per_shard]
        fingerprint = _fingerprint(options, split, manifest_dir, shard_rows)
        marker = os.path.join(output_dir, name + ".done.json")
        if os.path.exists(marker) and os.path.exists(os.path.join(output_dir, name)):
            with open(marker) as f:
                if json.load(f).get("fingerprint") == fingerprint:
                    skipped += 1
                    continue
        pending.append((k, name, shard_rows, fingerprint))

    bar = _Progress(sum(len(r) for _, _, r, _ in pending), progress, f"prepare {split}")
    # Row-level checks first (no file is read), then the files in parallel.
    parsed = {}
    jobs = []
    for k, _, shard_rows, _ in pending:
        for j, (row_id, row) in enumerate(shard_rows):
            index = k * examples_per_shard + j
            spec = manifest.parse_row(row_id, row, manifest_dir, sign_languages, spoken_languages)
            parsed[index] = spec
            if isinstance(spec, manifest.ClipSpec):
                jobs.append((index, spec, options))
    results = _results(jobs, num_workers)
    for k, name, shard_rows, fingerprint in pending:
        summary = _write_shard(
            output_dir,
            name,
            split,
            k * examples_per_shard,
            shard_rows,
            parsed,
            results,
            shards,
            bar,
        )
        summary["fingerprint"] = fingerprint
        with open(os.path.join(output_dir, name + ".done.json.tmp"), "w") as f:
            json.dump(summary, f)
        os.replace(
            os.path.join(output_dir, name + ".done.json.tmp"),
            os.path.join(output_dir, name + ".done.json"),
        )
    bar.close()
    return _finish(
        output_dir, split, names, options, strict, len(pending), skipped, time.time() - began
    )


def _write_shard(
    output_dir, name, split, first_index, shard_rows, parsed, results, shards, bar
) -> dict:
    import tensorflow as tf

    reported, lengths = [], []
    languages, absent = collections.Counter(), collections.Counter()
    truncated = 0
    temporary = os.path.join(output_dir, name + ".tmp")
    with tf.io.TFRecordWriter(temporary) as writer:
        for j in range(len(shard_rows)):
            spec = parsed[first_index + j]
            if isinstance(spec, manifest.RowError):
                reported.append({"split": split, **manifest.bad_row_record(spec)})
                bar.update()
                continue
            index, outcome = next(results)
            assert index == first_index + j, (index, first_index + j)
            bar.update()
            if isinstance(outcome, tuple):
                reason, message = outcome
                reported.append(
                    {
                        "split": split,
                        "id": spec.id,
                        "path": spec.path,
                        "reason": reason,
                        "message": message,
                    }
                )
                continue
            writer.write(shards.serialize(outcome))
            lengths.append(int(outcome.frames.shape[0]))
            languages[f"{spec.sign_language}-{spec.spoken_language}"] += 1
            absent.update(outcome.absent_points)
            truncated += bool(outcome.truncated_from)
    os.replace(temporary, os.path.join(output_dir, name))
    return {
        "shard": name,
        "num_inputs": len(shard_rows),
        "num_written": len(lengths),
        "reported": reported,
        "frame_lengths": lengths,
        "languages": dict(languages),
        "absent_points": dict(absent),
        "truncated": truncated,
    }


def _check_config(output_dir: str, config: landmarks.LandmarkConfig) -> None:
    from slt import shards

    path = os.path.join(output_dir, shards.CONFIG_FILE)
    if os.path.exists(path):
        with open(path) as f:
            existing = landmarks.LandmarkConfig.from_json(f.read())
        if existing != config:
            raise ValueError(
                f"{output_dir} was prepared with another landmark config ({path}: "
                f"{existing}); all splits of a dataset share one. Use a new --output_dir."
            )
    else:
        with open(path, "w") as f:
            f.write(config.to_json())


def _finish(
    output_dir, split, names, options, strict, written_now, skipped, seconds
) -> PrepareResult:
    from slt import shards

    markers = {}
    for marker in sorted(glob.glob(os.path.join(output_dir, "*.tfrecord-*.done.json"))):
        with open(marker) as f:
            markers[os.path.basename(marker)[: -len(".done.json")]] = json.load(f)
    with open(os.path.join(output_dir, shards.REPORT_FILE + ".tmp"), "w") as f:
        for summary in markers.values():
            for record in summary["reported"]:
                f.write(
                    json.dumps(record, ensure_ascii=False, default=str)
                    .encode("utf-8", "surrogateescape")
                    .decode("utf-8", "replace")
                    + "\n"
                )
    os.replace(
        os.path.join(output_dir, shards.REPORT_FILE + ".tmp"),
        os.path.join(output_dir, shards.REPORT_FILE),
    )
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
    from slt import shards

    path = os.path.join(output_dir, shards.INFO_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        info = json.load(f)
    if info.get("splits", {}).pop(split, None) is None:
        return
    if not info["splits"]:
        os.remove(path)
        return
    with open(path + ".tmp", "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def _write_info(output_dir, split, names, summaries, options, by_reason) -> None:
    from slt import shards

    path = os.path.join(output_dir, shards.INFO_FILE)
    info = {"format": shards.FORMAT, "splits": {}}
    if os.path.exists(path):
        with open(path) as f:
            info = json.load(f)
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
    with open(path + ".tmp", "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m slt.prepare",
        description=__doc__,
        formatter_class=gin_utils.HelpFormatter,
    )
    parser.add_argument("--manifest", required=True, help="JSONL or TSV (see slt/manifest.py)")
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
    return gin_utils.parse_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    gin_utils.quiet_tensorflow()
    args = _parse_args(argv)
    if args.landmark_config:
        with open(args.landmark_config) as f:
            config = landmarks.LandmarkConfig.from_json(f.read())
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
    summary["clips_per_second"] = round(result.num_inputs / max(result.seconds, 1e-9), 2)
    print(json.dumps(summary, sort_keys=True))
    if result.num_reported:
        print(
            f"{result.num_reported} inputs not written; see "
            f"{os.path.join(args.output_dir, 'report.jsonl')}",
            file=sys.stderr,
        )
    if not result.complete:
        for message in result.messages:
            print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
