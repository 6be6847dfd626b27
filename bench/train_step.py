r"""Train-step speed: our jitted step against Hugging Face PyTorch eager T5 (and, if
``T5X_DIR`` points at a t5x source tree, t5x's example network), in one run, on the same
weights and shapes.

The T5-small-shaped reference model of the benches: d_model 512, 6+6 layers, 8 heads x 64, d_ff
1024 gated GELU, ByT5 vocabulary 384; batch 8, an 8-token prompt followed by 256 landmark
frames (encoder length 264), 128 target bytes. One step = forward, backward and an
Adafactor update.

* ours: ``slt.training.trainer.Trainer`` with ``make_optimizer(OptimizerConfig('adafactor'))``
  (T5X's Adafactor: factored second moments, decay 0.8, update clipping 1.0, updates
  scaled by parameter RMS), on a 1-device mesh, exactly the path ``slt.train`` takes.
* HF: ``T5ForConditionalGeneration`` in float32 eager mode, loaded from our weights
  (``write_hf_checkpoint``). It has no landmark input, so the step computes the same
  encoder input itself: the shared token embedding of the prompt followed by a
  ``torch.nn.Linear(255, 512)`` of the frames holding our landmark projection, passed
  as ``inputs_embeds`` (its gradient flows like ours). Optimizer:
  ``transformers.optimization.Adafactor`` with the same settings (relative_step off,
  lr 1e-3, scale_parameter on, clip 1.0, decay -0.8, no momentum).
* t5x (optional): ``t5x.examples.t5.network.Transformer`` with
  ``t5x.examples.t5.network.T5Config`` of the same shape, given random frames as
  already-embedded inputs is not possible there, so it gets 264 encoder tokens (the
  same encoder length); same optax Adafactor. Imported from ``$T5X_DIR`` at run time.

FLOPs are counted analytically (2*m*n*k for every matmul of the forward pass, times 3 for
forward + backward); XLA's own count of the compiled step is printed as well. The
achieved model FLOP/s is compared with a 2048x2048x2048 float32 matmul timed in the same
run (JAX, same flags).

XLA flags set here (before JAX starts; ``--no-xla-flags`` leaves XLA_FLAGS alone):
  --xla_cpu_experimental_ynn_fusion_type=dot   fuses elementwise producers/consumers into
                                               the dot kernels (XLA:CPU's YNNPACK path)
  --xla_cpu_enable_concurrency_optimized_scheduler=true
                                               schedules independent ops so the two CPU
                                               threads overlap more
They only change how XLA compiles for CPU; the model code has no CPU-specific path.

    python bench/train_step.py [--steps 5] [--rounds 2] [--no-xla-flags] [--skip-hf]

Peers alternate step by step within each round, so a change of load on a shared machine
hits both alike. Prints one line per measurement and a final JSON line with s/step, the
ratio ``hf_s_per_step / ours_s_per_step`` of the medians (> 1 means we are faster), the
median, min and max of the per-step paired ratios (each HF step over our step of the
same turn) and the FLOP/s fractions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

XLA_FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type=dot "
    "--xla_cpu_enable_concurrency_optimized_scheduler=true"
)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=5,
        help="timed steps per round and peer (peers alternate step by step)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds; each times every peer in turn (median over all steps)",
    )
    parser.add_argument(
        "--no-xla-flags", action="store_true", help="do not add this bench's XLA flags"
    )
    parser.add_argument("--skip-hf", action="store_true", help="time ours only")
    parser.add_argument("--dtype", default="float32", help="our compute dtype (float32, bfloat16)")
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
from slt.training import partitioning  # noqa: E402
from slt.training import trainer as trainer_lib  # noqa: E402

BATCH, PROMPT, FRAMES, TARGETS = 8, 8, 256, 128
D, HEADS, HEAD_DIM, LAYERS, MLP, VOCAB = 512, 8, 64, 6, 1024, 384
LR = 1e-3


def make_batch() -> dict[str, np.ndarray]:
    rs = np.random.RandomState(0)
    targets = rs.randint(3, VOCAB, (BATCH, TARGETS)).astype(np.int32)
    targets[:, -1] = 1  # EOS
    return {
        "encoder_input_tokens": rs.randint(3, VOCAB, (BATCH, PROMPT)).astype(np.int32),
        "encoder_landmarks": rs.randn(BATCH, FRAMES, 255).astype(np.float32),
        "encoder_landmark_mask": np.ones((BATCH, FRAMES), np.int32),
        "decoder_input_tokens": np.concatenate(
            [np.zeros((BATCH, 1), np.int32), targets[:, :-1]], axis=1
        ),
        "decoder_target_tokens": targets,
        "decoder_loss_weights": np.ones_like(targets),
    }


def analytic_flops() -> float:
    """Matmul FLOPs of one training step: 3x the forward pass (backward = 2x forward)."""
    enc_len, dec_len = PROMPT + FRAMES, TARGETS
    n_enc, n_dec = BATCH * enc_len, BATCH * dec_len
    inner = HEADS * HEAD_DIM
    mm = lambda m, k, n: 2.0 * m * k * n  # noqa: E731
    mlp = lambda n: 3 * mm(n, D, MLP)  # noqa: E731  wi_0, wi_1, wo
    attend = lambda q, k: 2 * mm(BATCH * HEADS * q, HEAD_DIM, k)  # noqa: E731  QK^T and AV
    enc_layer = 4 * mm(n_enc, D, inner) + attend(enc_len, enc_len) + mlp(n_enc)
    dec_layer = (
        4 * mm(n_dec, D, inner)
        + attend(dec_len, dec_len)  # self
        + 2 * mm(n_dec, D, inner)
        + 2 * mm(n_enc, D, inner)  # cross q,o / k,v
        + attend(dec_len, enc_len)
        + mlp(n_dec)
    )
    forward = (
        mm(BATCH * FRAMES, 255, D) + LAYERS * enc_layer + LAYERS * dec_layer + mm(n_dec, D, VOCAB)
    )
    return 3.0 * forward


def matmul_flops_per_s(size: int = 2048, repeats: int = 5) -> float:
    a = jnp.asarray(np.random.RandomState(1).randn(size, size), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2.0 * size**3 / min(times)


def kernel_rates(calls: int = 8, repeats: int = 5) -> dict[str, dict[str, float]]:
    """GFLOP/s of the step's two kinds of matmul, XLA (this run's flags) vs PyTorch.

    * ``dense``: a projection as the encoder runs it, ``[2112, 512] x [512, 1024]``;
    * ``attention``: the encoder's batched ``QK^T``, ``einsum('bqhd,bkhd->bhqk')`` on
      ``[8, 264, 8, 64]`` operands, as our attention computes it (PyTorch: ``q @ k^T``
      on the ``[b, h, len, d]`` views HF's T5 uses).

    Each timing covers ``calls`` independent products (one jitted call for XLA, so its
    threads stay busy as in a step); XLA and PyTorch alternate, best of ``repeats``.
    """
    import torch

    rs = np.random.RandomState(2)
    n = BATCH * (PROMPT + FRAMES)
    length = n // BATCH
    cases = {
        "dense": ((n, D), (D, MLP), 2.0 * n * D * MLP, lambda a, b: a @ b, lambda a, b: a @ b),
        "attention": (
            (BATCH, length, HEADS, HEAD_DIM),
            (BATCH, length, HEADS, HEAD_DIM),
            2.0 * BATCH * HEADS * length * length * HEAD_DIM,
            lambda q, k: jnp.einsum("bqhd,bkhd->bhqk", q, k),
            lambda q, k: q.transpose(1, 2) @ k.transpose(1, 2).transpose(2, 3),
        ),
    }
    rates = {}
    for name, (shape_a, shape_b, flops, xla_fn, torch_fn) in cases.items():
        pairs = [
            (rs.randn(*shape_a).astype(np.float32), rs.randn(*shape_b).astype(np.float32))
            for _ in range(calls)
        ]
        xla_f = jax.jit(lambda operands: [xla_fn(a, b) for a, b in operands])  # noqa: B023
        xla_pairs = [(jnp.asarray(a), jnp.asarray(b)) for a, b in pairs]
        torch_pairs = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in pairs]
        jax.block_until_ready(xla_f(xla_pairs))
        best = {"xla": float("inf"), "torch": float("inf")}
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(xla_f(xla_pairs))
            best["xla"] = min(best["xla"], time.perf_counter() - start)
            start = time.perf_counter()
            for a, b in torch_pairs:
                torch_fn(a, b)
            best["torch"] = min(best["torch"], time.perf_counter() - start)
        rates[name] = {k: round(calls * flops / v / 1e9, 1) for k, v in best.items()}
    return rates


class Ours:
    name = "ours"

    def __init__(self, dtype: str):
        self.config = T5Config(
            vocab_size=VOCAB,
            emb_dim=D,
            num_heads=HEADS,
            head_dim=HEAD_DIM,
            num_encoder_layers=LAYERS,
            num_decoder_layers=LAYERS,
            mlp_dim=MLP,
            dtype=dtype,
        )
        batch = make_batch()
        shapes = {k: v.shape for k, v in batch.items()}
        self.mesh = partitioning.make_mesh((1, 1, 1), devices=jax.devices()[:1])
        model = EncoderDecoderModel(Transformer(self.config))
        optimizer = trainer_lib.make_optimizer(
            trainer_lib.OptimizerConfig(name="adafactor", learning_rate=LR)
        )
        self.trainer = trainer_lib.Trainer(
            model, optimizer, self.mesh, partitioning.DATA_PARALLEL_RULES, shapes
        )
        with jax.set_mesh(self.mesh):
            self.state = self.trainer.init_state(jax.random.key(0))
            self.batch = partitioning.global_batch(batch, self.trainer.batch_sharding)
        self.rng = jax.random.key(1)
        self.losses: list[float] = []
        # The cross-entropy alone (our loss adds T5X's z-loss, 1e-4 * log(Z)^2 per token,
        # which HF's loss has not): compared with HF's loss at step 0.
        self.cross_entropies: list[float] = []

    def params(self) -> dict:
        return jax.tree.map(np.asarray, self.state.params)

    def xla_flops(self) -> float | None:
        with jax.set_mesh(self.mesh):
            compiled = self.trainer.train_step.lower(self.state, self.batch, self.rng).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) if cost and "flops" in cost else None

    def step(self) -> None:
        with jax.set_mesh(self.mesh):
            self.state, metrics = self.trainer.train_step(self.state, self.batch, self.rng)
            self.losses.append(float(jax.block_until_ready(metrics["loss"])))
            self.cross_entropies.append(float(metrics["cross_entropy"]))


class HuggingFace:
    name = "hf"

    def __init__(self, params: dict, config: T5Config):
        import torch
        import transformers
        from transformers.optimization import Adafactor

        torch.set_num_threads(os.cpu_count() or 1)
        self.torch = torch
        with tempfile.TemporaryDirectory() as tmp:
            weights.write_hf_checkpoint(params, config, tmp)
            self.model = transformers.T5ForConditionalGeneration.from_pretrained(tmp)
        self.model.train()
        self.model.config.dropout_rate = 0.0
        for module in self.model.modules():  # dropout 0, as ours (no rng in the step)
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        self.landmarks = torch.nn.Linear(255, D)
        with torch.no_grad():
            self.landmarks.weight.copy_(
                torch.from_numpy(
                    np.asarray(params["encoder"]["landmark_embedder"]["kernel"]).T.copy()
                )
            )
            self.landmarks.bias.copy_(
                torch.from_numpy(np.asarray(params["encoder"]["landmark_embedder"]["bias"]).copy())
            )
        trainable = list(self.model.parameters()) + list(self.landmarks.parameters())
        self.optimizer = Adafactor(
            trainable,
            lr=LR,
            relative_step=False,
            warmup_init=False,
            scale_parameter=True,
            clip_threshold=1.0,
            decay_rate=-0.8,
            beta1=None,
            weight_decay=0.0,
        )
        batch = make_batch()
        self.tokens = torch.from_numpy(batch["encoder_input_tokens"]).long()
        self.frames = torch.from_numpy(batch["encoder_landmarks"])
        self.decoder_input = torch.from_numpy(batch["decoder_input_tokens"]).long()
        self.labels = torch.from_numpy(batch["decoder_target_tokens"]).long()
        self.mask = torch.ones(BATCH, PROMPT + FRAMES, dtype=torch.long)
        self.losses: list[float] = []

    def step(self) -> None:
        embeds = self.torch.cat(
            [self.model.shared(self.tokens), self.landmarks(self.frames)], dim=1
        )
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=self.mask,
            decoder_input_ids=self.decoder_input,
            labels=self.labels,
        )
        out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(float(out.loss.detach()))


class T5XExample:
    """t5x's ``examples/t5/network.py`` at the same shapes, trained with the same optax
    Adafactor (imported from ``$T5X_DIR`` at run time; nothing of t5x is vendored)."""

    name = "t5x"

    def __init__(self, t5x_dir: str):
        import optax

        sys.path.insert(0, t5x_dir)
        from t5x.examples.t5 import network as t5x_network

        cfg = t5x_network.T5Config(
            vocab_size=VOCAB,
            dtype=jnp.float32,
            emb_dim=D,
            num_heads=HEADS,
            num_encoder_layers=LAYERS,
            num_decoder_layers=LAYERS,
            head_dim=HEAD_DIM,
            mlp_dim=MLP,
            mlp_activations=("gelu", "linear"),
            dropout_rate=0.0,
            logits_via_embedding=False,
        )
        self.module = t5x_network.Transformer(cfg)
        rs = np.random.RandomState(0)
        batch = make_batch()
        enc = rs.randint(3, VOCAB, (BATCH, PROMPT + FRAMES)).astype(np.int32)
        self.inputs = (
            jnp.asarray(enc),
            jnp.asarray(batch["decoder_input_tokens"]),
            jnp.asarray(batch["decoder_target_tokens"]),
        )
        variables = self.module.init(jax.random.PRNGKey(0), *self.inputs, enable_dropout=False)
        params = _unbox(variables["params"])
        self.optimizer = trainer_lib.make_optimizer(
            trainer_lib.OptimizerConfig(name="adafactor", learning_rate=LR)
        )
        self.state = (params, self.optimizer.init(params))

        def loss_fn(params, enc, dec_in, targets):
            logits = self.module.apply(
                {"params": params}, enc, dec_in, targets, enable_dropout=False
            )
            log_z = jax.nn.logsumexp(logits, axis=-1)
            target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
            return jnp.mean(log_z - target_logit + 1e-4 * jnp.square(log_z))

        def train_step(state, enc, dec_in, targets):
            params, opt_state = state
            loss, grads = jax.value_and_grad(loss_fn)(params, enc, dec_in, targets)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        self.train_step = jax.jit(train_step, donate_argnums=(0,))
        self.losses: list[float] = []

    def step(self) -> None:
        self.state, loss = self.train_step(self.state, *self.inputs)
        self.losses.append(float(jax.block_until_ready(loss)))


def _unbox(tree):
    import flax.linen as nn

    return nn.meta.unbox(tree)


def main() -> None:
    args = ARGS or _parse()
    load_before = os.getloadavg()
    ours = Ours(args.dtype)
    initial_params = ours.params()  # copied before the step donates the state
    start = time.perf_counter()
    ours.step()
    compile_s = time.perf_counter() - start
    print(f"ours: first step (compile) {compile_s:.1f} s", flush=True)
    peers = [ours]
    agreement = {}
    if not args.skip_hf:
        hf = HuggingFace(initial_params, ours.config)
        hf.step()  # warm up, from the same initial weights as our first step
        ours.step()
        hf.step()
        peers.append(hf)
        # Same weights and batch: step 0 must agree to float32 round-off. Step 1 follows
        # one update of two Adafactor implementations (T5X/optax vs transformers), which
        # differ in details (e.g. optax keeps [8, 32] relpos tables unfactored), so it is
        # only printed.
        agreement = {
            "step0_cross_entropy": {
                "ours": round(ours.cross_entropies[0], 6),
                "hf": round(hf.losses[0], 6),
            },
            "step0_abs_diff": float(f"{abs(ours.cross_entropies[0] - hf.losses[0]):.2e}"),
            "step1_cross_entropy": {
                "ours": round(ours.cross_entropies[1], 6),
                "hf": round(hf.losses[1], 6),
            },
            "ours_z_loss_step0": round(ours.losses[0] - ours.cross_entropies[0], 6),
        }
        print(
            f"step 0 cross-entropy: ours {ours.cross_entropies[0]:.6f} hf {hf.losses[0]:.6f} "
            f"(|diff| {agreement['step0_abs_diff']:.1e}); step 1: ours "
            f"{ours.cross_entropies[1]:.6f} hf {hf.losses[1]:.6f}",
            flush=True,
        )
        if agreement["step0_abs_diff"] > 1e-4:
            raise SystemExit(
                "ours and HF disagree at step 0 on the same weights and batch: "
                "the comparison is not of the same model."
            )
    t5x_dir = os.environ.get("T5X_DIR")
    t5x_error = None
    if t5x_dir:
        try:
            peers.append(T5XExample(t5x_dir))
            peers[-1].step()
        except Exception as e:  # noqa: BLE001 (reported in the JSON, never dropped)
            t5x_error = f"{type(e).__name__}: {e}"
            print(f"t5x: could not run from T5X_DIR={t5x_dir}: {t5x_error}", flush=True)
    else:
        print("t5x: skipped (T5X_DIR is not set)", flush=True)

    times: dict[str, list[float]] = {p.name: [] for p in peers}
    for r in range(args.rounds):
        round_times = alternate({p.name: p.step for p in peers}, args.steps)
        for peer in peers:
            times[peer.name] += round_times[peer.name]
            print(
                f"round {r}: {peer.name} {statistics.median(round_times[peer.name]):.3f} "
                f"s/step (loss {peer.losses[-1]:.4f})",
                flush=True,
            )
    matmul = matmul_flops_per_s()
    flops = analytic_flops()
    xla_flops = ours.xla_flops()
    s_per_step = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "dtype": args.dtype,
        "batch": BATCH,
        "prompt_tokens": PROMPT,
        "frames": FRAMES,
        "target_len": TARGETS,
        "steps_timed_per_peer": args.steps * args.rounds,
        "ours_compile_s": round(compile_s, 2),
        **{f"{k}_s_per_step": round(v, 3) for k, v in s_per_step.items()},
        "analytic_gflop_per_step": round(flops / 1e9, 1),
        "xla_gflop_per_step": None if xla_flops is None else round(xla_flops / 1e9, 1),
        "matmul_2048_gflop_per_s": round(matmul / 1e9, 1),
    }
    for name, s in s_per_step.items():
        result[f"{name}_model_gflop_per_s"] = round(flops / s / 1e9, 1)
        result[f"{name}_fraction_of_matmul"] = round(flops / s / matmul, 3)
    if "hf" in s_per_step:
        result["ratio_hf_over_ours"] = round(s_per_step["hf"] / s_per_step["ours"], 3)
        result["paired_ratio_hf_over_ours"] = ratio_summary(times["hf"], times["ours"])
    if "t5x" in s_per_step:
        result["ratio_t5x_over_ours"] = round(s_per_step["t5x"] / s_per_step["ours"], 3)
    else:
        result["t5x"] = t5x_error or "skipped: T5X_DIR not set"
    if not args.skip_hf:
        # Where the gap comes from (bench/RESULTS.md, "Train-step speed"): XLA:CPU's dense and,
        # more so, batched attention matmuls against PyTorch's, in the same run.
        result["kernel_gflop_per_s"] = kernel_rates()
    result.update(agreement)
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
