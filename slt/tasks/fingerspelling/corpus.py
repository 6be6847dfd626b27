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

from slt.data import landmarks
from slt.io import pose_files

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
# Letters are resampled to this rate before composition; the landmark pipeline
# then drops every second frame as it would for a 25 fps video.
BASE_FPS = 25.0


@dataclasses.dataclass(frozen=True)
class Letter:
    text: str
    points: np.ndarray  # [T, 85, 3], raw coordinates of the recording
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
        keys = self._keys_longest_first
        text, out = word.casefold(), []
        while text:
            for key in keys:
                if text.startswith(key):
                    out.append(key)
                    text = text[len(key) :]
                    break
            else:
                return None
        return out

    @functools.cached_property
    def _keys_longest_first(self) -> tuple[str, ...]:
        return tuple(sorted(self.letters, key=len, reverse=True))

    @functools.cached_property
    def stacked(self) -> _StackedLexicon:
        """All recordings in one array (built on first use), for `compose_clip`."""
        return _stack(self)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Perturbations that keep the composed motion plausible."""

    speed_range: tuple[float, float] = (0.8, 1.25)  # per letter
    transition_frames: tuple[int, int] = (2, 5)  # at BASE_FPS, inclusive
    jitter: float = 0.003  # std of landmark noise, as a share of the clip extent
    max_roll_degrees: float = 5.0  # camera roll around the clip centre
    frame_drop: float = 0.05  # probability of dropping each frame


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
        return (
            f"{self.sign_language} ({self.spoken_language}): {self.candidates} CLDR words; "
            f"kept {kept}; skipped {skipped or 'none'}"
        )


def lexicon_dir() -> str:
    spec = importlib.util.find_spec("spoken_to_signed")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded corpus needs the `spoken-to-signed` package (its wheel ships "
            "the letter recordings): pip install spoken-to-signed==0.4.0"
        )
    # local: files of an installed package
    return os.path.join(spec.submodule_search_locations[0], "assets", "fingerspelling_lexicon")


@functools.cache
def _index() -> tuple[tuple[str, str, str, str], ...]:
    """(path, spoken language, sign language, letter) rows of real recordings.

    A row is used only if its file exists and lies in its own sign language's
    folder: the package's index also lists `fsl` letters that point at the `ase`
    recordings, which would be a duplicate, not a lexicon. Skipped rows are logged.
    """
    root = lexicon_dir()
    rows, skipped = [], collections.Counter()
    # local: the index and recordings are files of an installed package (lexicon_dir)
    with open(os.path.join(root, "index.csv"), encoding="utf-8") as f:
        for row in csv.DictReader(f):
            path = os.path.join(root, row["path"])  # local: as above
            sign = row["signed_language"]
            if not os.path.exists(path):  # local: as above
                skipped[f"{sign}: file missing"] += 1
            elif row["path"].split("/")[0] != sign:
                skipped[f"{sign}: recording of another sign language"] += 1
            else:
                rows.append((path, row["spoken_language"], sign, row["words"]))
    for why, n in sorted(skipped.items()):
        log.info("fingerspelling lexicon: skipped %d index rows (%s)", n, why)
    return tuple(rows)


def sign_languages() -> dict[str, str]:
    """Sign language -> spoken language, for every lexicon with recordings."""
    return {sign: spoken for _, spoken, sign, _ in _index()}


@functools.cache
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
            Letter(text=text, points=points, present=present, fps=pose.fps, source=path)
        )
    if spoken is None:
        raise ValueError(
            f"no fingerspelling lexicon for sign language {sign_language!r}; "
            f"available: {', '.join(sorted(sign_languages()))}."
        )
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


def _split_of(
    word: str, sign_language: str, seed: int, fractions: tuple[float, float] = (0.8, 0.1)
) -> str:
    digest = hashlib.sha256(f"{seed}:{sign_language}:{word}".encode()).digest()
    u = int.from_bytes(digest[:8], "little") / 2.0**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "validation"
    return "test"


@functools.cache
def word_splits(
    sign_language: str, seed: int = 0, min_letters: int = 2, max_letters: int = 10
) -> tuple[dict[str, tuple[str, ...]], CorpusReport]:
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
    log.info("fingerspelling corpus: %s", report.summary())
    return {s: tuple(w) for s, w in splits.items()}, report


@functools.lru_cache(maxsize=4096)
def _resample_table(length: int, num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, float32 weight) of each output frame of a `length` -> `num_frames`
    resampling; cached, since lengths and frame counts take few values."""
    src = np.linspace(0.0, length - 1, num_frames)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, length - 1)
    w = (src - lo).astype(np.float32)
    for a in (lo, hi, w):
        a.setflags(write=False)
    return lo, hi, w


@functools.lru_cache(maxsize=64)
def _transition_weights(num_frames: int) -> np.ndarray:
    w = (np.arange(1, num_frames + 1) / (num_frames + 1)).astype(np.float32)
    w.setflags(write=False)
    return w


@dataclasses.dataclass(frozen=True)
class _StackedLexicon:
    """A lexicon's recordings in one array, so a clip is composed with one gather."""

    points: np.ndarray  # [F, 85, 3] all recordings, one after another
    present: np.ndarray  # [F, 85]
    # letter -> (first row in `points`, frames, fps) of each recording, in lexicon order
    recordings: dict[str, tuple[tuple[int, int, float], ...]]


def _stack(lexicon: Lexicon) -> _StackedLexicon:
    points, present, recordings, row = [], [], {}, 0
    for key, letters in lexicon.letters.items():
        entries = []
        for letter in letters:
            entries.append((row, letter.points.shape[0], letter.fps))
            points.append(letter.points)
            present.append(letter.present)
            row += letter.points.shape[0]
        recordings[key] = tuple(entries)
    # C order, so that [F, 255] rows are views (concatenate keeps the recordings' order).
    return _StackedLexicon(
        np.ascontiguousarray(np.concatenate(points)),
        np.ascontiguousarray(np.concatenate(present)),
        recordings,
    )


def compose_clip(
    lexicon: Lexicon,
    spelled: Sequence[str],
    rng: np.random.Generator,
    augment: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Joins letter recordings into one clip at BASE_FPS: ([T, 85, 3], [T, 85]).

    Every frame is a linear interpolation (1 - w) * A + w * B: letter frames between
    two frames of their recording, transition frames between the last frame of one
    letter and the first of the next. All of them are computed at once (the draws
    from `rng`, and so the clip, are the same as letter-by-letter composition).
    """
    stacked = lexicon.stacked
    first_t, last_t = augment.transition_frames
    # Per output piece (letters and transitions in clip order): source rows and weights.
    lo_parts, hi_parts, w_parts = [], [], []
    transitions = []  # (first output row, frames) of each transition
    row = 0
    for i, key in enumerate(spelled):
        recordings = stacked.recordings[key]
        start, length, fps = recordings[rng.integers(len(recordings))]
        speed = rng.uniform(*augment.speed_range)
        n = max(2, int(round(length * BASE_FPS / fps / speed)))
        if i:
            k = int(rng.integers(first_t, last_t + 1))
            transitions.append((row, k))
            # Placeholders (weight 0 of row 0): overwritten below from letter frames.
            lo_parts.append(np.zeros(k, np.int64))
            hi_parts.append(np.zeros(k, np.int64))
            w_parts.append(np.zeros(k, np.float32))
            row += k
        lo, hi, w = _resample_table(length, n)
        lo_parts.append(lo + start)
        hi_parts.append(hi + start)
        w_parts.append(w)
        row += n
    lo, hi = np.concatenate(lo_parts), np.concatenate(hi_parts)
    # Frames as [T, 255] rows: numpy's loops run fast along 255 values, slowly along 3.
    flat = stacked.points.reshape(stacked.points.shape[0], -1)
    w = np.concatenate(w_parts)[:, None]
    points = (1 - w) * flat[lo] + w * flat[hi]
    present = stacked.present[lo] & stacked.present[hi]
    if transitions:
        t_rows = np.concatenate([np.arange(r, r + k) for r, k in transitions])
        counts = [k for _, k in transitions]
        ends = np.repeat([r - 1 for r, _ in transitions], counts)
        starts = np.repeat([r + k for r, k in transitions], counts)
        t_w = np.concatenate([_transition_weights(k) for k in counts])[:, None]
        points[t_rows] = (1 - t_w) * points[ends] + t_w * points[starts]
        present[t_rows] = present[ends] & present[starts]
    points = points.astype(np.float32, copy=False).reshape(-1, *stacked.points.shape[1:])

    low, high = landmarks.bounds(points, present)
    if low is not None:
        centre = (low + high) / 2
        extent = float((high - low)[:2].max())
        angle = np.deg2rad(rng.uniform(-augment.max_roll_degrees, augment.max_roll_degrees))
        c, s = np.cos(angle), np.sin(angle)
        # A roll around the centre, computed in float64 (c, s are float64) and stored
        # as float32; x and y are taken as contiguous [T, 85] arrays for speed.
        x = points[..., 0] - centre[0]
        y = points[..., 1] - centre[1]
        points[..., 0] = c * x - s * y + centre[0]
        points[..., 1] = s * x + c * y + centre[1]
        points += (augment.jitter * extent) * rng.standard_normal(points.shape, dtype=np.float32)
    keep = rng.random(points.shape[0]) >= augment.frame_drop
    keep[[0, -1]] = True
    return points[keep], present[keep]


def _variant_rng(sign_language: str, word: str, variant: int, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{sign_language}:{word}:{variant}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def clip_frames(
    sign_language: str,
    word: str,
    variant: int,
    seed: int = 0,
    config: landmarks.LandmarkConfig = landmarks.LandmarkConfig(),
    augment: AugmentConfig = AugmentConfig(),
) -> np.ndarray:
    """Model frames [T, 255] of one composed clip; the same inputs give the same clip."""
    lexicon = load_lexicon(sign_language)
    spelled = lexicon.spell(word)
    if spelled is None:
        raise ValueError(f"{word!r} cannot be spelled with the {sign_language} lexicon.")
    rng = _variant_rng(sign_language, word, variant, seed)
    points, present = compose_clip(lexicon, spelled, rng, augment)
    return landmarks.to_frames(points, present, config)
