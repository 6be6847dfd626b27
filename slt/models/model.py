"""Loss, prediction (greedy, beam, sampling) and scoring around the ``Transformer``.

Plain Python (no gin): ``EncoderDecoderModel(network, z_loss=..., ...)``. Every method is
a pure function of ``params`` and the batch, so it can be jitted / partitioned as is.

Batch keys (see docs/architecture.md, "The data contract"): ``encoder_input_tokens [B,P]``,
``encoder_landmarks [B,T,255]``, ``encoder_landmark_mask [B,T]``,
``decoder_input_tokens [B,L]``, ``decoder_target_tokens [B,L]``,
``decoder_loss_weights [B,L]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from slt.models import ctc, decoding
from slt.models.network import Transformer, encoder_mask

Array = jax.Array
Params = Any
Batch = Mapping[str, Array]


def cross_entropy_with_z_loss(
    logits: Array,
    targets: Array,
    weights: Array | None = None,
    z_loss: float = 1e-4,
    label_smoothing: float = 0.0,
    loss_normalizing_factor: float | None = None,
) -> tuple[Array, dict[str, Array]]:
    """T5X's token loss: cross-entropy plus ``z_loss * log(Z)**2`` per token.

    Per-token terms are weighted and SUMMED, then divided by ``loss_normalizing_factor``
    if given, else by the number of target tokens ``sum(weights)`` (a per-token mean).
    Note T5X's ``LOSS_NORMALIZING_FACTOR=None`` means no division at all: pass ``1.0``
    to get that raw sum, or ``pretrain_batch * target_len`` (ByT5: 1024*189) to fine-tune
    MTF-pretrained checkpoints as T5X does. ``weights`` defaults to ``targets > 0``.

    Returns ``(loss, aux)``, aux = ``{'cross_entropy', 'z_loss', 'num_tokens',
    'accuracy'}`` with ``cross_entropy + z_loss == loss``; accuracy is per target token.
    """
    logits = jnp.asarray(logits, jnp.float32)
    vocab = logits.shape[-1]
    if weights is None:
        weights = targets > 0
    weights = jnp.asarray(weights, jnp.float32)

    log_z = jax.nn.logsumexp(logits, axis=-1)
    log_probs = logits - log_z[..., None]
    target_log_prob = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    if label_smoothing > 0.0:
        # Soft targets: `confidence` on the target, `low` on every other id; the constant
        # makes the minimum of the smoothed loss zero, as in T5X.
        confidence = 1.0 - label_smoothing
        low = label_smoothing / (vocab - 1)
        constant = -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low + 1e-20))
        ce = -(confidence - low) * target_log_prob - low * jnp.sum(log_probs, axis=-1) - constant
    else:
        ce = -target_log_prob
    zl = z_loss * jnp.square(log_z)

    num_tokens = jnp.sum(weights)
    safe_tokens = jnp.where(num_tokens > 0, num_tokens, 1.0)
    denom = safe_tokens if loss_normalizing_factor is None else loss_normalizing_factor
    ce_sum = jnp.sum(ce * weights) / denom
    z_sum = jnp.sum(zl * weights) / denom
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    aux = {
        "cross_entropy": ce_sum,
        "z_loss": z_sum,
        "num_tokens": num_tokens,
        "accuracy": jnp.sum(correct * weights) / safe_tokens,
    }
    return ce_sum + z_sum, aux


def encoder_ctc_loss(
    ctc_logits: Array, frame_mask: Array, targets: Array, eos_id: int = decoding.EOS_ID
) -> tuple[Array, Array]:
    """Per-example CTC loss ``[B]`` of the target text (EOS and padding removed) under
    ``ctc_logits [B, S, V]``, blank = pad id 0; and a ``[B]`` float mask of the examples
    that CTC can align at all (at least one label, and at least as many real positions
    as labels plus repeats). Infeasible examples get loss 0 so one short clip cannot
    dominate the batch, and an example with no labels (MT under signed-text labels)
    adds nothing."""
    label_paddings = ((targets == 0) | (targets == eos_id)).astype(jnp.float32)
    logit_paddings = 1.0 - (frame_mask > 0).astype(jnp.float32)
    losses = optax.ctc_loss(ctc_logits, logit_paddings, targets, label_paddings, blank_id=0)
    labels = targets * (1 - label_paddings).astype(targets.dtype)
    repeats = jnp.sum((labels[:, 1:] == labels[:, :-1]) & (labels[:, 1:] > 0), axis=1)
    needed = jnp.sum(1.0 - label_paddings, axis=1) + repeats
    feasible = ((jnp.sum(1.0 - logit_paddings, axis=1) >= needed) & (needed > 0)).astype(
        jnp.float32
    )
    return jnp.where(feasible > 0, losses, 0.0), feasible


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(getattr(x, "shape", x))


class EncoderDecoderModel:
    """Loss, decoding (greedy, beam, sampling; KV cache) and scoring for a ``Transformer``.

    ``init_params`` returns plain float32 arrays; ``logical_axes`` returns the matching
    pytree of logical ``PartitionSpec``s (t5x names) for a partitioner, computed with
    ``jax.eval_shape`` so nothing is allocated.
    """

    def __init__(
        self,
        network: Transformer,
        z_loss: float = 1e-4,
        label_smoothing: float = 0.0,
        loss_normalizing_factor: float | None = None,
        eos_id: int = decoding.EOS_ID,
        encoder_ctc_weight: float = 0.0,
        decoding_config: decoding.DecodingConfig = decoding.DecodingConfig(),
        encoder_ctc_targets: str = "targets",
    ) -> None:
        if encoder_ctc_targets not in ("targets", "signed_text"):
            raise ValueError(
                f"encoder_ctc_targets={encoder_ctc_targets!r}: give 'targets' (the CTC "
                "labels are the decoder's targets) or 'signed_text' (what each clip signs)."
            )
        if encoder_ctc_weight and not network.config.encoder_ctc_head:
            raise ValueError(
                f"encoder_ctc_weight={encoder_ctc_weight} needs a CTC head: set "
                "T5Config.encoder_ctc_head = True (gin: slt.T5Config.encoder_ctc_head)."
            )
        self.network = network
        self.encoder_ctc_weight = encoder_ctc_weight
        self.encoder_ctc_targets = encoder_ctc_targets
        self.z_loss = z_loss
        self.label_smoothing = label_smoothing
        self.loss_normalizing_factor = loss_normalizing_factor
        self.eos_id = eos_id
        self.decoding_config = decoding_config

    # -- initialisation ---------------------------------------------------------------

    def _dummy_inputs(self, batch_shapes: Mapping[str, Any]) -> dict[str, Array]:
        cfg = self.network.config
        enc = _shape(batch_shapes["encoder_input_tokens"])
        frames = _shape(batch_shapes.get("encoder_landmarks", (enc[0], 0, cfg.landmark_dim)))
        dec = _shape(
            batch_shapes.get("decoder_input_tokens", batch_shapes.get("decoder_target_tokens"))
        )
        return {
            "encoder_input_tokens": jnp.ones(enc, jnp.int32),
            "encoder_landmarks": jnp.zeros(frames, jnp.float32),
            "encoder_landmark_mask": jnp.ones(frames[:2], jnp.int32),
            "decoder_input_tokens": jnp.ones(dec, jnp.int32),
            "decoder_target_tokens": jnp.ones(dec, jnp.int32),
        }

    def init_variables(self, rng: Array, batch_shapes: Mapping[str, Any]) -> dict[str, Any]:
        """``network.init`` output: ``{'params': ...}`` with ``nn.LogicallyPartitioned``
        leaves. ``nn.meta.unbox`` gives arrays, ``nn.get_partition_spec`` logical specs."""
        return self.network.init(
            {"params": rng}, **self._dummy_inputs(batch_shapes), enable_dropout=False
        )

    def init_params(self, rng: Array, batch_shapes: Mapping[str, Any]) -> Params:
        """Plain (unboxed) float32 params. ``batch_shapes`` maps feature names to shapes
        (tuples or anything with ``.shape``); ``decoder_input_tokens`` or
        ``decoder_target_tokens`` and ``encoder_input_tokens`` are required."""
        return nn.meta.unbox(self.init_variables(rng, batch_shapes))["params"]

    def logical_axes(self, batch_shapes: Mapping[str, Any]) -> Params:
        """Pytree of logical ``PartitionSpec`` matching ``init_params`` (no allocation).
        Map to mesh shardings with ``nn.logical_to_mesh_sharding(axes, mesh, rules)``."""
        boxed = jax.eval_shape(
            lambda rng: self.init_variables(rng, batch_shapes), jax.random.PRNGKey(0)
        )
        return nn.get_partition_spec(boxed)["params"]

    # -- training ---------------------------------------------------------------------

    def _logits(
        self,
        params: Params,
        batch: Batch,
        dropout_rng: Array | None,
        return_encoder_ctc_logits: bool = False,
    ) -> Array | tuple[Array, Array]:
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
        return self.network.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            batch["encoder_landmarks"],
            batch["encoder_landmark_mask"],
            batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
            enable_dropout=dropout_rng is not None,
            rngs=rngs,
            return_encoder_ctc_logits=return_encoder_ctc_logits,
        )

    def loss_fn(
        self, params: Params, batch: Batch, dropout_rng: Array | None
    ) -> tuple[Array, dict[str, Array]]:
        """Scalar loss and aux metrics; dropout is on iff ``dropout_rng`` is given.

        With ``encoder_ctc_weight > 0`` the loss adds that weight times the encoder CTC
        loss, normalised like the cross-entropy (per target token by default); aux then
        also has ``encoder_ctc`` and ``ctc_feasible`` (share of alignable examples).
        """
        use_ctc = self.encoder_ctc_weight > 0
        outputs = self._logits(params, batch, dropout_rng, return_encoder_ctc_logits=use_ctc)
        logits, ctc_logits = outputs if use_ctc else (outputs, None)
        targets = batch["decoder_target_tokens"]
        weights = batch.get("decoder_loss_weights")
        loss, aux = cross_entropy_with_z_loss(
            logits,
            targets,
            weights,
            z_loss=self.z_loss,
            label_smoothing=self.label_smoothing,
            loss_normalizing_factor=self.loss_normalizing_factor,
        )
        if not use_ctc:
            return loss, aux
        frame_mask = encoder_mask(
            batch["encoder_input_tokens"],
            batch["encoder_landmark_mask"],
            self.network.config.landmark_stride,
        )
        frame_mask = frame_mask[:, batch["encoder_input_tokens"].shape[1] :]
        labels = (
            batch["encoder_ctc_targets"] if self.encoder_ctc_targets == "signed_text" else targets
        )
        ctc_losses, feasible = encoder_ctc_loss(ctc_logits, frame_mask, labels, self.eos_id)
        denom = self.loss_normalizing_factor
        if denom is None:
            denom = jnp.maximum(aux["num_tokens"], 1.0)
        ctc = jnp.sum(ctc_losses) / denom
        aux = {**aux, "encoder_ctc": ctc, "ctc_feasible": jnp.mean(feasible)}
        return loss + self.encoder_ctc_weight * ctc, aux

    # -- inference --------------------------------------------------------------------

    def score_batch(self, params: Params, batch: Batch) -> Array:
        """float32 ``[B]``: sum of target log-probs (weights, else ``targets > 0``)."""
        logits = self._logits(params, batch, None)
        targets = batch["decoder_target_tokens"]
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        token_scores = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        weights = batch.get("decoder_loss_weights")
        weights = (targets > 0) if weights is None else weights
        return jnp.sum(token_scores * jnp.asarray(weights, jnp.float32), axis=-1)

    def encode(self, params: Params, batch: Batch) -> tuple[Array, Array]:
        """Encoder output ``[B,S,D]`` and its mask ``[B,S]`` (no dropout)."""
        encoded = self.network.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            batch["encoder_landmarks"],
            batch["encoder_landmark_mask"],
            enable_dropout=False,
            method=Transformer.encode,
        )
        mask = encoder_mask(
            batch["encoder_input_tokens"],
            batch["encoder_landmark_mask"],
            self.network.config.landmark_stride,
        )
        return encoded, mask

    def init_cache(
        self, params: Params, encoded: Array, mask: Array, max_decode_length: int
    ) -> Any:
        """Empty self-attention KV caches (keys ``[B, H, Dh, max_len]``, values ``[B, H,
        max_len, Dh]``), ``cache_index = 0``, and cross-attention keys/values computed once
        from ``encoded`` (same layouts, ``S`` for ``max_len``)."""
        dummy = jnp.zeros((encoded.shape[0], max_decode_length), jnp.int32)
        _, variables = self.network.apply(
            {"params": params},
            encoded,
            mask,
            dummy,
            enable_dropout=False,
            decode=True,
            max_decode_length=max_decode_length,
            method=Transformer.decode,
            mutable=["cache"],
        )
        return variables["cache"]

    def _step_fn(self, params: Params, encoded: Array, mask: Array, max_decode_length: int):
        """The cached one-token decoder step ``(token [N], cache) -> (logits [N, V], cache)``."""

        def tokens_to_logits(token: Array, cache: Any) -> tuple[Array, Any]:
            logits, variables = self.network.apply(
                {"params": params, "cache": cache},
                encoded,
                mask,
                token[:, None],
                enable_dropout=False,
                decode=True,
                max_decode_length=max_decode_length,
                method=Transformer.decode,
                mutable=["cache"],
            )
            return logits[:, 0], variables["cache"]

        return tokens_to_logits

    def predict_batch(
        self,
        params: Params,
        batch: Batch,
        max_decode_length: int | None = None,
        **decode_options: Any,
    ) -> Array:
        """Decoded tokens int32 ``[B, L]`` with a KV cache, 0 after each EOS (id 1).

        The method and its options default to the model's ``decoding_config`` (greedy
        unless configured); keyword arguments override it for this call. Jittable with
        ``max_decode_length`` and the options static (e.g. ``functools.partial``).
        ``L`` defaults to the length of ``decoder_target_tokens`` (or
        ``decoder_input_tokens``) in the batch. ``decode_options`` are those of
        ``predict_batch_with_aux`` (``decode_method``, ``num_beams``, ``alpha``,
        ``temperature``, ``top_k``, ``ctc_weight``, ``rng``).
        """
        tokens, _ = self.predict_batch_with_aux(params, batch, max_decode_length, **decode_options)
        return tokens

    def predict_batch_with_aux(
        self,
        params: Params,
        batch: Batch,
        max_decode_length: int | None = None,
        *,
        decode_method: str | None = None,
        num_beams: int | None = None,
        alpha: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        ctc_weight: float | None = None,
        rng: Array | None = None,
        return_all_beams: bool = False,
    ) -> tuple[Array, dict[str, Array]]:
        """Like ``predict_batch``, plus ``{'scores': [B]}``: the sequence log-probability
        (greedy, sample) or the length-penalised beam score ``log p / ((5+len)/6)**alpha``.

        With ``return_all_beams`` (beam search) tokens are ``[B, num_beams, L]`` and scores
        ``[B, num_beams]``, best first. ``ctc_weight`` overrides the joint CTC/attention
        weight of greedy decoding; 0.0 lets a checkpoint trained with joint decoding use
        beam search or sampling.
        """
        cfg = dataclasses.replace(
            self.decoding_config,
            **{
                k: v
                for k, v in dict(
                    method=decode_method,
                    num_beams=num_beams,
                    alpha=alpha,
                    temperature=temperature,
                    top_k=top_k,
                    ctc_weight=ctc_weight,
                ).items()
                if v is not None
            },
        )
        if max_decode_length is None:
            key = (
                "decoder_target_tokens"
                if "decoder_target_tokens" in batch
                else "decoder_input_tokens"
            )
            max_decode_length = batch[key].shape[1]
        encoded, mask = self.encode(params, batch)
        batch_size = encoded.shape[0]

        if cfg.method == "beam":
            # The encoder and the cross-attention keys/values run once per example and
            # are not repeated for its beams: the K beams of an example attend to them
            # together (as K query rows, see layers.cached_attention), so a step reads
            # them once, not K times. Only the self-attention caches are per beam.
            cache = self.init_cache(params, encoded, mask, max_decode_length)
            cache = _expand_self_attention_cache(cache, cfg.num_beams)
            step = self._step_fn(params, encoded, mask, max_decode_length)
            tokens, scores = decoding.beam_search(
                step,
                cache,
                batch_size,
                cfg.num_beams,
                max_decode_length,
                alpha=cfg.alpha,
                eos_id=self.eos_id,
                gather_cache_leaf=_is_self_attention_cache,
            )
            if not return_all_beams:
                tokens, scores = tokens[:, 0], scores[:, 0]
            return tokens, {"scores": scores}

        cache = self.init_cache(params, encoded, mask, max_decode_length)
        step = self._step_fn(params, encoded, mask, max_decode_length)
        if cfg.method == "sample":
            rng = jax.random.PRNGKey(cfg.seed) if rng is None else rng
            tokens, scores = decoding.temperature_sample(
                step,
                cache,
                batch_size,
                max_decode_length,
                rng,
                temperature=cfg.temperature,
                top_k=cfg.top_k,
                eos_id=self.eos_id,
            )
        elif cfg.ctc_weight > 0:
            if not self.network.config.encoder_ctc_head:
                raise ValueError(
                    f"DecodingConfig.ctc_weight={cfg.ctc_weight} needs a network with an "
                    "encoder CTC head (T5Config.encoder_ctc_head = True, trained with "
                    "encoder_ctc_weight > 0)."
                )
            num_prompt = batch["encoder_input_tokens"].shape[1]
            ctc_logits = self.network.apply(
                {"params": params}, encoded, num_prompt, method=Transformer.encoder_ctc_logits
            )
            log_probs = ctc.frame_log_probs(ctc_logits, mask[:, num_prompt:])
            tokens, scores = ctc.joint_greedy_search(
                step,
                cache,
                log_probs,
                max_decode_length,
                ctc_weight=cfg.ctc_weight,
                num_candidates=cfg.ctc_candidates,
                eos_id=self.eos_id,
            )
        else:
            tokens, scores = decoding.greedy_search(
                step,
                cache,
                batch_size,
                max_decode_length,
                eos_id=self.eos_id,
                return_log_probs=True,
            )
        return tokens, {"scores": scores}


def _is_self_attention_cache(path: tuple) -> bool:
    """Cross-attention keys/values are the same for all beams of an example."""
    return not any(getattr(k, "key", None) == "encoder_decoder_attention" for k in path)


def _expand_self_attention_cache(cache: Any, num_beams: int) -> Any:
    """Repeats the self-attention caches for the beams (``expand_to_beams``); the
    cross-attention keys/values and the cache index stay as they are."""

    def expand(path: tuple, x: Array) -> Array:
        if getattr(x, "ndim", 0) == 0 or not _is_self_attention_cache(path):
            return x
        return decoding.expand_to_beams(x, num_beams)

    return jax.tree_util.tree_map_with_path(expand, cache)
