"""Batch decoding speed: our jitted KV-cache greedy and beam search against Hugging Face
PyTorch ``generate`` on the same weights, shapes and machine, in one run.

The T5-small-shaped reference model of the benches: d_model 512, 6+6 layers, d_ff 1024 gated,
batch 8, 256 landmark frames (+ an 8-token prompt), 64 new tokens, greedy and beam 4.
HF has no landmark input, so it gets our encoder input embeddings (prompt embeddings
followed by the projected frames) as ``inputs_embeds``: the same computation.
The EOS column of the output projection is zeroed, so that random weights decode all
64 tokens in both. The four runs (ours and HF, greedy and beam) take turns, so a change
of load on a shared machine hits them alike. Prints a final JSON line with tokens/s,
the ratios of the medians (HF time / ours) and the median, min and max of the paired
per-run ratios.

    python bench/decode.py [--repeats 3] [--no-xla-flags]

XLA flags set here (before JAX starts; ``--no-xla-flags`` leaves XLA_FLAGS alone):
  --xla_cpu_experimental_ynn_fusion_type=      (empty) turns off XLA:CPU's YNNPACK
                                               fusions. jaxlib 0.10 fuses each attention
                                               (QK^T, bias, softmax, AV) into one YNNPACK
                                               kernel that runs it ~2x slower than XLA's own
                                               loops; the encoder pass took 1.1-1.2 s with it
                                               and 0.58-0.85 s without (greedy 3.1-4.1 s vs
                                               1.6-2.6 s), same outputs.
  --xla_cpu_enable_concurrency_optimized_scheduler=true
                                               lets independent ops overlap on the cores.
They only change how XLA compiles for CPU; the model code has no CPU-specific path.
(The train-step bench keeps YNNPACK's dot fusions, which are faster for training.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

XLA_FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_enable_concurrency_optimized_scheduler=true"
)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--no-xla-flags", action="store_true", help="do not add this bench's XLA flags"
    )
    return parser.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and not ARGS.no_xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + XLA_FLAGS).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from paired import alternate, ratio_summary  # noqa: E402  (bench/paired.py)

from slt.models import weights  # noqa: E402
from slt.models.model import EncoderDecoderModel  # noqa: E402
from slt.models.network import T5Config, Transformer  # noqa: E402

CONFIG = T5Config(
    vocab_size=384,
    emb_dim=512,
    num_heads=8,
    head_dim=64,
    num_encoder_layers=6,
    num_decoder_layers=6,
    mlp_dim=1024,
)
BATCH, PROMPT, FRAMES, NEW_TOKENS, BEAMS = 8, 8, 256, 64, 4


def main() -> None:
    args = ARGS or _parse()
    load_before = os.getloadavg()
    import torch
    import transformers

    rs = np.random.RandomState(0)
    batch = {
        "encoder_input_tokens": jnp.asarray(rs.randint(3, 384, (BATCH, PROMPT)), jnp.int32),
        "encoder_landmarks": jnp.asarray(rs.randn(BATCH, FRAMES, 255), jnp.float32),
        "encoder_landmark_mask": jnp.ones((BATCH, FRAMES), jnp.int32),
        "decoder_target_tokens": jnp.zeros((BATCH, NEW_TOKENS), jnp.int32),
    }
    model = EncoderDecoderModel(Transformer(CONFIG))
    params = jax.jit(lambda r: model.init_params(r, {k: v.shape for k, v in batch.items()}))(
        jax.random.PRNGKey(0)
    )
    params = jax.tree_util.tree_map(np.array, params)  # writable copies
    params["decoder"]["logits_dense"]["kernel"][:, 1] = 0.0  # no EOS: 64 tokens each

    greedy_fn = jax.jit(lambda p, b: model.predict_batch(p, b, NEW_TOKENS))
    beam_fn = jax.jit(
        lambda p, b: model.predict_batch(
            p, b, NEW_TOKENS, decode_method="beam", num_beams=BEAMS, alpha=0.6
        )
    )
    our_tokens = np.asarray(greedy_fn(params, batch))

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        weights.write_hf_checkpoint(params, CONFIG, tmp)
        hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp).eval()
    embedded = np.concatenate(
        [
            params["token_embedder"]["embedding"][np.asarray(batch["encoder_input_tokens"])],
            np.asarray(batch["encoder_landmarks"])
            @ params["encoder"]["landmark_embedder"]["kernel"]
            + params["encoder"]["landmark_embedder"]["bias"],
        ],
        axis=1,
    )
    inputs_embeds = torch.from_numpy(embedded.astype(np.float32))
    mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long)

    def hf_generate(num_beams: int):
        with torch.no_grad():
            return hf.generate(
                inputs_embeds=inputs_embeds,
                attention_mask=mask,
                do_sample=False,
                num_beams=num_beams,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=0,
                decoder_start_token_id=0,
                eos_token_id=1,
                pad_token_id=0,
                length_penalty=0.6 if num_beams > 1 else 1.0,
            )

    runs = {
        "ours_greedy": lambda: greedy_fn(params, batch).block_until_ready(),
        "hf_greedy": lambda: hf_generate(1),
        "ours_beam": lambda: beam_fn(params, batch).block_until_ready(),
        "hf_beam": lambda: hf_generate(BEAMS),
    }
    for run in runs.values():
        run()  # compile / warm up
    times = alternate(runs, args.repeats)
    ours_greedy, hf_greedy, ours_beam, hf_beam = (
        float(np.median(times[k])) for k in ("ours_greedy", "hf_greedy", "ours_beam", "hf_beam")
    )
    hf_tokens = hf_generate(1).numpy()[:, 1:]
    hf_beam_length = hf_generate(BEAMS).shape[1] - 1
    our_beam_length = int((np.asarray(beam_fn(params, batch)) > 0).sum(axis=1).max())
    same_greedy = bool(hf_tokens.shape == our_tokens.shape and (hf_tokens == our_tokens).all())

    new = BATCH * NEW_TOKENS
    result = {
        "device": jax.devices()[0].device_kind,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "batch": BATCH,
        "frames": FRAMES,
        "new_tokens": NEW_TOKENS,
        "beams": BEAMS,
        "greedy_outputs_identical": same_greedy,
        # Beam outputs are compared by length only: the two stop rules differ.
        "ours_beam_output_length": our_beam_length,
        "hf_beam_output_length": hf_beam_length,
        "ours_greedy_tokens_per_s": round(new / ours_greedy, 1),
        "hf_greedy_tokens_per_s": round(new / hf_greedy, 1),
        "ours_beam_tokens_per_s": round(new / ours_beam, 1),
        "hf_beam_tokens_per_s": round(new / hf_beam, 1),
        "greedy_ratio": round(hf_greedy / ours_greedy, 2),
        "beam_ratio": round(hf_beam / ours_beam, 2),
        # Each HF run over our run of the same turn.
        **{
            f"paired_{kind}_ratio": ratio_summary(times[f"hf_{kind}"], times[f"ours_{kind}"], 2)
            for kind in ("greedy", "beam")
        },
    }
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
