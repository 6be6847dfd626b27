"""Evaluation with several processes: each reads its input shard of the split, the
predictions come back in the split's order, and the metrics equal one process's.

The fast tests check the sharding and reassembly in one process; the slow one runs
`slt.train`'s final evaluation, `slt.eval` and `slt.infer` as 2 processes x 4 CPU
devices against 1 process x 8 devices on the same checkpoint.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import seqio
from tiny_train_flags import TINY_TRAIN_FLAGS

from slt import train as train_lib  # noqa: F401  (sets XLA flags before JAX starts)
from slt.data import features
from slt.evaluation import predict
from slt.training import partitioning

TASK = "fingerspelling_slt_ase_en"
LENGTHS = {"landmarks": 160, "inputs": 24, "targets": 24}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ids(ds):
    return [ex["id"].decode() for ex in ds.as_numpy_iterator()]


def test_input_shards_are_disjoint_cover_the_split_and_merge_back_in_order():
    whole = _ids(predict.task_dataset(TASK, "validation", LENGTHS))
    shards = [
        _ids(predict.task_dataset(TASK, "validation", LENGTHS, seqio.ShardInfo(i, 3)))
        for i in range(3)
    ]
    assert len(whole) > 100 and len(whole) % 3  # a ragged split: shards of unequal size
    assert sum(map(len, shards)) == len(whole) == len(set(whole))
    assert not set(shards[0]) & set(shards[1]) and not set(shards[1]) & set(shards[2])
    assert predict.merge_shards(shards) == whole
    # One shard of one: the split itself.
    assert _ids(predict.task_dataset(TASK, "validation", LENGTHS, seqio.ShardInfo(0, 1))) == whole


def test_merge_shards_interleaves_and_keeps_every_example():
    assert predict.merge_shards([[0, 2, 4, 6], [1, 3, 5]]) == list(range(7))
    assert predict.merge_shards([[0, 3], [1, 4], [2]]) == list(range(5))
    assert predict.merge_shards([[], []]) == []
    # Not an example-level split (file-level shards): nothing is lost or duplicated.
    merged = predict.merge_shards([["a"], ["b", "c", "d"]])
    assert sorted(merged) == ["a", "b", "c", "d"]


def test_one_process_gathers_its_own_results_and_numbers_missing_ids():
    import jax

    mesh = partitioning.make_mesh((-1,), ("data",))
    sharding = partitioning.batch_sharding(mesh, partitioning.DATA_PARALLEL_RULES)
    assert partitioning.host_input_shard(sharding, 8) == (0, 1)
    assert predict.shard_readers(sharding, 8) == [0]
    rows = [{"prediction": "é"}, {"id": "x", "prediction": "b"}]
    assert predict.allgather_json(rows) == [rows]
    assert predict.number_missing_ids(predict.gather_shards(rows, sharding, 8), first=10) == [
        {"id": 10, "prediction": "é"},
        {"id": "x", "prediction": "b"},
    ]
    assert predict.allgather_ints([3, 4]).tolist() == [[3, 4]]
    assert jax.process_count() == 1


def test_padding_batch_matches_the_converters_batches():
    ds = predict.task_dataset(TASK, "validation", LENGTHS)
    real = next(features.LandmarkEncDecFeatureConverter()(ds, LENGTHS).batch(3).as_numpy_iterator())
    pad = predict.padding_batch(LENGTHS, 5)
    assert set(pad) == set(real)
    for name, value in real.items():
        assert pad[name].shape == (5,) + value.shape[1:] and pad[name].dtype == value.dtype
        assert not pad[name].any()


# -- slow: real processes ---------------------------------------------------------------

TINY = [
    *TINY_TRAIN_FLAGS,
    "--gin.train.train_steps=4",
    "--gin.slt.OptimizerConfig.decay_steps=4",
    "--gin.slt.PartitioningConfig.donate_state=False",
    # 131 validation examples: batches of 16 end ragged, and 2 shards are unequal.
    '--gin.slt.EvalConfig.split="validation"',
    "--gin.slt.EvalConfig.batch_size=16",
]


def _env(devices, process_id=None, port=None):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    if process_id is not None:
        env.update(
            SLT_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            SLT_NUM_PROCESSES="2",
            SLT_PROCESS_ID=str(process_id),
        )
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two(args):
    port = _free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env=_env(4, i, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=900) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    return outputs


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _metrics(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)[TASK]


@pytest.mark.slow
def test_two_processes_evaluate_like_one_process_with_eight_devices(tmp_path):
    one = tmp_path / "one"
    result = subprocess.run(
        [sys.executable, "-m", "slt.train", *TINY, f'--gin.MODEL_DIR="{one}"'],
        cwd=REPO,
        env=_env(8),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    reference = _jsonl(one / "eval" / f"{TASK}.validation.predictions.jsonl")
    reference_metrics = _metrics(one / "eval" / "metrics.json")
    assert len(reference) == reference_metrics["num_examples"] == 131

    # slt.train's final evaluation as 2 processes, on the same (restored) parameters.
    two = tmp_path / "two"
    shutil.copytree(one / "checkpoints", two / "checkpoints")
    _run_two(["slt.train", *TINY, f'--gin.MODEL_DIR="{two}"'])
    assert _jsonl(two / "eval" / f"{TASK}.validation.predictions.jsonl") == reference
    assert _metrics(two / "eval" / "metrics.json") == reference_metrics

    # python -m slt.eval and slt.infer as 2 processes.
    _run_two(
        [
            "slt.eval",
            "--gin_file=runs/eval.gin",
            f'--gin.CHECKPOINT="{one}"',
            '--gin.evaluate.split="validation"',
            "--gin.evaluate.batch_size=16",
            f'--gin.evaluate.output_dir="{tmp_path / "eval"}"',
            "--gin.evaluate.show_progress=False",
        ]
    )
    assert _jsonl(tmp_path / "eval" / f"{TASK}.validation.predictions.jsonl") == reference
    assert _metrics(tmp_path / "eval" / "metrics.json") == reference_metrics
    _run_two(
        [
            "slt.infer",
            "--gin_file=runs/infer.gin",
            f'--gin.CHECKPOINT="{one}"',
            f'--gin.OUTPUT_DIR="{tmp_path / "infer"}"',
            '--gin.infer.split="validation"',
            "--gin.infer.batch_size=16",
            "--gin.infer.chunk_size=50",
            "--gin.infer.show_progress=False",
        ]
    )
    shards = sorted((tmp_path / "infer").glob(f"{TASK}.validation.predictions-*.jsonl"))
    assert len(shards) == 3
    inferred = [row for shard in shards for row in _jsonl(shard)]
    assert [(r["id"], r["prediction"]) for r in inferred] == [
        (r["id"], r["prediction"]) for r in reference
    ]
    assert np.isfinite([r["score"] for r in inferred]).all()
