import hashlib

import numpy as np
import pytest

from slt.data import landmarks
from slt.tasks.fingerspelling import corpus as fingerspelling
from slt.tasks.fingerspelling import tasks as fingerspelling_tasks


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
    assert a.shape[1] == 255 and not np.array_equal(
        a[: min(len(a), len(c))], c[: min(len(a), len(c))]
    )
    long = fingerspelling.clip_frames("ase", "Bulgarian", variant=3)
    assert long.shape[0] > 1.5 * a.shape[0]
    xyz = a.reshape(-1, 85, 3)
    real = xyz[xyz[..., 0] != -10.0]
    assert real[:, :2].min() >= -0.05 and real[:, :2].max() <= 1.05
    # ASL letters are right-handed in the lexicon: the left hand is always missing.
    assert (xyz[:, 43:64] == -10.0).all()


def test_composition_concatenates_letters_with_transitions():
    lexicon = fingerspelling.load_lexicon("ase")
    no_noise = fingerspelling.AugmentConfig(
        speed_range=(1.0, 1.0),
        transition_frames=(3, 3),
        jitter=0.0,
        max_roll_degrees=0.0,
        frame_drop=0.0,
    )
    points, present = fingerspelling.compose_clip(
        lexicon, ["a", "b"], np.random.default_rng(0), no_noise
    )
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


def _compose_letter_by_letter(lexicon, spelled, rng, augment=fingerspelling.AugmentConfig()):
    """The straightforward composition: resample each letter, join with transitions."""

    def resample(points, present, n):
        src = np.linspace(0.0, points.shape[0] - 1, n)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, points.shape[0] - 1)
        w = (src - lo)[:, None, None].astype(np.float32)
        return (1 - w) * points[lo] + w * points[hi], present[lo] & present[hi]

    pieces, masks = [], []
    for i, key in enumerate(spelled):
        recordings = lexicon.letters[key]
        letter = recordings[rng.integers(len(recordings))]
        speed = rng.uniform(*augment.speed_range)
        n = max(
            2, int(round(letter.points.shape[0] * fingerspelling.BASE_FPS / letter.fps / speed))
        )
        points, present = resample(letter.points, letter.present, n)
        if i:
            k = int(rng.integers(augment.transition_frames[0], augment.transition_frames[1] + 1))
            w = (np.arange(1, k + 1) / (k + 1))[:, None, None].astype(np.float32)
            pieces.append((1 - w) * pieces[-1][-1][None] + w * points[0][None])
            masks.append(np.broadcast_to(masks[-1][-1] & present[0], (k,) + present.shape[1:]))
        pieces.append(points)
        masks.append(present)
    points, present = np.concatenate(pieces).astype(np.float32), np.concatenate(masks)
    low, high = landmarks.bounds(points, present)
    centre, extent = (low + high) / 2, float((high - low)[:2].max())
    angle = np.deg2rad(rng.uniform(-augment.max_roll_degrees, augment.max_roll_degrees))
    c, s = np.cos(angle), np.sin(angle)
    xy = points[..., :2] - centre[:2]
    points[..., 0] = c * xy[..., 0] - s * xy[..., 1] + centre[0]
    points[..., 1] = s * xy[..., 0] + c * xy[..., 1] + centre[1]
    points += (augment.jitter * extent) * rng.standard_normal(points.shape, dtype=np.float32)
    keep = rng.random(points.shape[0]) >= augment.frame_drop
    keep[[0, -1]] = True
    return points[keep], present[keep]


@pytest.mark.parametrize("sign_language", ["ase", "sgg"])  # sgg: multi-letter entries (sch)
def test_fast_composition_equals_letter_by_letter_bit_for_bit(sign_language):
    """compose_clip and to_frames are vectorised for the input pipeline's speed; the
    clips must stay exactly those of the straightforward computation."""
    lexicon = fingerspelling.load_lexicon(sign_language)
    words = fingerspelling.word_splits(sign_language)[0]["train"][::40]
    config = landmarks.LandmarkConfig(
        feature_mean=tuple(np.linspace(0.2, 0.8, 255)),
        feature_std=tuple(np.linspace(0.05, 0.3, 255)),
    )
    for word in words:
        for variant in (0, 7):
            fast = fingerspelling.compose_clip(
                lexicon,
                lexicon.spell(word),
                fingerspelling._variant_rng(sign_language, word, variant, 0),
            )
            slow = _compose_letter_by_letter(
                lexicon,
                lexicon.spell(word),
                fingerspelling._variant_rng(sign_language, word, variant, 0),
            )
            np.testing.assert_array_equal(fast[0], slow[0])
            np.testing.assert_array_equal(fast[1], slow[1])
            # to_frames selects frames before normalising; the peer normalises first.
            points, present = slow
            expected = landmarks.normalize_unit_box(points, present)[::2][:256].reshape(-1, 255)
            expected = (expected - np.asarray(config.feature_mean, np.float32)) / np.asarray(
                config.feature_std, np.float32
            )
            expected = np.where(
                np.repeat(present[::2][:256], 3, axis=1), expected, np.float32(-10.0)
            )
            frames = landmarks.to_frames(points, present, config)
            assert frames.dtype == np.float32
            np.testing.assert_array_equal(frames, expected)


def _example_digest(example: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(example):
        value = np.asarray(example[key])
        digest.update(f"{key}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]


# (task, split, shuffle, seed, (num_shards, index)) -> (id, digest) of its first examples,
# recorded from the composed corpus; any change to composition, order or features shows.
EXAMPLE_DIGESTS = {
    ("fingerspelling_slt_ase_en", "test", False, None, None): [
        ("ase/Adyghe/1000000", "9bee088434a033c4"),
        ("ase/Afghani/1000000", "6103ca3fc35a79d6"),
        ("ase/Aghem/1000000", "190e6b4b32e0481e"),
        ("ase/Algerian/1000000", "76af845ffe2f4143"),
    ],
    ("fingerspelling_slt_sgg_de", "train", False, None, (3, 1)): [
        ("sgg/Aceh/0", "683899719401a121"),
        ("sgg/Adlam/0", "3a5635a28284f723"),
        ("sgg/Afar/0", "1d4210dfd8d0481b"),
        ("sgg/Afghanischer/0", "1c43d2c3ad556877"),
    ],
    ("fingerspelling_word_slt_ase_en", "train", True, 5, None): [
        ("ase/Drawing/21", "84fd9663a4cff157"),
        ("ase/Cayuga/2", "390dd41622a5209e"),
        ("ase/Emirates/47", "edd961a070a26a85"),
        ("ase/Funds/50", "4628139b330bbefb"),
    ],
    ("fingerspelling_word_slt_gss_el", "validation", False, None, (2, 0)): [
        ("gss/Γιεν/1000000", "fb25171324c2134f"),
        ("gss/Μους/1000000", "26335c74de841b74"),
        ("gss/Χμονγκ/1000000", "cbf470603a7c1fe0"),
    ],
    ("fingerspelling_aug_slt_ase_de", "train", True, 2, (2, 1)): [
        ("ase/Multani/12", "305cd5791ac58ceb"),
        ("ase/Konkani/2", "76e65143538f5e01"),
        ("ase/Luo/41", "09d7509baab8d39d"),
        ("ase/German/58", "3deea0727a403350"),
    ],
}


@pytest.mark.parametrize("case", list(EXAMPLE_DIGESTS), ids=lambda case: f"{case[0]}-{case[1]}")
def test_word_clip_task_examples_are_unchanged(case):
    """The word-clip tasks (fingerspelling_slt_*, fingerspelling_word_slt_*, the augmented
    SLT tasks) yield exactly the recorded examples: frames, tokens, ids and order."""
    import seqio

    from slt import tasks  # noqa: F401  (registers)

    name, split, shuffle, seed, shard = case
    shard_info = seqio.ShardInfo(index=shard[1], num_shards=shard[0]) if shard else None
    ds = seqio.get_mixture_or_task(name).get_dataset(
        {"landmarks": 256, "inputs": 32, "targets": 32},
        split=split,
        shuffle=shuffle,
        seed=seed,
        shard_info=shard_info,
        num_epochs=1,
    )
    examples = list(ds.take(4).as_numpy_iterator())
    got = [(ex["id"].decode(), _example_digest(ex)) for ex in examples]
    assert got == EXAMPLE_DIGESTS[case]
