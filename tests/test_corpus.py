import numpy as np
import pytest

from slt import landmarks
from tasks import fingerspelling, fingerspelling_tasks


def test_lexicons_match_the_registered_tasks():
    # fsl rows of the package point at ASL recordings and are excluded.
    assert fingerspelling.sign_languages() == fingerspelling_tasks.SIGN_TO_SPOKEN
    assert len(fingerspelling_tasks.SIGN_TO_SPOKEN) == 19


def test_spelling_uses_longest_lexicon_entries():
    sgg = fingerspelling.load_lexicon("sgg")
    assert sgg.spell("Schach") == ["sch", "a", "ch"]
    assert fingerspelling.load_lexicon("ase").spell("Peru") == ["p", "e", "r", "u"]
    assert fingerspelling.load_lexicon("ase").spell("Zürich") is None


def test_splits_are_disjoint_deterministic_and_every_word_is_accounted_for():
    splits, report = fingerspelling.word_splits("ase", seed=0)
    sets = {s: {w.casefold() for w in words} for s, words in splits.items()}
    assert not sets["train"] & sets["test"]
    assert not sets["train"] & sets["validation"]
    assert not sets["validation"] & sets["test"]
    assert report.candidates == sum(report.kept.values()) + sum(report.skipped.values())
    assert report.kept == {s: len(w) for s, w in splits.items()}
    assert len(splits["train"]) > 900 and len(splits["test"]) > 100
    assert "January" in {w for ws in splits.values() for w in ws}
    again, _ = fingerspelling.word_splits.__wrapped__("ase", seed=0)
    assert again == splits
    other, _ = fingerspelling.word_splits.__wrapped__("ase", seed=1)
    assert other["test"] != splits["test"]


def test_clips_are_deterministic_per_variant_and_scale_with_word_length():
    a = fingerspelling.clip_frames("ase", "Peru", variant=3)
    b = fingerspelling.clip_frames("ase", "Peru", variant=3)
    c = fingerspelling.clip_frames("ase", "Peru", variant=4)
    np.testing.assert_array_equal(a, b)
    assert a.shape[1] == 255 and not np.array_equal(a[: min(len(a), len(c))], c[: min(len(a), len(c))])
    long = fingerspelling.clip_frames("ase", "Bulgarian", variant=3)
    assert long.shape[0] > 1.5 * a.shape[0]
    xyz = a.reshape(-1, 85, 3)
    real = xyz[xyz[..., 0] != -10.0]
    assert real[:, :2].min() >= -0.05 and real[:, :2].max() <= 1.05
    # ASL letters are right-handed in the lexicon: the left hand is always missing.
    assert (xyz[:, 43:64] == -10.0).all()


def test_composition_concatenates_letters_with_transitions():
    lexicon = fingerspelling.load_lexicon("ase")
    no_noise = fingerspelling.AugmentConfig(speed_range=(1.0, 1.0), transition_frames=(3, 3),
                                            jitter=0.0, max_roll_degrees=0.0, frame_drop=0.0)
    points, present = fingerspelling.compose_clip(lexicon, ["a", "b"], np.random.default_rng(0),
                                                  no_noise)
    a, b = lexicon.letters["a"][0], lexicon.letters["b"][0]
    n_a = round(a.points.shape[0] * fingerspelling.BASE_FPS / a.fps)
    n_b = round(b.points.shape[0] * fingerspelling.BASE_FPS / b.fps)
    assert points.shape[0] == n_a + 3 + n_b
    np.testing.assert_allclose(points[0], a.points[0], atol=1e-5)
    np.testing.assert_allclose(points[-1], b.points[-1], atol=1e-5)
    # The transition moves linearly from the end of A to the start of B.
    mid = points[n_a + 1][present[n_a + 1]]
    expected = (0.5 * (a.points[-1] + b.points[0]))[present[n_a + 1]]
    np.testing.assert_allclose(mid, expected, atol=1e-4)


def test_unknown_lexicon_error():
    with pytest.raises(ValueError, match="no fingerspelling lexicon for sign language 'xyz'"):
        fingerspelling.load_lexicon("xyz")
