"""The study command (`python -m slt.experiment`): every arm of experiments/study.gin
trains a few steps, is evaluated, and the report, plots and metrics JSON are written
(slow: minutes on 2 cores); a kept run must match the steps; the mixtures hold the
arms' tasks, and the MT data of the `_disjoint` arm holds no held-out ASL word."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import seqio

from slt import tasks  # noqa: F401  (registers)
from slt.tasks.fingerspelling import mixtures as fm
from slt.tasks.study import mixtures as em

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One zero-shot direction (64 test words) and Greek SLT (7): one decoding batch each.
EVAL_TASKS = [fm.aug_name("sk"), fm.word_name("gss")]
# A 1-layer, 32-wide model for every run, one seed, two eval tasks: the test checks
# the wiring (every arm trains, is evaluated and reported), not the numbers.
TINY_BINDINGS = [
    "slt.T5Config.emb_dim = 32",
    "slt.T5Config.head_dim = 8",
    "slt.T5Config.num_heads = 2",
    "slt.T5Config.mlp_dim = 64",
    "slt.T5Config.num_encoder_layers = 1",
    "slt.T5Config.num_decoder_layers = 1",
    "train.batch_size = 8",
    "slt.EvalConfig.tasks = " + json.dumps(EVAL_TASKS),
    'train.task_feature_lengths = {"landmarks": 64, "inputs": 48, "targets": 8}',
    "slt.EvalConfig.batch_size = 64",
]


# Equal sign examples: B and the all-lexicon arm train twice the steps of A and E2 ASL.
STEPS = {"e1_a": 2, "e1_b": 4, "e1_b_disjoint": 4, "e2_ase": 2, "e2_all_signs": 4}
# The text pretraining: the same tiny model, 2 steps.
PRETRAIN_BINDINGS = [*TINY_BINDINGS[:7], "train.train_steps = 2"]


def _run_study(
    out, *extra: str, bindings=TINY_BINDINGS, steps=STEPS
) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "slt.experiment",
        "--gin_file=experiments/study.gin",
        f'--gin.OUTPUT_DIR="{out}"',
        "--gin_bindings=study.train_steps = " + json.dumps(steps),
        "--gin.study.seeds=[0]",
        # Bindings of every run (after its arm file), not of the study itself.
        "--gin_bindings=study.bindings = " + json.dumps(bindings),
        "--gin_bindings=study.pretrain_bindings = " + json.dumps(PRETRAIN_BINDINGS),
        *extra,
    ]
    done = subprocess.run(
        command,
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=3600,  # a hang guard: on a loaded 2-core machine the 4 arms take minutes
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


ARMS = tuple(STEPS)
EQUAL_STEPS_ARMS = {"e1_b_steps": "e1_b", "e2_all_signs_steps": "e2_all_signs"}


@pytest.fixture(scope="module")
def one_arm_dir(tmp_path_factory):
    """The command with arm B alone: SLT, augmented SLT and MT in one mixture."""
    out = tmp_path_factory.mktemp("one_arm")
    arms = json.dumps({"e1_b": "experiments/e1_b_slt_aug_mt.gin"})
    return out, _run_study(
        out,
        f"--gin_bindings=study.arms = {arms}",
        "--gin_bindings=study.equal_steps_arms = {}",
        "--gin_bindings=study.pretrain = None",
        steps={"e1_b": 2},
    ).stdout


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return out, _run_study(out).stdout


# 214 s on the shared 2-core machine under load (most of it the process start: the
# corpus statistics of 19 lexicons, then compiling): too long for the default run.
@pytest.mark.slow
def test_one_arm_trains_is_evaluated_and_reported(one_arm_dir):
    out, stdout = one_arm_dir
    run = out / "e1_b" / "seed_0"
    losses = [json.loads(line) for line in (run / "train" / "metrics.jsonl").open()]
    assert [r["step"] for r in losses][-1] == 2
    metrics = json.loads((out / "metrics" / "e1_b.seed_0.json").read_text())
    assert sorted(metrics) == sorted(EVAL_TASKS)
    assert metrics[fm.aug_name("sk")]["num_examples"] == 64
    assert 0.0 <= metrics[fm.aug_name("sk")]["chrf"] <= 100.0
    assert f"wrote {out}/report.md" in stdout
    report = (out / "report.md").read_text()
    assert "| e1_b | Z (zero-shot) | 1 |" in report  # the one Z task evaluated
    assert "| e1_b | en | 0 |" in report
    assert "| sk (Z) |" in report and "pair not in MT train" in report
    assert "## E2" not in report  # no E2 arm ran
    assert (out / "e1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["info"]["seeds"] == [0]
    assert set(summary["info"]["run_wall_s"]) == {"e1_b/seed_0"}
    # The zero-shot test words split by MT overlap, and the split covers them all.
    sk = summary["e1"]["mt_overlap"]["e1_b"]["0"][fm.aug_name("sk")]
    assert sk["in_mt_train"]["num_examples"] + sk["not_in_mt_train"]["num_examples"] == 64
    assert sk["in_mt_train"]["num_examples"] == em.mt_overlap("sk")["in_mt_train"] == 52
    (run,) = [r for r in summary["runs"] if r["arm"] == "e1_b" and r["seed"] == 0]
    assert 0.0 <= run["metrics"][fm.aug_name("sk")]["script_accuracy"] <= 1.0


# The study command as a user runs it (study.gin: two runs at a time, each its own
# slt.train process), for 2 steps per arm.
def test_every_arm_trains_and_is_evaluated(study_dir):
    out, stdout = study_dir
    # One text pretraining, and every run starts from it.
    pretrain = out / "pretrain"
    assert json.loads((pretrain / "done.json").read_text())["steps"] == 2
    for arm in ARMS:
        run = out / arm / "seed_0"
        losses = [json.loads(line) for line in (run / "train" / "metrics.jsonl").open()]
        assert [r["step"] for r in losses][-1] == STEPS[arm]
        metrics = json.loads((out / "metrics" / f"{arm}.seed_0.json").read_text())
        assert sorted(metrics) == sorted(EVAL_TASKS)
        assert f"initial params from {pretrain}" in (run / "train.log").read_text()
    # The equal-steps arms are their source runs evaluated at the first arm's steps.
    for arm, source in EQUAL_STEPS_ARMS.items():
        derived = json.loads((out / "metrics" / f"{arm}.seed_0.json").read_text())
        at_step_2 = out / source / "seed_0" / "eval" / "step_2" / "metrics.json"
        assert derived == json.loads(at_step_2.read_text())
        assert json.loads((out / arm / "seed_0" / "source.json").read_text()) == {
            "run": str(out / source / "seed_0"),
            "step": 2,
        }
    report = (out / "report.md").read_text()
    assert "## E1: zero-shot SLT through MT data" in report
    assert "## E2: more sign languages" in report
    assert "## Verdicts" in report and "## Table 10" in report
    assert "| gss>el |" in report
    for plot in ("e1.png", "e2.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["info"]["run_wall_s"]) == {f"{a}/seed_0" for a in ARMS}
    assert summary["info"]["parallel_runs"] == 2
    for arm in ARMS:  # each run's own log, from its own process
        steps = STEPS[arm]
        assert f"step {steps}/{steps}" in (out / arm / "seed_0" / "train.log").read_text()
    # E1 learns CTC on the signed text and decodes with the attention decoder alone;
    # E2 learns CTC on its targets and decodes with the CTC head.
    e1_config = (out / "e1_b" / "seed_0" / "config.gin").read_text()
    e2_config = (out / "e2_ase" / "seed_0" / "config.gin").read_text()
    assert "encoder_ctc_targets = 'signed_text'" in e1_config
    assert "ctc_weight = 0.0" in e1_config
    assert "encoder_ctc_targets = 'targets'" in e2_config
    assert "ctc_weight = 0.7" in e2_config


def test_a_failed_run_stops_the_study_with_its_log(tmp_path):
    from slt.study import runs as study_runs

    jobs = [
        ("bad/seed_0", str(tmp_path / "bad"), ["--gin_file=experiments/no_such_arm.gin"]),
        ("never/seed_0", str(tmp_path / "never"), ["--gin_file=experiments/e2_ase.gin"]),
    ]
    failed = r"(?s)bad/seed_0: slt.train exited with [1-9].*no_such_arm"
    with pytest.raises(RuntimeError, match=failed):
        study_runs.run_in_processes(jobs, parallel_runs=1, poll_s=0.2)
    assert (tmp_path / "bad" / "train.log").is_file()
    assert not (tmp_path / "never").exists()  # the queue stops at the first failure


def test_a_run_in_a_bucket_gets_its_log_uploaded(gcs):
    import gcs_emulator

    from slt import storage
    from slt.study import runs as study_runs

    run_dir = f"gs://{gcs_emulator.BUCKET}/study/bad/seed_0"
    jobs = [("bad/seed_0", run_dir, ["--gin_file=experiments/no_such_arm.gin"])]
    with pytest.raises(RuntimeError, match="no_such_arm"):
        study_runs.run_in_processes(jobs, parallel_runs=1, poll_s=0.2)
    assert "no_such_arm.gin" in storage.read_text(f"{run_dir}/train.log")


def test_a_finished_study_is_kept_when_run_again(study_dir):
    out, _ = study_dir
    before = (out / "metrics" / "e1_a.seed_0.json").read_text()
    done = _run_study(out)
    assert done.stdout.count(": kept ") == len(ARMS) + 1  # and the pretraining
    assert (out / "metrics" / "e1_a.seed_0.json").read_text() == before


def test_a_kept_run_of_other_steps_is_refused(tmp_path):
    from slt.study import runs as study_runs

    (tmp_path / "train").mkdir()
    steps = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    (tmp_path / "train" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    study_runs.check_kept_run(str(tmp_path), 2)
    with pytest.raises(ValueError, match="holds a finished run of 2 steps.*train_steps=3"):
        study_runs.check_kept_run(str(tmp_path), 3)


def test_disjoint_mt_leaves_out_every_held_out_asl_word():
    held_out = em.held_out_asl_words()
    for language in ("ar", "de"):
        source = em.CldrParallelTextWithoutHeldOut(language)
        ds = source.dataset("train", shuffle=False, seed=None, shard_info=None)
        english = {r["source_text"].decode() for r in ds.as_numpy_iterator()}
        assert english and not english & held_out
        # Only those pairs go: the default split's other training pairs all stay.
        default = fm.fs_sources.cldr_pairs("en", language)["train"]
        assert len(english) == len({r[1] for r in default} - held_out)
        overlap = em.mt_overlap(language)
        assert 0.7 < overlap["in_mt_train"] / overlap["words"] < 0.9


def test_study_mixtures_are_registered_with_their_tasks():
    b = seqio.get_mixture_or_task("experiment_e1_slt_aug_mt")
    names = {t.name for t in b.tasks}
    assert em.word_name() in names
    assert {em.aug_name(x) for x in em.E1_SEEN} <= names
    assert not {em.aug_name(x) for x in em.E1_ZERO_SHOT} & names
    assert {em.mt_name(x) for x in em.E1_SEEN + em.E1_ZERO_SHOT} <= names
    a = {t.name for t in seqio.get_mixture_or_task("experiment_e1_slt_aug").tasks}
    assert a == names - {em.mt_name(x) for x in fm.MT_LANGUAGES}
    e2 = seqio.get_mixture_or_task("experiment_e2_all_signs")
    assert len(e2.tasks) == 19


def _batches(mixture: str, ctc_targets: bool, rows: int = 96):
    from slt.data import features

    converter = features.LandmarkEncDecFeatureConverter(ctc_targets=ctc_targets)
    ds = seqio.get_dataset(
        mixture,
        {"landmarks": 160, "inputs": 64, "targets": 48},
        dataset_split="train",
        shuffle=True,
        seed=3,
        feature_converter=converter,
    )
    return next(ds.batch(rows).as_numpy_iterator())


def _text(tokens) -> str:
    return bytes(int(t) - 3 for t in tokens if t > 2).decode("utf-8", "replace")


def test_e1_batches_carry_the_signed_word_as_ctc_labels():
    batch = _batches("experiment_e1_slt_aug_mt", ctc_targets=True)
    prompts = [_text(row) for row in batch["encoder_input_tokens"]]
    kinds = {"mt": 0, "en": 0, "other": 0}
    for i, prompt in enumerate(prompts):
        signed = _text(batch["encoder_ctc_targets"][i])
        target = _text(batch["decoder_target_tokens"][i])
        if prompt.startswith("<mt>"):
            kinds["mt"] += 1
            assert not batch["encoder_ctc_targets"][i].any()  # nothing was signed
            assert not batch["encoder_landmark_mask"][i].any()
        elif prompt.startswith("<slt> <ase> <en>"):
            kinds["en"] += 1
            assert signed == target  # ASL -> English: the spelling is the target
        else:
            kinds["other"] += 1
            # Augmented SLT: the CTC labels are the English word that was spelled,
            # the target is its name in another language.
            assert prompt.startswith("<slt> <ase> <") and signed.isalpha()
            assert signed in em.fs_sources.cldr_word_translations("en", prompt[13:15])
    assert min(kinds.values()) > 0, kinds


def test_ctc_on_signed_text_needs_tasks_that_have_it():
    with pytest.raises(ValueError, match="signed_text=True"):
        _batches("experiment_e2_ase", ctc_targets=True)


def test_span_corruption_hides_spans_behind_sentinels():
    import numpy as np

    from slt.tasks.study import pretraining

    rng = np.random.default_rng(0)
    for text in ["Deutschland", "Німеччина", "Ab", "X", "Papua New Guinea"]:
        data = text.encode()
        inputs, targets = pretraining.corrupt(data, rng)
        sentinels = [b for b in inputs if b >= 0xF8]
        assert sentinels == [0xFF - i for i in range(len(sentinels))] and sentinels
        assert [b for b in targets if b >= 0xF8] == sentinels
        # Filling each sentinel of the inputs with its span gives the text back.
        spans, current = {}, None
        for b in targets:
            if b >= 0xF8:
                current = b
                spans[current] = bytearray()
            else:
                spans[current].append(b)
        rebuilt = bytearray()
        for b in inputs:
            rebuilt += spans[b] if b >= 0xF8 else bytes([b])
        assert bytes(rebuilt) == data
        hidden = sum(len(v) for v in spans.values())
        if len(data) > 3:
            assert 0.15 <= hidden / len(data) <= 0.5
