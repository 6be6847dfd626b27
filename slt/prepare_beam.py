"""`slt.prepare` on Apache Beam: the same shards, report and dataset_info, on any runner.

  python -m slt.prepare --manifest=gs://b/clips.jsonl --output_dir=gs://b/data \\
    --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp ...

The driver does what the local path does before and after the clips (`prepare.plan`:
manifest rows, shard names, finished shards skipped; `prepare.finish`: report.jsonl and
dataset_info.json from the shards' markers), so both paths write the same files. Between
them, the pipeline:

  pending shards -> their manifest rows (read by the workers, not shipped in the job)
    -> reshuffle -> prepare each clip (counters per reason) -> group by shard
    -> write each shard under a temporary name, rename, write its marker

Rows go to shards by their position in the manifest, as in the local path, so the
assignment is a function of the manifest alone, whatever the runner or worker count.
A writer that is retried or runs twice writes its own temporary file; the shard's
bytes do not depend on the attempt, so the output is the same exactly-once result.

A clip that kills its worker (out of memory, a crash in native code) would fail its
bundle on every retry and so the job. Before a clip is prepared, its try count is
written under `<output_dir>/_attempts/<split>/`, and removed when it finishes; a clip
that has started `max_attempts` times without finishing is reported `worker_lost`
instead. MediaPipe itself runs in a child process (`slt.io.video`), so its aborts are
already `video_failed` rows.

The DirectRunner is run as Beam's FnApiRunner (what the DirectRunner picks for batch
pipelines): the DirectRunner would first try the Prism runner, which downloads a binary.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
import uuid
from collections.abc import Collection, Sequence

import apache_beam as beam
from apache_beam.options import pipeline_options
from etils import epath

from slt import prepare
from slt.data import manifest
from slt.io import clips

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "slt.prepare"
DEFAULT_MAX_ATTEMPTS = 3
ATTEMPTS_DIR = "_attempts"
LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner")


@dataclasses.dataclass(frozen=True)
class RowSource:
    """What a worker needs to turn a shard into its validated manifest rows."""

    manifest_path: str
    manifest_dir: str
    sign_languages: frozenset[str]
    spoken_languages: frozenset[str]


class _ShardRows(beam.DoFn):
    """ShardPlan -> (shard index, row index, ClipSpec | RowError) per row of the shard."""

    def __init__(self, source: RowSource):
        self._source = source
        self._rows = None

    def process(self, shard: prepare.ShardPlan):
        source = self._source
        if self._rows is None:  # once per DoFn instance, not per shard
            lines = manifest.read_lines(source.manifest_path)
            self._rows = list(manifest.raw_rows(source.manifest_path, lines))
        for index in range(shard.first_row, shard.first_row + shard.num_rows):
            row_id, row = self._rows[index]
            spec = manifest.parse_row(
                row_id, row, source.manifest_dir, source.sign_languages, source.spoken_languages
            )
            yield shard.index, index, spec


class _Attempts:
    """Try counts of the clips in flight, as files that outlive a dead worker."""

    def __init__(self, directory: str, max_attempts: int):
        self._directory = epath.Path(directory)
        self.max_attempts = max_attempts

    def start(self, index: int) -> int:
        """Records one more try of row `index`; returns the tries before this one."""
        path = self._directory / str(index)
        tries = int(path.read_text()) if path.exists() else 0
        if tries < self.max_attempts:
            self._directory.mkdir(parents=True, exist_ok=True)
            path.write_text(str(tries + 1))
        return tries

    def finish(self, index: int) -> None:
        path = self._directory / str(index)
        if path.exists():
            path.unlink()


class _PrepareClip(beam.DoFn):
    """(shard, index, spec) -> (shard, (index, WrittenClip | report record))."""

    def __init__(self, options: clips.PrepareOptions, split: str, attempts: _Attempts | None):
        self._options = options
        self._split = split
        self._attempts = attempts

    def process(self, element):
        shard, index, spec = element
        if isinstance(spec, manifest.RowError):
            outcome = prepare.reported_record(self._split, spec, None)
        else:
            tries = self._attempts.start(index) if self._attempts else 0
            if self._attempts and tries >= self._attempts.max_attempts:
                outcome = prepare.reported_record(
                    self._split,
                    spec,
                    (
                        "worker_lost",
                        f"{spec.path}: the worker preparing this clip died {tries} times; "
                        "check the file, or extract it alone with python -m slt.io.video.",
                    ),
                )
            else:
                _, result = clips.prepare_or_reason((index, spec, self._options))
                if isinstance(result, tuple):
                    outcome = prepare.reported_record(self._split, spec, result)
                else:
                    outcome = prepare.written_clip(result)
                if self._attempts:
                    self._attempts.finish(index)
        if isinstance(outcome, dict):
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, outcome["reason"]).inc()
        else:
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "written").inc()
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "frames").inc(outcome.num_frames)
        yield shard, (index, outcome)


class _WriteShard(beam.DoFn):
    """(shard, [(index, outcome)]) -> the shard file and its marker; yields its name."""

    def __init__(self, output_dir: str, shards: dict[int, prepare.ShardPlan]):
        self._output_dir = output_dir
        self._shards = shards

    def process(self, element):
        index, outcomes = element
        shard = self._shards[index]
        ordered = [outcome for _, outcome in sorted(outcomes, key=lambda pair: pair[0])]
        # Each try writes its own temporary file: two tries never interleave.
        suffix = f".tmp-{uuid.uuid4().hex}"
        prepare.write_shard(self._output_dir, shard, ordered, temporary_suffix=suffix)
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "shards").inc()
        yield shard.name


def build_pipeline(
    pipeline: beam.Pipeline,
    work: prepare.Plan,
    source: RowSource,
    output_dir: str,
    options: clips.PrepareOptions,
    split: str,
    attempts: _Attempts | None,
) -> beam.PCollection:
    """Adds the prepare transforms for `work.pending` to `pipeline`."""
    shards = {shard.index: shard for shard in work.pending}
    return (
        pipeline
        | "PendingShards" >> beam.Create(work.pending)
        | "ShardRows" >> beam.ParDo(_ShardRows(source))
        # Spread one shard's clips over the workers (a shard has up to 1000 clips).
        | "SpreadClips" >> beam.Reshuffle()
        | "PrepareClips" >> beam.ParDo(_PrepareClip(options, split, attempts))
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(_WriteShard(output_dir, shards))
    )


def _runner(beam_options: pipeline_options.PipelineOptions):
    name = beam_options.view_as(pipeline_options.StandardOptions).runner
    if name is None or name in LOCAL_RUNNERS:
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        # As the DirectRunner builds it: the workers see the pipeline options.
        encoded = JobServiceHandle.encode_pipeline_options(beam_options.get_all_options())
        provision = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
        )
        return fn_runner.FnApiRunner(provision_info=provision)
    return name  # Beam resolves DataflowRunner, FlinkRunner, SparkRunner, ... by name


def counters(result) -> dict[str, int]:
    """The pipeline's slt.prepare counters: written, frames, shards and one per reason."""
    query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE))
    totals = collections.Counter()
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] += int(value or 0)
    return dict(totals)


def prepare_beam(
    manifest_path: str,
    output_dir: str,
    options: clips.PrepareOptions,
    beam_args: Sequence[str],
    split: str = "train",
    examples_per_shard: int = prepare.DEFAULT_EXAMPLES_PER_SHARD,
    strict: bool = False,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    sign_languages: Collection[str] | None = None,
    spoken_languages: Collection[str] | None = None,
) -> tuple[prepare.PrepareResult, dict[str, int]]:
    """Prepares one split on a Beam runner; returns the result and the pipeline counters.

    `beam_args` are Beam pipeline options (`--runner=...`, `--direct_num_workers=2`,
    `--project=...`). `max_attempts` tries of a clip whose worker dies, then
    `worker_lost`; 0 keeps no try counts.
    """
    began = time.time()
    if sign_languages is None or spoken_languages is None:
        sign_languages, spoken_languages = prepare._language_sets()
    work = prepare.plan(manifest_path, output_dir, options, split, examples_per_shard)
    source = RowSource(
        manifest_path, work.manifest_dir, frozenset(sign_languages), frozenset(spoken_languages)
    )
    attempts_dir = epath.Path(output_dir) / ATTEMPTS_DIR / split
    attempts = _Attempts(str(attempts_dir), max_attempts) if max_attempts > 0 else None
    totals: dict[str, int] = {}
    if work.pending:
        beam_options = pipeline_options.PipelineOptions(list(beam_args))
        with beam.Pipeline(runner=_runner(beam_options), options=beam_options) as pipeline:
            build_pipeline(pipeline, work, source, output_dir, options, split, attempts)
        totals = counters(pipeline.result)
        log.info("prepare %s: pipeline counters %s", split, totals)
    if attempts_dir.exists():  # every clip has finished or been reported
        attempts_dir.rmtree()
    if attempts_dir.parent.exists() and not any(attempts_dir.parent.iterdir()):
        attempts_dir.parent.rmdir()
    result = prepare.finish(
        output_dir,
        split,
        work.names,
        options,
        strict,
        len(work.pending),
        work.skipped,
        time.time() - began,
    )
    return result, totals
