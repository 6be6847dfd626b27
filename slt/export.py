r"""Export the text model of a trained checkpoint to Hugging Face or T5X format.

  python -m slt.export --checkpoint runs/demo --format hf --output exports/demo_hf
  python -m slt.export --checkpoint runs/demo --format t5x \
      --output exports/demo_t5x/checkpoint_2000 --dtype bfloat16

`--checkpoint` is a MODEL_DIR of `slt.train`, its `checkpoints/` directory or one step
in it (the latest step is taken otherwise). Hugging Face: `model.safetensors` and a
`config.json` that `transformers.T5ForConditionalGeneration.from_pretrained` loads.
T5X: the legacy msgpack + TensorStore layout that `t5x_params_loader` (and t5x) read.
Both hold the text model only (token embedding, encoder, decoder). Parameters that a
text T5 has no place for (the landmark projection, the CTC head) are left out and
listed; keep the slt checkpoint to translate sign language. `--checkpoint` and
`--output` may be local or `gs://` paths; an output that cannot be written stops the
export before the checkpoint is read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from slt import gin_utils, storage


def export(checkpoint: str, output: str, format: str = "hf", dtype: str = "float32") -> list[str]:
    """Writes the text model of ``checkpoint`` to ``output``; returns the param names
    left out. ``dtype`` applies to T5X zarr arrays ("float32" or "bfloat16")."""
    # Imported here, not at the top: `--help` answers without loading JAX.
    import jax
    import numpy as np

    from slt.evaluation import trained_model
    from slt.models import weights

    if format not in ("hf", "t5x"):
        raise ValueError(f"--format {format!r}: use 'hf' or 't5x'.")
    if storage.listdir(output):
        raise FileExistsError(
            f"--output {output} exists and is not empty; choose a new "
            "directory (an export never overwrites files)."
        )
    storage.check_writable(output, "--output")
    restored = trained_model.load_trained_model(checkpoint)
    params = jax.tree.map(np.asarray, jax.device_get(restored.params))
    if format == "hf":
        return weights.write_hf_checkpoint(params, restored.model.network.config, output)
    flat = weights.flatten(params)
    left_out = sorted(k for k in flat if k.startswith(weights.NEW_PARAMETER_PREFIXES))
    text = weights.unflatten({k: v for k, v in flat.items() if k not in left_out})
    weights.write_t5x_checkpoint(text, output, step=restored.step, dtype=dtype)
    return left_out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m slt.export", description=__doc__, formatter_class=gin_utils.HelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="MODEL_DIR of slt.train, its checkpoints/ dir or a step dir",
    )
    parser.add_argument("--output", required=True, help="new directory to write")
    parser.add_argument(
        "--format", choices=("hf", "t5x"), default="hf", help="Hugging Face or T5X layout"
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="array dtype of a T5X export (HF exports are float32)",
    )
    args = gin_utils.parse_args(parser, argv)
    gin_utils.quiet_tensorflow()
    try:
        left_out = export(args.checkpoint, args.output, args.format, args.dtype)
    except (FileNotFoundError, FileExistsError, ValueError, storage.StorageError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"wrote {args.format} text model to {args.output}")
    if left_out:
        print(f"left out (no place in a text T5): {', '.join(left_out)}")


if __name__ == "__main__":
    gin_utils.run_job(main)
