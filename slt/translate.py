r"""Translate landmark files with a trained checkpoint and print the text.

  python -m slt.translate --checkpoint runs/demo clip.pose clip.npy video.mp4

Each FILE (.pose, .npy, .npz, or a video through the video extra) is read with
`slt.io.readers.read_holistic` and preprocessed exactly as in training, with the
landmark config saved in the checkpoint's metadata; the prompt is
`<slt> <source_lang> <target_lang>`. A file that cannot be read or preprocessed gets
one error line on stderr and the others go on; the exit status is then 1.
Output: one line per file, `FILE<TAB>TRANSLATION`. `--html_report PATH` also writes
an offline page with each file's translation, the clip the model was given and the
file's own landmarks, animated (`slt.evaluation.html_report`).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

from slt import gin_utils

gin_utils.quiet_tensorflow()
gin_utils.add_cpu_xla_flags(decoding=True)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from slt.data import (
    features,  # noqa: E402
    landmarks,  # noqa: E402
)
from slt.evaluation import (
    html_report,  # noqa: E402
    predict,  # noqa: E402
    trained_model,  # noqa: E402
)
from slt.io import readers  # noqa: E402
from slt.tasks import languages  # noqa: E402

_TASK_LANGUAGES = re.compile(r"_([a-z]{3})_([a-z]{2,3}(?:-[A-Za-z]+)?)$")


def default_languages(mixture_or_task_name: str) -> tuple[str | None, str | None]:
    """(sign, spoken) of a checkpoint trained on one `..._<sign>_<spoken>` task."""
    match = _TASK_LANGUAGES.search(mixture_or_task_name)
    return (match.group(1), match.group(2)) if match else (None, None)


def preprocess(path: str, config: landmarks.LandmarkConfig) -> np.ndarray:
    """float32 [T, 255] model frames of one file, as the training tasks make them."""
    pose = readers.read_holistic(path)
    readers.check_holistic(pose)
    points, present = pose.youtube_asl()
    return landmarks.to_frames(points, present, config, fps=pose.fps or None, source=path)


def make_example(
    path: str, frames: np.ndarray, prompt: str, task_feature_lengths: dict[str, int]
) -> dict[str, Any]:
    """A task-level example (what a seqio task yields after trimming)."""
    vocabulary = features.byte_vocabulary()
    tokens = list(vocabulary.encode(prompt))[: task_feature_lengths[features.INPUTS] - 1]
    return {
        "id": path,
        "inputs_pretokenized": prompt,
        features.INPUTS: np.asarray(tokens + [vocabulary.eos_id], np.int32),
        features.LANDMARKS: frames[: task_feature_lengths[features.LANDMARKS]],
        features.TARGETS: np.zeros([0], np.int32),
    }


ELEMENT_SPEC = {
    "id": tf.TensorSpec([], tf.string),
    "inputs_pretokenized": tf.TensorSpec([], tf.string),
    features.INPUTS: tf.TensorSpec([None], tf.int32),
    features.LANDMARKS: tf.TensorSpec([None, landmarks.FRAME_DIM], tf.float32),
    features.TARGETS: tf.TensorSpec([None], tf.int32),
}


def translate_files(
    restored: trained_model.TrainedModel,
    paths: Sequence[str],
    prompt: str,
    batch_size: int = 0,
    decode_options: dict | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """({path: translation}, {path: error message}), in the order given."""
    config = restored.landmark_config
    lengths = restored.task_feature_lengths
    examples, errors = [], {}
    for path in paths:
        try:
            frames = preprocess(path, config)
        except Exception as e:  # noqa: BLE001  (reported per file; the others go on)
            errors[path] = f"{type(e).__name__}: {e}"
            continue
        if len(frames) == 0:
            errors[path] = "no frames left after preprocessing."
            continue
        if len(frames) > lengths[features.LANDMARKS]:
            print(
                f"{path}: warning: {len(frames)} frames after preprocessing, the model "
                f"reads the first {lengths[features.LANDMARKS]} (task_feature_lengths).",
                file=sys.stderr,
            )
        examples.append(make_example(path, frames, prompt, lengths))
    translations = {}
    if examples:
        num_shards = restored.batch_sharding.mesh.size
        batch_size = batch_size or num_shards * max(1, -(-len(examples) // num_shards))
        predictor = restored.predictor(batch_size, decode_options=decode_options)
        vocabulary = features.byte_vocabulary()
        with jax.set_mesh(restored.mesh):
            results = predict.predict_examples(predictor, examples, ELEMENT_SPEC, vocabulary)
        translations = {r["id"]: r["prediction"] for r in results}
    return translations, errors


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slt.translate",
        description=__doc__,
        formatter_class=gin_utils.HelpFormatter,
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="MODEL_DIR of slt.train, its checkpoints/ or one step in it",
    )
    parser.add_argument(
        "--source_lang", help="sign language code (default: the checkpoint's task's, e.g. ase)"
    )
    parser.add_argument(
        "--target_lang", help="spoken language code (default: the checkpoint's task's, e.g. en)"
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=0,
        help="files decoded together (default: all, rounded to devices)",
    )
    parser.add_argument(
        "--html_report",
        metavar="PATH",
        help="also write an HTML page (e.g. report.html) showing each file's clips and text",
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = gin_utils.parse_args(parser, argv)

    restored = trained_model.load_trained_model(args.checkpoint)
    sign, spoken = default_languages(restored.mixture_or_task_name)
    source, target = args.source_lang or sign, args.target_lang or spoken
    if not source or not target:
        parser.error(
            f"the checkpoint was trained on {restored.mixture_or_task_name}, which "
            "names no single language pair: give --source_lang and --target_lang."
        )
    try:
        prompt = languages.prompt("slt", source, target)
    except ValueError as e:
        parser.error(str(e))
    translations, errors = translate_files(restored, args.files, prompt, args.batch_size)
    for path in args.files:
        if path in translations:
            print(f"{path}\t{translations[path]}", flush=True)
        else:
            print(f"{path}: error: {errors[path]}", file=sys.stderr, flush=True)
    if args.html_report:
        write_report(args.html_report, restored, translations, prompt)
        print(f"report: {args.html_report} (open it in a browser; it works offline)")
    return 1 if errors else 0


def write_report(
    path: str, restored: trained_model.TrainedModel, translations: dict[str, str], prompt: str
) -> None:
    """The HTML page of translated files: the model's frames and the file's own 85
    points (both read again from the file)."""
    config = restored.landmark_config
    items = []
    for source, translation in translations.items():
        pose = readers.read_holistic(source)
        points, present = pose.youtube_asl()
        items.append(
            {
                "id": source,
                "prompt": prompt,
                "prediction": translation,
                "frames": preprocess(source, config)[
                    : restored.task_feature_lengths[features.LANDMARKS]
                ],
                "source_points": points,
                "source_present": present,
                "source_fps": pose.fps,
            }
        )
    html_report.write_translation_report(path, items, config, title=f"translations by {restored}")


if __name__ == "__main__":
    gin_utils.run_job(main)
