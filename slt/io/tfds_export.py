"""sign-language-datasets (TFDS) examples -> .npz files + a `slt.prepare` manifest.

The TFDS builders (rwth_phoenix2014_t, dgs_corpus, wmt_slt, ...) yield a `pose`
feature `{data [T,1,N,D], conf [T,1,N], fps}` next to text fields. This writes each
example's pose as an .npz (`arrays.read_npz` reads it unchanged) and one manifest row
with its caption, so the whole dataset goes through `python -m slt.prepare` and its
report like any other input. Examples without a pose or a text field are counted and
written to the manifest anyway (with an empty path or caption) so that prepare
reports them: nothing is dropped here.

  python -m slt.io.tfds_export --tfds_name=rwth_phoenix2014_t/poses --split=train \\
      --text_key=text --sign_language=gsg --spoken_language=de --output_dir=data/phoenix
  python -m slt.prepare --manifest=data/phoenix/train.jsonl --output_dir=data/phoenix/prepared

Loading a TFDS builder needs `pip install sign-language-datasets` and its download.
`--output_dir` may be local or `gs://` (written through `slt.storage`; the manifest
last, whole, so that a cut-off export leaves no manifest naming missing files).
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterable, Mapping

import numpy as np

from slt import gin_utils, storage


def _field(example: Mapping, key: str):
    """A possibly nested field ("subtitle/text"), or None."""
    value = example
    for part in key.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.item() if value.ndim == 0 else b" ".join(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def export_examples(
    examples: Iterable[Mapping],
    output_dir: str,
    split: str,
    sign_language: str,
    spoken_language: str,
    text_key: str = "text",
    id_key: str = "id",
    pose_key: str = "pose",
) -> tuple[str, int]:
    """Writes <output_dir>/<split>/<n>.npz and <output_dir>/<split>.jsonl.

    Args:
      examples: decoded TFDS examples (`tfds.as_numpy(dataset)`).
      text_key / id_key / pose_key: field names; "/" reaches into nested features.

    Returns:
      (manifest path, number of rows).
    """
    storage.makedirs(storage.join(output_dir, split))
    manifest = storage.join(output_dir, f"{split}.jsonl")
    lines = []
    for n, example in enumerate(examples):
        example_id = _text(_field(example, id_key)) or f"{split}:{n}"
        pose = _field(example, pose_key)
        path = ""
        if isinstance(pose, Mapping) and "data" in pose:
            path = f"{split}/{n:07d}.npz"  # relative to the manifest
            buffer = io.BytesIO()
            np.savez(
                buffer,
                **{k: np.asarray(v) for k, v in pose.items() if k in ("data", "conf", "fps")},
            )
            storage.write_bytes(storage.join(output_dir, path), buffer.getvalue())
        row = {
            "id": example_id,
            "path": path or f"{split}/{n:07d}.missing-pose",
            "text": _text(_field(example, text_key)) or "",
            "sign_language": sign_language,
            "spoken_language": spoken_language,
        }
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    # Texts decoded with surrogate escapes go back out as the bytes they came from.
    storage.write_bytes(manifest, "".join(lines).encode("utf-8", "surrogateescape"))
    return manifest, len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slt.io.tfds_export",
        description=__doc__,
        formatter_class=gin_utils.HelpFormatter,
    )
    parser.add_argument(
        "--tfds_name", required=True, help="builder/config, e.g. rwth_phoenix2014_t/poses"
    )
    parser.add_argument("--split", default="train", help="the TFDS split to export")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory")
    parser.add_argument("--text_key", default="text", help='the caption field ("a/b": nested)')
    parser.add_argument("--id_key", default="id", help="the example id field")
    parser.add_argument("--pose_key", default="pose", help="the pose feature")
    parser.add_argument("--sign_language", required=True, help="code of every row, e.g. gsg")
    parser.add_argument("--spoken_language", required=True, help="code of every row, e.g. de")
    parser.add_argument(
        "--output_dir", required=True, help="gets <split>.jsonl and <split>/<n>.npz"
    )
    args = gin_utils.parse_args(parser, argv)
    try:
        import sign_language_datasets.datasets  # noqa: F401  (registers the builders)
        import tensorflow_datasets as tfds
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"python -m slt.io.tfds_export reads the sign-language-datasets builders, and "
            f"{error.name} is not installed: pip install sign-language-datasets (it brings "
            "tensorflow-datasets), then download the dataset as its builder says."
        ) from error

    dataset = tfds.load(args.tfds_name, split=args.split, data_dir=args.data_dir)
    manifest, rows = export_examples(
        tfds.as_numpy(dataset),
        args.output_dir,
        args.split,
        args.sign_language,
        args.spoken_language,
        args.text_key,
        args.id_key,
        args.pose_key,
    )
    print(f"{manifest}: {rows} rows")
    return 0


if __name__ == "__main__":
    gin_utils.run_job(main, user_errors=(ModuleNotFoundError,))
