"""The main job, shrunk: real corpus -> seqio -> T5 -> optax -> orbax -> greedy -> sacrebleu."""

import json
import os
import subprocess
import sys

import pytest
import sacrebleu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "fingerspelling_word_slt_ase_en"
SMALL = [
    "--gin.slt.T5Config.emb_dim=64",
    "--gin.slt.T5Config.head_dim=16",
    "--gin.slt.T5Config.mlp_dim=128",
    "--gin.slt.T5Config.num_encoder_layers=1",
    "--gin.slt.T5Config.num_decoder_layers=1",
    "--gin.slt.OptimizerConfig.learning_rate=3e-3",
    "--gin.slt.OptimizerConfig.warmup_steps=5",
    "--gin.train.batch_size=16",
    "--gin.train.log_period=5",
    "--gin.slt.CheckpointConfig.period=20",
    "--gin.slt.EvalConfig.period=30",
    # The demo's words with a small clip buffer (the same splits): training starts in a
    # second instead of after 2,048 composed clips.
    f'--gin.train.mixture_or_task_name="{TASK}"',
]


def _run(model_dir, steps):
    cmd = [
        sys.executable,
        "-m",
        "slt.train",
        "--gin_file=runs/demo.gin",
        f'--gin.MODEL_DIR="{model_dir}"',
        f"--gin.train.train_steps={steps}",
        f"--gin.slt.OptimizerConfig.decay_steps={steps}",
        *SMALL,
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run")
    return model_dir, _run(model_dir, 40)


def test_loss_falls_on_the_real_corpus(trained):
    model_dir, _ = trained
    with open(model_dir / "train" / "metrics.jsonl") as f:
        records = [r for r in map(json.loads, f) if "loss" in r]  # (eval lines apart)
    assert [r["step"] for r in records] == list(range(1, 41))  # every step's loss
    first, last = records[4]["loss"], records[-1]["loss"]
    assert last < 0.6 * first, (first, last)


def test_metrics_checkpoint_and_config_are_written(trained):
    model_dir, stdout = trained
    with open(model_dir / "eval" / "metrics.json") as f:
        metrics = json.load(f)
    ase = metrics[TASK]
    assert ase["num_examples"] > 100
    with open(model_dir / "eval" / f"{TASK}.test.predictions.jsonl") as f:
        predictions = [json.loads(line) for line in f]
    assert len(predictions) == ase["num_examples"]
    # The written scores are those of the written predictions; 40 steps already spell
    # some letters right (chrF above 0) but no word yet (exact match below 1).
    hyps, refs = [p["prediction"] for p in predictions], [p["target"] for p in predictions]
    assert ase["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert ase["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert 0.0 < ase["chrf"] < 100.0 and ase["exact_match"] < 1.0
    assert f"{ase['chrf']:7.2f}" in stdout and TASK in stdout
    assert predictions[0]["prompt"] == "<slt> <ase> <en>"
    assert {"20", "40"} <= set(os.listdir(model_dir / "checkpoints"))
    # The periodic evaluation hook ran at step 30 on the validation split.
    with open(model_dir / "eval" / "step_30" / "metrics.json") as f:
        periodic = json.load(f)[TASK]
    assert periodic["num_examples"] == 131  # the validation split (test: 127)
    with open(model_dir / "train" / "metrics.jsonl") as f:
        assert any(f"eval/{TASK}/chrf" in json.loads(line) for line in f)
    config = (model_dir / "config.gin").read_text()
    assert "emb_dim = 64" in config and "train_steps = 40" in config


@pytest.mark.slow  # the default run kills and resumes a run (tests/test_kill_and_resume.py)
def test_resumes_from_the_latest_checkpoint(trained):
    model_dir, _ = trained
    stdout = _run(model_dir, 45)
    assert "resuming from checkpoint step 40" in stdout
    assert "step 45/45" in stdout
    assert "45" in os.listdir(model_dir / "checkpoints")
