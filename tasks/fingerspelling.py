"""The embedded corpus: fingerspelled words composed from real letter recordings.

`spoken-to-signed` ships real MediaPipe Holistic recordings of single fingerspelled
letters for 19 sign languages. We spell real words of each sign language's spoken
language letter by letter: each letter recording is resampled (a random signing
speed), consecutive letters are joined by short interpolated transitions, and the
clip gets small plausible perturbations (landmark jitter, a slight camera roll,
dropped frames). The words are CLDR display names shipped by `babel` (territories,
languages, scripts, currencies, months, weekdays), kept only when every letter is in
that sign language's lexicon.

The clips are composed, not recorded: each letter is real signing, the sequence is
not a real signer spelling the word. Everything is deterministic for a seed, and
the train / validation / test split is by word (no word is in two splits).
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import hashlib
import importlib.util
import logging
import os
from collections.abc import Sequence

import babel
import numpy as np

from slt import landmarks
from slt.io import pose_files

SPLITS = ("train", "validation", "test")
# Letters are resampled to this rate before composition; the landmark pipeline
# then drops every second frame as it would for a 25 fps video.
BASE_FPS = 25.0


@dataclasses.dataclass(frozen=True)
class Letter:
    text: str
    points: np.ndarray   # [T, 85, 3], raw coordinates of the recording
    present: np.ndarray  # [T, 85]
    fps: float
    source: str


@dataclasses.dataclass(frozen=True)
class Lexicon:
    sign_language: str
    spoken_language: str
    letters: dict[str, list[Letter]]  # casefolded letter text -> recordings

    def spell(self, word: str) -> list[str] | None:
        """Splits a word into lexicon entries, longest match first (SCH, ll, ...).

        Returns None when some letter of the word has no recording.
        """
        keys = sorted(self.letters, key=len, reverse=True)
        text, out = word.casefold(), []
        while text:
            for key in keys:
                if text.startswith(key):
                    out.append(key)
                    text = text[len(key):]
                    break
            else:
                return None
        return out


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Perturbations that keep the composed motion plausible."""

    speed_range: tuple[float, float] = (0.8, 1.25)    # per letter
    transition_frames: tuple[int, int] = (2, 5)       # at BASE_FPS, inclusive
    jitter: float = 0.003        # std of landmark noise, as a share of the clip extent
    max_roll_degrees: float = 5.0  # camera roll around the clip centre
    frame_drop: float = 0.05     # probability of dropping each frame


@dataclasses.dataclass
class CorpusReport:
    """What happened to every candidate word of one sign language."""

    sign_language: str
    spoken_language: str
    candidates: int = 0
    kept: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        kept = ", ".join(f"{split} {n}" for split, n in self.kept.items())
        return (f"{self.sign_language} ({self.spoken_language}): {self.candidates} CLDR words; "
                f"kept {kept}; skipped {skipped or 'none'}")


def lexicon_dir() -> str:
    spec = importlib.util.find_spec("spoken_to_signed")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded corpus needs the `spoken-to-signed` package (its wheel ships "
            "the letter recordings): pip install spoken-to-signed==0.4.0")
    return os.path.join(spec.submodule_search_locations[0], "assets", "fingerspelling_lexicon")


@functools.lru_cache(maxsize=None)
def _index() -> tuple[tuple[str, str, str, str], ...]:
    """(path, spoken language, sign language, letter) rows of real recordings.

    A row is used only if its file exists and lies in its own sign language's
    folder: the package's index also lists `fsl` letters that point at the `ase`
    recordings, which would be a duplicate, not a lexicon. Skipped rows are logged.
    """
    root = lexicon_dir()
    rows, skipped = [], collections.Counter()
    with open(os.path.join(root, "index.csv"), encoding="utf-8") as f:
        for row in csv.DictReader(f):
            path = os.path.join(root, row["path"])
            sign = row["signed_language"]
            if not os.path.exists(path):
                skipped[f"{sign}: file missing"] += 1
            elif row["path"].split("/")[0] != sign:
                skipped[f"{sign}: recording of another sign language"] += 1
            else:
                rows.append((path, row["spoken_language"], sign, row["words"]))
    for why, n in sorted(skipped.items()):
        logging.info("fingerspelling lexicon: skipped %d index rows (%s)", n, why)
    return tuple(rows)


def sign_languages() -> dict[str, str]:
    """Sign language -> spoken language, for every lexicon with recordings."""
    return {sign: spoken for _, spoken, sign, _ in _index()}


@functools.lru_cache(maxsize=None)
def load_lexicon(sign_language: str) -> Lexicon:
    """Reads a sign language's letter recordings as 85-point landmarks."""
    letters: dict[str, list[Letter]] = collections.defaultdict(list)
    spoken = None
    for path, spoken_language, sign, text in _index():
        if sign != sign_language:
            continue
        spoken = spoken_language
        pose = pose_files.read_pose(path)
        points, present = pose.youtube_asl()
        letters[text.casefold()].append(
            Letter(text=text, points=points, present=present, fps=pose.fps, source=path))
    if spoken is None:
        raise ValueError(
            f"no fingerspelling lexicon for sign language {sign_language!r}; "
            f"available: {', '.join(sorted(sign_languages()))}.")
    return Lexicon(sign_language, spoken, dict(letters))


def cldr_words(spoken_language: str) -> list[str]:
    """Single-word CLDR display names in the spoken language, sorted, deduplicated."""
    locale = babel.Locale.parse(spoken_language)
    names: list[str] = []
    for table in (locale.territories, locale.languages, locale.scripts, locale.currencies):
        names.extend(table.values())
    for context in ("format", "stand-alone"):
        names.extend(locale.months[context]["wide"].values())
        names.extend(locale.days[context]["wide"].values())
    words = {w for name in names for w in name.split()}
    return sorted(words)


def _split_of(word: str, sign_language: str, seed: int,
              fractions: tuple[float, float] = (0.8, 0.1)) -> str:
    digest = hashlib.sha256(f"{seed}:{sign_language}:{word}".encode()).digest()
    u = int.from_bytes(digest[:8], "little") / 2.0**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "validation"
    return "test"


@functools.lru_cache(maxsize=None)
def word_splits(sign_language: str, seed: int = 0, min_letters: int = 2,
                max_letters: int = 10) -> tuple[dict[str, tuple[str, ...]], CorpusReport]:
    """The words of each split, and a report counting every word left out.

    A word is left out when it is not purely alphabetic, is an acronym or mixed-case
    code (more than one capital: "ADB", "AfEB"), has a letter without a recording,
    has too few or too many letters, or repeats a kept word up to case.
    """
    lexicon = load_lexicon(sign_language)
    report = CorpusReport(sign_language, lexicon.spoken_language)
    seen, splits = set(), {s: [] for s in SPLITS}
    for word in cldr_words(lexicon.spoken_language):
        report.candidates += 1
        if not word.isalpha():
            report.skipped["not alphabetic"] += 1
            continue
        if sum(ch.isupper() for ch in word) > 1:
            report.skipped["acronym or mixed case"] += 1
            continue
        spelled = lexicon.spell(word)
        if spelled is None:
            report.skipped["letter not in lexicon"] += 1
            continue
        if not min_letters <= len(spelled) <= max_letters:
            report.skipped[f"not {min_letters}-{max_letters} letters"] += 1
            continue
        if word.casefold() in seen:
            report.skipped["duplicate up to case"] += 1
            continue
        seen.add(word.casefold())
        splits[_split_of(word.casefold(), sign_language, seed)].append(word)
    report.kept = {s: len(w) for s, w in splits.items()}
    logging.info("fingerspelling corpus: %s", report.summary())
    return {s: tuple(w) for s, w in splits.items()}, report


def _resample(points: np.ndarray, present: np.ndarray, num_frames: int):
    """Linear interpolation in time; a point is present if both neighbours are."""
    src = np.linspace(0.0, points.shape[0] - 1, num_frames)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, points.shape[0] - 1)
    w = (src - lo)[:, None, None].astype(np.float32)
    return (1 - w) * points[lo] + w * points[hi], present[lo] & present[hi]


def _transition(a_points, a_present, b_points, b_present, num_frames: int):
    """Frames moving linearly from the last frame of one letter to the next's first."""
    w = (np.arange(1, num_frames + 1) / (num_frames + 1))[:, None, None].astype(np.float32)
    points = (1 - w) * a_points[-1][None] + w * b_points[0][None]
    present = np.broadcast_to(a_present[-1] & b_present[0], (num_frames,) + a_present.shape[1:])
    return points, present


def compose_clip(lexicon: Lexicon, spelled: Sequence[str], rng: np.random.Generator,
                 augment: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Joins letter recordings into one clip at BASE_FPS: ([T, 85, 3], [T, 85])."""
    pieces_points, pieces_present = [], []
    for i, key in enumerate(spelled):
        recordings = lexicon.letters[key]
        letter = recordings[rng.integers(len(recordings))]
        speed = rng.uniform(*augment.speed_range)
        n = max(2, int(round(letter.points.shape[0] * BASE_FPS / letter.fps / speed)))
        points, present = _resample(letter.points, letter.present, n)
        if i:
            k = int(rng.integers(augment.transition_frames[0], augment.transition_frames[1] + 1))
            t_points, t_present = _transition(
                pieces_points[-1], pieces_present[-1], points, present, k)
            pieces_points.append(t_points)
            pieces_present.append(t_present)
        pieces_points.append(points)
        pieces_present.append(present)
    points = np.concatenate(pieces_points).astype(np.float32)
    present = np.concatenate(pieces_present)

    low, high = landmarks.bounds(points, present)
    if low is not None:
        centre = (low + high) / 2
        extent = float((high - low)[:2].max())
        angle = np.deg2rad(rng.uniform(-augment.max_roll_degrees, augment.max_roll_degrees))
        c, s = np.cos(angle), np.sin(angle)
        xy = points[..., :2] - centre[:2]
        points[..., 0] = c * xy[..., 0] - s * xy[..., 1] + centre[0]
        points[..., 1] = s * xy[..., 0] + c * xy[..., 1] + centre[1]
        points += (augment.jitter * extent) * rng.standard_normal(points.shape, dtype=np.float32)
    keep = rng.random(points.shape[0]) >= augment.frame_drop
    keep[[0, -1]] = True
    return points[keep], present[keep]


def _variant_rng(sign_language: str, word: str, variant: int, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{sign_language}:{word}:{variant}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def clip_frames(sign_language: str, word: str, variant: int, seed: int = 0,
                config: landmarks.LandmarkConfig = landmarks.LandmarkConfig(),
                augment: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Model frames [T, 255] of one composed clip; the same inputs give the same clip."""
    lexicon = load_lexicon(sign_language)
    spelled = lexicon.spell(word)
    if spelled is None:
        raise ValueError(f"{word!r} cannot be spelled with the {sign_language} lexicon.")
    rng = _variant_rng(sign_language, word, variant, seed)
    points, present = compose_clip(lexicon, spelled, rng, augment)
    return landmarks.to_frames(points, present, config)
