import numpy as np
import pytest
import seqio
import tensorflow as tf

from slt import tasks
from slt.data import features
from slt.tasks import languages
from slt.tasks.fingerspelling import corpus as fingerspelling
from slt.tasks.fingerspelling import tasks as fingerspelling_tasks

LENGTHS = {"landmarks": 160, "inputs": 24, "targets": 24}


def test_prompt_builder():
    assert languages.prompt("slt", "ase", "en") == "<slt> <ase> <en>"
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        languages.prompt("slt", "xx", "en")
    with pytest.raises(ValueError, match="unknown task"):
        languages.prompt("translate", "ase", "en")


def test_registry_has_one_task_per_sign_language_and_the_mixture():
    mixture = seqio.get_mixture_or_task("fingerspelling_slt")
    names = sorted(t.name for t in mixture.tasks)
    assert len(names) == 19
    assert "fingerspelling_slt_ase_en" in names and "fingerspelling_slt_gss_el" in names
    config = tasks.landmark_config("fingerspelling_slt")
    assert config == fingerspelling_tasks.standardized_config()
    assert config.feature_mean is not None and len(config.feature_std) == 255


def test_task_examples_are_real_clips_with_byte_prompts():
    task = seqio.get_mixture_or_task("fingerspelling_slt_ase_en")
    ds = task.get_dataset(LENGTHS, split="test", shuffle=False, num_epochs=1)
    examples = list(ds.take(3).as_numpy_iterator())
    test_words = fingerspelling.word_splits("ase")[0]["test"]
    prompt_ids = [b + 3 for b in b"<slt> <ase> <en>"] + [1]
    for ex, word in zip(examples, test_words):
        assert ex["inputs"].tolist() == prompt_ids
        assert ex["targets_pretokenized"].decode() == word
        assert ex["targets"].tolist() == [b + 3 for b in word.encode()] + [1]
        assert ex["landmarks"].dtype == np.float32 and ex["landmarks"].shape[1] == 255
        np.testing.assert_array_equal(
            ex["landmarks"],
            fingerspelling.clip_frames(
                "ase", word, 10**6, config=fingerspelling_tasks.standardized_config()
            ),
        )


def test_train_split_holds_no_test_word():
    task = seqio.get_mixture_or_task("fingerspelling_slt_ase_en")
    ds = task.get_dataset(LENGTHS, split="train", shuffle=False, num_epochs=1)
    train_words = {ex["targets_pretokenized"].decode() for ex in ds.take(300).as_numpy_iterator()}
    assert len(train_words) == 300  # variant-major: the first pass has distinct words
    assert not train_words & set(fingerspelling.word_splits("ase")[0]["test"])


def test_feature_converter_pads_masks_and_shifts():
    frames = np.arange(5 * 255, dtype=np.float32).reshape(5, 255)
    ds = tf.data.Dataset.from_tensors(
        {
            "landmarks": frames,
            "inputs": np.array([7, 8, 1], np.int32),
            "targets": np.array([4, 5, 6, 1], np.int32),
        }
    )
    converter = features.LandmarkEncDecFeatureConverter()
    out = next(iter(converter(ds, {"landmarks": 8, "inputs": 4, "targets": 6}).as_numpy_iterator()))
    assert out["encoder_input_tokens"].tolist() == [7, 8, 1, 0]
    assert out["encoder_landmarks"].shape == (8, 255)
    np.testing.assert_array_equal(out["encoder_landmarks"][:5], frames)
    assert (out["encoder_landmarks"][5:] == 0).all()
    assert out["encoder_landmark_mask"].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert out["decoder_target_tokens"].tolist() == [4, 5, 6, 1, 0, 0]
    assert out["decoder_input_tokens"].tolist() == [0, 4, 5, 6, 1, 0]
    assert out["decoder_loss_weights"].tolist() == [1, 1, 1, 1, 0, 0]
    assert set(out) == set(converter.MODEL_FEATURES)


def test_text_only_examples_get_an_empty_frame_mask():
    ds = tf.data.Dataset.from_tensors(
        {
            "landmarks": np.zeros((0, 255), np.float32),
            "inputs": np.array([9, 1], np.int32),
            "targets": np.array([4, 1], np.int32),
        }
    )
    out = next(
        iter(
            features.LandmarkEncDecFeatureConverter()(
                ds, {"landmarks": 4, "inputs": 4, "targets": 4}
            ).as_numpy_iterator()
        )
    )
    assert out["encoder_landmark_mask"].tolist() == [0, 0, 0, 0]


def test_converter_refuses_packing():
    with pytest.raises(ValueError, match="cannot pack"):
        features.LandmarkEncDecFeatureConverter(pack=True)
