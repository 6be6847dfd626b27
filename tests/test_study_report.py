"""The study's report (`slt.study.report.write`) on synthetic runs, without training:
exact match read from the predictions, paired per-seed differences, Table 10 split by
MT overlap, and every verdict outcome of the pre-stated criterion."""

from __future__ import annotations

import json

import pytest
import sacrebleu

from slt.evaluation import metrics as metrics_lib
from slt.study import analysis, report
from slt.tasks.fingerspelling import mixtures as fm
from slt.tasks.fingerspelling import sources as fs_sources

ASL_EN = fm.word_name("ase")
SK, UK, DE = fm.aug_name("sk"), fm.aug_name("uk"), fm.aug_name("de")
E1_ARMS = ("e1_a", "e1_b", "e1_b_steps", "e1_b_disjoint")
E2_ARMS = ("e2_ase", "e2_all_signs", "e2_all_signs_steps")
STEPS = {
    "e1_a": 100,
    "e1_b": 200,
    "e1_b_steps": 100,
    "e1_b_disjoint": 200,
    "e2_ase": 50,
    "e2_all_signs": 100,
    "e2_all_signs_steps": 50,
}


def _train_pairs(language: str, k: int) -> list[tuple[str, str]]:
    """k (English word, translation) pairs of the MT training split."""
    rows = fs_sources.cldr_pairs("en", language)["train"]
    return [(r[1], r[2]) for r in rows if r[1].isalpha()][:k]


(W1, T1), (W2, T2), (W3, T3) = _train_pairs("sk", 3)
((U1, V1),) = _train_pairs("uk", 1)
# The identifier, replaced by a lookup: the hand-computed accuracies below follow.
LANGUAGE_OF = dict.fromkeys((T1, T2, T3, "qwerty", "zyx", "zyxx"), "sk")
LANGUAGE_OF |= {V1: "uk", "кверти": "uk"}


def _fake_identify(texts, candidates=None):
    return [LANGUAGE_OF.get(t) for t in texts]


def _rows(items):
    """Prediction rows from (word, target, prediction)."""
    return [
        {"id": f"ase/{w}/{i}", "prompt": "<slt> <ase> <x>", "prediction": p, "target": t}
        for i, (w, t, p) in enumerate(items)
    ]


# The zero-shot predictions of e1_b: (word, target, prediction). The first three words
# of sk have their pair in MT training; no CLDR name is "Qwertyland" or "Zyxland".
SK_SEED_0 = [
    (W1, T1, T1),
    (W2, T2, ""),
    (W3, T3, "Привет"),
    ("Qwertyland", "qwerty", "qwerty"),
    ("Zyxland", "zyx", "zyxx"),
]
SK_SEED_1 = [
    (W1, T1, T1),
    (W2, T2, T2),
    (W3, T3, T3),
    ("Qwertyland", "qwerty", ""),
    ("Zyxland", "zyx", "zyx"),
]
UK_SEED_0 = [(U1, V1, V1), ("Qwertyland", "кверти", "qwerty")]
# ASL -> English of e1_a, seed 0: two of four equal up to surrounding whitespace.
EN_SEED_0 = [("Paris", "Paris", "Paris"), ("Rome", "Rome", " Rome "), ("Rome", "Rome", "rome")]
EN_SEED_0.append(("Oslo", "Oslo", ""))


def _write_predictions(out, arm, seed, task, items):
    eval_dir = out / arm / f"seed_{seed}" / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _rows(items))
    (eval_dir / f"{task}.test.predictions.jsonl").write_text(lines, encoding="utf-8")
    return str(eval_dir)


def _e1_run(en_chrf, z_chrf, z_lang):
    """One E1 run's metrics: ASL -> English, one S and two Z directions."""
    run = {
        ASL_EN: {"chrf": en_chrf, "language_accuracy": 0.5, "empty_rate": 0.0},
        DE: {"chrf": 20.0, "language_accuracy": 0.4, "empty_rate": 0.0, "script_accuracy": 1.0},
    }
    run[ASL_EN] |= {"script_accuracy": 1.0, "exact_match": 0.999}  # replaced from files
    for task, offset in ((SK, 0.0), (UK, 2.0)):
        run[task] = {
            "chrf": z_chrf + offset,
            "language_accuracy": z_lang,
            "empty_rate": 0.1,
            "script_accuracy": 0.5,
        }
    return run


def _e2_run(asl_chrf):
    return {ASL_EN: {"chrf": asl_chrf, "language_accuracy": 0.5, "empty_rate": 0.0}}


def _runs():
    runs = {
        # Z chrF and language accuracy per seed; the bar (ASL -> English >= 85) holds.
        "e1_a": {s: _e1_run(90.0 + s, 10.0 + s, 0.1 * (s + 1)) for s in (0, 1, 2)},
        "e1_b": {s: _e1_run(88.0 + s, 12.0 + s, 0.1 * (s + 2)) for s in (0, 1, 2)},
        # Seed 2: language accuracy equal to A's, not strictly above.
        "e1_b_steps": {s: _e1_run(87.0, 12.0 + s, 0.1 * min(s + 2, 3)) for s in (0, 1, 2)},
        "e1_b_disjoint": {s: _e1_run(86.0, 20.0, 0.9) for s in (0, 1)},  # two seeds only
        "e2_ase": {0: _e2_run(50.0), 1: _e2_run(60.25), 2: _e2_run(8.3)},
        # Exactly 1.0 below ASL alone in every seed (7.3 - 8.3 is -1.0000000000000009 in floats).
        "e2_all_signs": {0: _e2_run(49.0), 1: _e2_run(59.25), 2: _e2_run(7.3)},
        # 1.01 below in seed 1.
        "e2_all_signs_steps": {0: _e2_run(49.0), 1: _e2_run(59.24), 2: _e2_run(7.3)},
    }
    runs["e2_all_signs"][0][fm.word_name("gsg")] = {"chrf": 30.0, "script_accuracy": 0.7}
    return runs


def _info(runs):
    return {
        "command": "python -m slt.experiment",
        "commit": "abc1234",
        "date": "2026-12-01",
        "machine": "x86_64, 2 cores",
        "train_steps": {a: STEPS[a] for a in runs},
        "seeds": [0, 1, 2],
        "wall_s": 60.0,
        "missing_runs": [],
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics_lib, "identify_languages", _fake_identify)
        _write_predictions(out, "e1_a", 0, ASL_EN, EN_SEED_0)
        _write_predictions(out, "e1_b", 0, UK, UK_SEED_0)
        overlap = {
            "e1_b": {
                0: analysis.mt_overlap_breakdown(_write_predictions(out, "e1_b", 0, SK, SK_SEED_0)),
                1: analysis.mt_overlap_breakdown(_write_predictions(out, "e1_b", 1, SK, SK_SEED_1)),
            }
        }
        runs = _runs()
        text = report.write(str(out), runs, overlap, _info(runs), E1_ARMS, E2_ARMS, {SK: 0.5})
    summary = json.loads((out / "summary.json").read_text())
    return out, text, summary


def _verdict(summary, arm):
    (v,) = [v for e in ("E1", "E2") for v in summary["verdicts"][e] if v["arm"] == arm]
    return v


def _run_entry(summary, arm, seed):
    (entry,) = [r for r in summary["runs"] if r["arm"] == arm and r["seed"] == seed]
    return entry


def _chrf(predictions, targets):
    return sacrebleu.corpus_chrf(predictions, [targets]).score


def test_exact_match_is_read_from_the_predictions(study):
    _, _, summary = study
    e1_a = _run_entry(summary, "e1_a", 0)
    assert e1_a["experiment"] == "E1" and e1_a["steps"] == 100
    assert e1_a["metrics"][ASL_EN]["exact_match"] == 0.5  # " Rome " counts, "rome" not
    # Without a predictions file there is none, not the metrics file's.
    assert "exact_match" not in _run_entry(summary, "e1_a", 1)["metrics"][ASL_EN]
    # T1, qwerty of the five sk rows of e1_b, seed 0.
    assert _run_entry(summary, "e1_b", 0)["metrics"][SK]["exact_match"] == pytest.approx(2 / 5)
    assert list(e1_a["metrics"][ASL_EN]) == list(report.SUMMARY_METRICS)
    # Script accuracy is E1's only.
    e2 = _run_entry(summary, "e2_all_signs", 0)
    assert e2["experiment"] == "E2" and "script_accuracy" not in e2["metrics"][fm.word_name("gsg")]
    assert len(summary["runs"]) == 3 + 3 + 3 + 2 + 3 + 3 + 3


def test_paired_differences_by_hand(study):
    _, text, summary = study
    (z,) = [
        r
        for r in summary["paired"]["E1"]
        if r["arm"] == "e1_b" and r["group"] == "Z (zero-shot)" and r["seed"] == 1
    ]
    # e1_b seed 1: Z chrF (13 + 15) / 2, e1_a seed 1: (11 + 13) / 2.
    assert z["difference"]["chrf"] == pytest.approx(14.0 - 12.0)
    assert z["difference"]["language_accuracy"] == pytest.approx(0.3 - 0.2)
    assert z["difference"]["empty_rate"] == 0.0
    assert z["baseline"] == "e1_a"
    assert z["comparison"] == "equal sign examples (e1_b: x2.0 the steps)"
    (en,) = [
        r
        for r in summary["paired"]["E1"]
        if r["arm"] == "e1_b" and r["group"] == "en" and r["seed"] == 2
    ]
    assert en["difference"]["chrf"] == pytest.approx(90.0 - 92.0)
    (e2,) = [r for r in summary["paired"]["E2"] if r["arm"] == "e2_all_signs" and r["seed"] == 0]
    assert e2["group"] == "ase>en" and e2["difference"]["chrf"] == pytest.approx(-1.0)
    row = "| e1_b - e1_a | equal sign examples (e1_b: x2.0 the steps) | Z (zero-shot) | 1 |"
    assert row + " +2.00 | +10.00 | +0.00 | +0.00 |" in text
    assert "| e1_b_steps - e1_a | equal steps |" in text


def test_table_10_splits_every_metric_by_mt_overlap(study):
    _, text, summary = study
    sk = summary["table10"]["e1_b"][SK]
    inside, outside = sk["in_mt_train"], sk["not_in_mt_train"]
    # Seed 0: of T1, "" and "Привет" one is in Slovak, in its script, one empty; seed 1 all right.
    assert inside["num_examples"]["values"] == [3.0, 3.0]
    assert inside["language_accuracy"]["values"] == pytest.approx([1 / 3, 1.0])
    assert inside["script_accuracy"]["values"] == pytest.approx([1 / 3, 1.0])
    assert inside["empty_rate"]["values"] == pytest.approx([1 / 3, 0.0])
    chrf_0 = _chrf([T1, "", "Привет"], [T1, T2, T3])
    assert inside["chrf"]["values"] == pytest.approx([chrf_0, 100.0])
    assert inside["chrf"]["mean"] == pytest.approx((chrf_0 + 100.0) / 2)
    assert outside["language_accuracy"]["values"] == pytest.approx([1.0, 0.5])
    assert outside["empty_rate"]["values"] == pytest.approx([0.0, 0.5])
    assert outside["chrf"]["values"] == pytest.approx(
        [_chrf(["qwerty", "zyxx"], ["qwerty", "zyx"]), _chrf(["", "zyx"], ["qwerty", "zyx"])]
    )
    # The Z group averages sk and uk in seed 0 (uk: V1 right; "qwerty" is Slovak, Latin).
    z = summary["table10"]["e1_b"]["Z (zero-shot)"]
    assert z["in_mt_train"]["language_accuracy"]["values"] == pytest.approx([(1 / 3 + 1) / 2, 1.0])
    assert z["not_in_mt_train"]["language_accuracy"]["values"] == pytest.approx([0.5, 0.5])
    assert z["not_in_mt_train"]["script_accuracy"]["values"] == pytest.approx([0.5, 0.5])
    assert z["not_in_mt_train"]["num_examples"]["values"] == [3.0, 2.0]
    assert set(summary["table10"]) == {"e1_b"}  # the other arms have no overlap
    assert "| e1_b | sk (Z) | 3 / 2 | 66.7 [33.3, 100.0] | 75.0 [50.0, 100.0] |" in text
    assert "| e1_b | Z (zero-shot) | 3.5 / 2.5 |" in text


def test_verdicts_follow_the_criterion(study):
    _, text, summary = study
    assert summary["bar"]["met"] and summary["bar"]["below"] == []
    b = _verdict(summary, "e1_b")
    assert b["verdict"] == "reproduced" and b["headline"]
    assert [s["seed"] for s in b["seeds"]] == [0, 1, 2]
    steps = _verdict(summary, "e1_b_steps")
    assert steps["verdict"] == "not reproduced" and not steps["headline"]
    assert steps["comparison"] == "equal steps"
    assert [s["passed"] for s in steps["seeds"]] == [True, True, False]
    assert _verdict(summary, "e1_b_disjoint")["verdict"] == "undecided (only 2 seeds)"
    # E2: exactly 1.0 chrF below passes, 1.01 does not.
    all_signs = _verdict(summary, "e2_all_signs")
    assert all_signs["verdict"] == "reproduced" and all_signs["headline"]
    assert all_signs["comparison"] == "equal ASL examples (e2_all_signs: x2.0 the steps)"
    e2_steps = _verdict(summary, "e2_all_signs_steps")
    assert e2_steps["verdict"] == "not reproduced"
    assert [s["passed"] for s in e2_steps["seeds"]] == [True, False, True]
    assert "| e2_all_signs_steps - e2_ase | equal steps | ase>en | 1 | -1.01 |" in text
    assert summary["criterion"]["text"] == report.CRITERION
    assert (
        "- **E1 headline, e1_b vs e1_a (equal sign examples (e1_b: x2.0 the steps)): "
        "reproduced**; paired seeds 0, 1, 2." in text
    )
    # The bar table comes first, then the verdicts, then the tables.
    assert text.index("## The bar") < text.index("## Verdicts") < text.index("## E1:")
    assert text.index("## E2:") < text.index("## Paired") < text.index("## Table 10")
    assert "| e1_b_disjoint | 200 | 86.0 | 86.0 | - | yes |" in text


def test_plots_are_written(study):
    out, _, _ = study
    for plot in ("e1.png", "e2.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_run_under_the_bar_leaves_every_e1_verdict_undecided(tmp_path):
    runs = _runs()
    runs["e1_a"][1][ASL_EN]["chrf"] = 84.9
    del runs["e1_b_steps"][2][ASL_EN]
    report.write(str(tmp_path), runs, {}, _info(runs), E1_ARMS, E2_ARMS)
    summary = json.loads((tmp_path / "summary.json").read_text())
    below = "undecided (bar not met: e1_a/seed_1 84.9, e1_b_steps/seed_2 missing)"
    assert [v["verdict"] for v in summary["verdicts"]["E1"]] == [below] * 3
    assert _verdict(summary, "e2_all_signs")["verdict"] == "reproduced"  # E2 has no bar
    assert not summary["bar"]["met"]


def test_a_study_of_two_arms_and_one_seed(tmp_path):
    runs = {arm: {0: _runs()[arm][0]} for arm in ("e1_a", "e1_b")}
    info = _info(runs) | {"seeds": [0], "missing_runs": ["e1_b_steps/seed_0"]}
    text = report.write(str(tmp_path), runs, {}, info, E1_ARMS, E2_ARMS)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert _verdict(summary, "e1_b")["verdict"] == "undecided (only 1 seeds)"
    assert summary["verdicts"]["E2"] == [] and "## E2" not in text
    assert "not finished, left out: e1_b_steps/seed_0" in text
    assert (tmp_path / "e1.png").is_file() and not (tmp_path / "e2.png").exists()


def test_comparison_labels_come_from_the_steps():
    steps = {"a": 100, "b": 200, "c": 100}
    assert report.comparison_label(steps, "b", "a") == "equal sign examples (b: x2.0 the steps)"
    assert report.comparison_label(steps, "c", "a") == "equal steps"
    assert report.comparison_label(steps, "d", "a") == "steps unknown"
