"""The paper's task factories, mixtures, sources and rates (tasks/paper_*.py, mixing.py)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf
from helpers import TEST_DATA

from slt import prepare, tasks
from slt.data import features, landmarks
from slt.evaluation import metrics
from slt.io import clips
from slt.tasks import languages, mixing, sources
from slt.tasks.fingerspelling import corpus as fingerspelling
from slt.tasks.fingerspelling import sources as fingerspelling_sources
from slt.tasks.paper import tasks as paper_tasks

VOCAB = features.byte_vocabulary()
LENGTHS = {"landmarks": 40, "inputs": 96, "targets": 64}


def _text(ids) -> str:
    return VOCAB.decode([int(i) for i in ids])


def _clips(n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(
            {
                "landmarks": rng.normal(size=(30, 255)),
                "text": f"word{i} more{i}",
                "sign_language": "ase",
                "spoken_language": "en",
                "id": f"clip{i}",
                "captions": [(f"word{i}", 0, 12), (f"more{i}", 14, 30)],
            }
        )
    return out


def _register(prefix: str, n=6, pairs=4):
    """Small in-memory SLT, alignment and MT tasks; returns their names."""
    clip_source = sources.InMemoryClipSource(prefix, {"train": _clips(n)})
    text_source = sources.InMemoryTextPairSource(
        prefix + "_text", {"train": [(f"house {i}", f"Haus {i}", "en", "de") for i in range(pairs)]}
    )
    names = {k: f"{prefix}_{k}" for k in ("slt", "timed", "align", "mt")}
    for name in names.values():
        if name in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove(name)
    small = {"shuffle_buffer_size": 16}  # the default buffers would repeat tiny data 2,048x
    paper_tasks.add_slt_task(names["slt"], clip_source, languages_=("ase", "en"), **small)
    paper_tasks.add_slt_task(names["timed"], clip_source, timed=True, **small)
    paper_tasks.add_alignment_task(names["align"], clip_source, **small)
    paper_tasks.add_mt_task(names["mt"], text_source, **small)
    return names


def _examples(name, lengths=LENGTHS, **kwargs):
    kwargs.setdefault("shuffle", False)
    return list(
        seqio.get_mixture_or_task(name)
        .get_dataset(lengths, split="train", **kwargs)
        .as_numpy_iterator()
    )


def test_each_task_yields_the_documented_features_and_prompt(tmp_path):
    names = _register("toy")
    slt = _examples(names["slt"])
    assert len(slt) == 6
    assert slt[0]["landmarks"].shape == (30, 255) and slt[0]["landmarks"].dtype == np.float32
    assert _text(slt[0]["inputs"]) == "<slt> <ase> <en>"
    assert _text(slt[0]["targets"]) == "word0 more0"
    assert slt[0]["targets"][-1] == 1  # EOS

    timed = _examples(names["timed"])
    assert _text(timed[1]["targets"]) == "0 12 word1 <sep> 14 30 more1"
    assert paper_tasks.parse_timed_captions(_text(timed[1]["targets"])) == [
        (0, 12, "word1"),
        (14, 30, "more1"),
    ]

    align = _examples(names["align"])
    assert _text(align[2]["inputs"]) == "<align> <ase> <en> word2 <sep> more2"
    assert _text(align[2]["targets"]) == "0 12 <sep> 14 30"
    assert paper_tasks.parse_alignment_target("0 12 <sep> 14 30") == [(0, 12), (14, 30)]

    mt = _examples(names["mt"])
    assert len(mt) == 8  # both directions of 4 pairs
    assert all(ex["landmarks"].shape == (0, 255) for ex in mt)
    assert [(_text(ex["inputs"]), _text(ex["targets"])) for ex in mt[:2]] == [
        ("<mt> <en> <de> house 0", "Haus 0"),
        ("<mt> <de> <en> Haus 0", "house 0"),
    ]

    # Augmented SLT from a translations file keyed by caption id; clip5 has none.
    path = tmp_path / "translations.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"id": f"clip{i}", "translations": {"de": f"Wort{i}", "fr": f"mot{i}"}})
            for i in range(5)
        )
        + "\n",
        encoding="utf-8",
    )
    source = sources.InMemoryClipSource("toy", {"train": _clips()})
    paper_tasks.add_augmented_slt_task(
        "toy_aug_de", source, "de", sources.TranslationTable(str(path), "de"), sign_language="ase"
    )
    before = sources.SKIPPED.counts.get("no de translation", 0)
    aug = _examples("toy_aug_de")
    assert [_text(ex["targets"]) for ex in aug] == [f"Wort{i}" for i in range(5)]
    assert _text(aug[0]["inputs"]) == "<slt> <ase> <de>"
    assert sources.SKIPPED.counts["no de translation"] == before + 1
    # ... or from a manifest column, keyed by the row id.
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "clip0", "path": "x.pose", "text_it": "parola"}) + "\n")
    table = sources.TranslationTable(str(manifest), "it", column="text_it").load()
    assert table == {"clip0": "parola"}


def test_captions_past_the_frame_length_are_dropped_and_counted():
    names = _register("cut")
    before = features.TRUNCATION.snapshot()["amount_by_feature"].get("captions", 0)
    align = _examples(names["align"], {"landmarks": 20, "inputs": 96, "targets": 64})
    assert _text(align[0]["targets"]) == "0 12"  # the second caption ends at 30 > 20
    assert align[0]["landmarks"].shape == (20, 255)
    after = features.TRUNCATION.snapshot()["amount_by_feature"]["captions"]
    assert after - before == 6


def test_converter_mixes_text_only_examples_and_counts_truncation():
    names = _register("conv")
    mixing.register_mixture(
        "conv_mix", {"sign": [names["slt"], names["align"]], "mt": [names["mt"]]}
    )
    converter = features.LandmarkEncDecFeatureConverter()
    ds = seqio.get_dataset(
        "conv_mix",
        LENGTHS,
        dataset_split="train",
        shuffle=True,
        seed=1,
        num_epochs=None,
        feature_converter=converter,
    )
    batch = next(ds.batch(48).as_numpy_iterator())
    prompts = [_text(row).split(" ")[0] for row in batch["encoder_input_tokens"]]
    assert {"<slt>", "<align>", "<mt>"} <= set(prompts)
    for prompt, mask in zip(prompts, batch["encoder_landmark_mask"]):
        assert (mask.sum() == 0) == (prompt == "<mt>")
    assert batch["encoder_landmarks"].shape == (48, 40, 255)

    # seqio's length check refuses what is too long; without it, the converter cuts
    # and counts (tasks count before seqio trims: see the caption test above).
    converter = features.LandmarkEncDecFeatureConverter(apply_length_check=False)
    features.TRUNCATION.reset()
    long = tf.data.Dataset.from_tensors(
        {
            "landmarks": tf.zeros([50, 255]),
            "inputs": tf.ones([5], tf.int32),
            "targets": tf.ones([70], tf.int32),
        }
    )
    out = next(converter(long, LENGTHS).as_numpy_iterator())
    assert out["encoder_landmark_mask"].sum() == 40
    snap = features.TRUNCATION.snapshot()
    assert snap["examples"] == 1
    assert snap["amount_by_feature"] == {"landmarks": 10, "targets": 6}


def test_mixture_honours_p_mt_and_task_rates():
    names = _register("rate", n=4, pairs=3)
    mixing.register_mixture(
        "rate_mix", {"sign": [names["slt"], names["align"]], "mt": [names["mt"]]}
    )
    saved = mixing.SETTINGS
    try:
        mixing.configure(p_mt=0.3, task_rates={names["align"]: 3.0}, size_weighted=False)
        rates = mixing.current_rates("rate_mix")
        assert rates[names["mt"]] == pytest.approx(0.3)
        assert rates[names["slt"]] == pytest.approx(0.7 / 4)
        assert rates[names["align"]] == pytest.approx(0.7 * 3 / 4)
        n = 3000
        ds = seqio.get_mixture_or_task("rate_mix").get_dataset(
            LENGTHS, split="train", shuffle=True, seed=7, num_epochs=None
        )
        counts = {"<mt>": 0, "<slt>": 0, "<align>": 0}
        for ex in ds.take(n).as_numpy_iterator():
            counts[_text(ex["inputs"]).split(" ")[0]] += 1
        for prompt, p in (("<mt>", 0.3), ("<slt>", 0.175), ("<align>", 0.525)):
            sigma = math.sqrt(p * (1 - p) / n)
            assert abs(counts[prompt] / n - p) < 4 * sigma, (prompt, counts)
        # Temperature: rates ** (1 / T) within a group; sizes weigh in when known.
        mixing.configure(temperature=2.0)
        assert mixing.current_rates("rate_mix")[names["align"]] == pytest.approx(
            0.7 * math.sqrt(3) / (1 + math.sqrt(3))
        )
        mixing.configure(temperature=1.0, task_rates={"x": 1.0}, size_weighted=True)
        shares = mixing.group_shares(["a", "b"], mixing.SETTINGS, {"a": 100, "b": 300})
        assert shares == pytest.approx({"a": 0.25, "b": 0.75})
        # A group where one task has no size is refused, naming it; with no sizes at
        # all (no data yet) every task counts 1.
        with pytest.raises(ValueError, match=r"\['b'\] cannot tell theirs.*size_weighted"):
            mixing.group_shares(["a", "b"], mixing.SETTINGS, {"a": 100, "b": None})
        shares = mixing.group_shares(["a", "b"], mixing.SETTINGS, {"a": None, "b": None})
        assert shares == pytest.approx({"a": 0.5, "b": 0.5})
    finally:
        mixing.SETTINGS = saved


def test_iteration_is_deterministic_for_a_seed():
    names = _register("det")
    mixing.register_mixture(
        "det_mix", {"sign": [names["slt"], names["align"]], "mt": [names["mt"]]}
    )

    def run(seed):
        ds = seqio.get_mixture_or_task("det_mix").get_dataset(
            LENGTHS, split="train", shuffle=True, seed=seed, num_epochs=None
        )
        return [(_text(e["inputs"]), _text(e["targets"])) for e in ds.take(40).as_numpy_iterator()]

    first = run(3)
    assert first == run(3)
    assert first != run(4)


def _write_parallel_files(root, files=3, lines=5):
    os.makedirs(root / "train")
    for k in range(files):
        with open(root / "train" / f"en-{['de', 'fr', 'it'][k]}.tsv", "w") as f:
            for i in range(lines):
                f.write(f"s{k}.{i}\tt{k}.{i}\n")
            f.write("a broken line without a tab\n")


@pytest.mark.parametrize("num_hosts", [2, 3, 4])
def test_host_shards_are_disjoint_and_cover_the_data(tmp_path, num_hosts):
    _write_parallel_files(tmp_path)  # 3 files: by file for 2-3 hosts, by example for 4
    source = sources.ParallelTextFiles("par", str(tmp_path), "write files")
    name = f"par_mt_{num_hosts}"
    paper_tasks.add_mt_task(name, source, directions=("forward",))
    seen = []
    for host in range(num_hosts):
        ids = [
            e["inputs_pretokenized"].decode()
            for e in seqio.get_mixture_or_task(name)
            .get_dataset(
                LENGTHS, split="train", shuffle=False, shard_info=seqio.ShardInfo(host, num_hosts)
            )
            .as_numpy_iterator()
        ]
        assert ids, f"host {host} got nothing"
        seen.append(ids)
    flat = [i for ids in seen for i in ids]
    assert len(flat) == len(set(flat)) == 15
    assert set(source.skipped()) == {
        f"en-{x}.tsv: unreadable line (expected 2 cells)" for x in ("de", "fr", "it")
    }


def test_every_paper_and_offline_mixture_is_registered():
    names = set(seqio.MixtureRegistry.names())
    paper = {
        "pretrain_yt_asl",
        "pretrain_yt_full",
        "pretrain_yt_full_mt_small",
        "pretrain_yt_full_mt_large",
        "pretrain_yt_full_mt_large_aug",
        "finetune_how2sign",
        "finetune_elementary23",
        "finetune_wmt23_dsgs",
        "finetune_wmt23_lsfch",
        "finetune_wmt23_lisch",
        "finetune_all_benchmarks",
        "eval_fleurs_asl0",
    }
    offline = {
        "fingerspelling_slt",
        "fingerspelling_pretrain_slt_mt_aug",
        "fingerspelling_pretrain_slt_mt",
        "fingerspelling_pretrain_slt_align",
        "fingerspelling_align",
        "fingerspelling_mt",
        "fingerspelling_aug",
        "fingerspelling_slt_timed",
        "fingerspelling_finetune_all",
        "fingerspelling_eval_ase_multilingual",
    }
    assert paper | offline <= names
    fleurs = seqio.get_mixture_or_task("eval_fleurs_asl0")
    assert len(fleurs.tasks) == 42 == len(languages.FLEURS_ASL0_LANGUAGES)
    assert all(t.metric_fns for t in fleurs.tasks)
    scores = paper_tasks.bleu_chrf(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert scores == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    assert paper_tasks.bleu_chrf(["xyz"], ["the cat sat on the mat"])["chrf"] < 10
    assert set(metrics.LANGUAGE_ID_CANDIDATES) == set(languages.SPOKEN_LANGUAGES)
    # The languages of the finetuning benchmarks, in their prompts' task names.
    assert {t.name for t in seqio.get_mixture_or_task("finetune_all_benchmarks").tasks} == {
        "how2sign_slt_ase_en",
        "elementary23_slt_gss_el",
        "wmt23_dsgs_slt_sgg_de",
        "wmt23_lsfch_slt_ssr_fr",
        "wmt23_lisch_slt_slf_it",
    }


def test_missing_data_root_names_the_dataset_and_the_command(tmp_path):
    saved = mixing.SETTINGS
    try:
        mixing.configure(data_root=str(tmp_path / "nowhere"))
        with pytest.raises(sources.MissingDataError) as error:
            seqio.get_mixture_or_task("finetune_how2sign").get_dataset(
                LENGTHS, split="train", shuffle=False
            )
        message = str(error.value)
        assert "'how2sign'" in message and "python -m slt.prepare" in message
        assert str(tmp_path / "nowhere" / "how2sign") in message
        with pytest.raises(sources.MissingDataError, match="mt_large"):
            seqio.get_mixture_or_task("mt_large").get_dataset(LENGTHS, split="train")
        with pytest.raises(sources.MissingDataError, match="how2sign"):
            tasks.landmark_config("finetune_how2sign")
    finally:
        mixing.SETTINGS = saved


def test_paper_mixtures_read_prepared_shards(tmp_path):
    """python -m slt.prepare output -> finetune and alignment tasks, with translations."""
    letters = {text: path for path, _, sign, text in fingerspelling._index() if sign == "ase"}
    rows = [
        {
            "id": f"l{c}",
            "path": letters[c],
            "text": c,
            "sign_language": "ase",
            "spoken_language": "en",
        }
        for c in "ABCDE"
    ]
    rows.append(
        {
            "id": "multi",
            "path": os.path.join(TEST_DATA, "mediapipe_reduced.pose"),
            "sign_language": "sgg",
            "spoken_language": "de",
            "end": 6.0,
            "captions": [
                {"text": "erster Satz", "start": 0.0, "end": 2.5},
                {"text": "zweiter", "start": 2.5, "end": 6.0},
            ],
        }
    )
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "prepared"
    config = landmarks.LandmarkConfig(max_frames=100)
    result = prepare.prepare(
        str(manifest),
        str(out),
        clips.PrepareOptions(config=config),
        split="train",
        examples_per_shard=2,
        num_workers=1,
        progress=False,
    )
    assert result.num_written == 6
    (out / "translations.jsonl").write_text(
        json.dumps({"id": "lA", "translations": {"de": "A auf Deutsch"}}) + "\n"
    )
    saved = mixing.SETTINGS
    try:
        mixing.configure(
            dataset_roots={"how2sign": str(out), "yt_full": str(out), "yt_asl": str(out)}
        )
        slt = _examples("how2sign_slt_ase_en", {"landmarks": 100, "inputs": 64, "targets": 64})
        assert len(slt) == 6 and _text(slt[0]["inputs"]) == "<slt> <ase> <en>"
        assert sorted(_text(e["targets"]) for e in slt)[:5] == list("ABCDE")
        assert tasks.landmark_config("finetune_how2sign") == config
        align = [
            e
            for e in _examples("yt_full_align", {"landmarks": 100, "inputs": 64, "targets": 64})
            if _text(e["inputs"]).startswith("<align> <sgg>")
        ]
        assert _text(align[0]["inputs"]) == "<align> <sgg> <de> erster Satz <sep> zweiter"
        spans = paper_tasks.parse_alignment_target(_text(align[0]["targets"]))
        assert len(spans) == 2 and spans[0][0] == 0 and spans[0][1] <= spans[1][0]
        aug = _examples("yt_asl_aug_slt_ase_de", {"landmarks": 100, "inputs": 64, "targets": 64})
        assert [(_text(e["inputs"]), _text(e["targets"])) for e in aug] == [
            ("<slt> <ase> <de>", "A auf Deutsch")
        ]
        # Two hosts read disjoint shard files that together cover the split.
        ids = [
            sorted(
                e["id"].decode()
                for e in _examples(
                    "how2sign_slt_ase_en",
                    {"landmarks": 100, "inputs": 64, "targets": 64},
                    shard_info=seqio.ShardInfo(h, 2),
                )
            )
            for h in range(2)
        ]
        assert not set(ids[0]) & set(ids[1]) and len(ids[0]) + len(ids[1]) == 6
    finally:
        mixing.SETTINGS = saved


def test_offline_sources_from_cldr_and_multiword_clips():
    pairs = fingerspelling_sources.cldr_pairs("en", "de")
    train = {key: (a, b) for key, a, b in pairs["train"] + pairs["validation"] + pairs["test"]}
    assert train["territory:DE"] == ("Germany", "Deutschland")
    keys = [{k for k, _, _ in pairs[s]} for s in ("train", "validation", "test")]
    assert (
        not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and len(keys[0]) > 8 * len(keys[2]) / 2
    )
    words = fingerspelling_sources.cldr_word_translations("en", "fr")
    assert words["Germany"] == "Allemagne" and words["January"] == "janvier"

    config = landmarks.LandmarkConfig()
    frames, bounds = fingerspelling_sources.multiword_clip("ase", ["Peru", "Chad"], 0, 0, config)
    assert frames.shape[1] == 255 and bounds.shape == (2, 2)
    assert 0 <= bounds[0, 0] < bounds[0, 1] < bounds[1, 0] < bounds[1, 1] <= frames.shape[0]
    again, _ = fingerspelling_sources.multiword_clip("ase", ["Peru", "Chad"], 0, 0, config)
    np.testing.assert_array_equal(frames, again)

    # The same source drives an alignment task (fast: default preprocessing, ase only).
    source = fingerspelling_sources.MultiWordClipSource("ase", "en", 0, lambda: config, 1)
    paper_tasks.add_alignment_task(
        "fs_align_test",
        source,
        languages_=("ase", "en"),
        splits=("validation",),
        shuffle_buffer_size=8,
    )
    ex = next(
        seqio.get_mixture_or_task("fs_align_test")
        .get_dataset(
            {"landmarks": 256, "inputs": 128, "targets": 64}, split="validation", shuffle=False
        )
        .as_numpy_iterator()
    )
    captions = _text(ex["inputs"]).split(" ", 3)[3].split(" <sep> ")
    spans = paper_tasks.parse_alignment_target(_text(ex["targets"]))
    assert 2 <= len(captions) == len(spans) <= 4
    assert all(s < e for s, e in spans) and spans[-1][1] <= ex["landmarks"].shape[0]


def test_prompt_tags_are_stable_sentencepiece_pieces(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = [
        languages.prompt("mt", a, "en") + " the house is big and the sentence is long"
        for a in languages.SPOKEN_LANGUAGES
    ] + [languages.prompt("slt", s, "de") + " ein Haus" for s in languages.SIGN_LANGUAGES]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 3),
        model_prefix=str(tmp_path / "spm"),
        vocab_size=120,
        hard_vocab_limit=False,
        model_type="unigram",
        minloglevel=2,
    )
    vocabulary = seqio.SentencePieceVocabulary(str(tmp_path / "spm.model"))
    ids = languages.check_prompt_pieces(vocabulary)
    assert len(ids) == len(languages.all_tags())
    assert languages.check_prompt_pieces(features.byte_vocabulary())["<slt>"] == tuple(
        b + 3 for b in b"<slt>"
    )
    assert len(languages.FLEURS_ASL0_LANGUAGES) == 42
    assert {"gss", "sgg", "ssr", "slf", "ase"} <= set(languages.SIGN_LANGUAGES)


@pytest.mark.slow
def test_fingerspelling_pretrain_batch_mixes_every_kind():
    converter = features.LandmarkEncDecFeatureConverter()
    ds = seqio.get_dataset(
        "fingerspelling_pretrain_slt_mt_aug",
        {"landmarks": 256, "inputs": 64, "targets": 32},
        dataset_split="train",
        shuffle=True,
        seed=0,
        num_epochs=None,
        feature_converter=converter,
    )
    batch = next(ds.batch(96).as_numpy_iterator())
    kinds = set()
    for row in batch["encoder_input_tokens"]:
        tags = _text(row).split(" ")
        kinds.add(
            "aug" if tags[0] == "<slt>" and tags[1] == "<ase>" and tags[2] != "<en>" else tags[0]
        )
    assert {"<slt>", "<align>", "<mt>", "aug"} <= kinds


def _metric_languages(task_name: str) -> list[str]:
    """Target languages of a task's language metric functions."""
    return [
        fn.keywords["target_language"]
        for fn in seqio.get_mixture_or_task(task_name).predict_metric_fns
        if getattr(fn, "func", None) is metrics.language_metrics
    ]


def test_evaluation_tasks_score_language_accuracy_and_empty_rate():
    # Every FLEURS-ASL#0 direction (zero-shot ones included), the finetuning
    # benchmarks and the offline evaluation mixture score their target language.
    for task in seqio.get_mixture_or_task("eval_fleurs_asl0").tasks:
        assert _metric_languages(task.name) == [task.name.rsplit("_", 1)[1]], task.name
    assert _metric_languages("wmt23_lsfch_slt_ssr_fr") == ["fr"]
    for task in seqio.get_mixture_or_task("fingerspelling_eval_ase_multilingual").tasks:
        assert _metric_languages(task.name) == [task.name.rsplit("_", 1)[1]], task.name
    assert _metric_languages("fingerspelling_mt_en_de") == []  # both directions: no one language

    task = seqio.get_mixture_or_task("fleurs_asl0_slt_ase_de")
    targets = [
        "Das Wetter ist heute schön.",
        "Wir gehen morgen spazieren.",
        "Guten Morgen.",
        "Vielen Dank für die Hilfe.",
    ]
    predictions = [
        "Das Wetter ist heute schön und warm.",
        "We are going for a walk tomorrow.",
        "",
        "Vielen Dank für Ihre Hilfe.",
    ]
    scores = {}
    for fn in task.predict_metric_fns:
        scores.update(fn(targets, predictions))
    # German, English (wrong language), empty (wrong, and empty), German.
    assert scores["language_accuracy"] == 0.5 and scores["empty_rate"] == 0.25
    import sacrebleu

    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [targets]).score)
    with pytest.raises(ValueError, match="not among the language identifier's candidates"):
        paper_tasks.translation_metric_fns("xx")
