"""T5.1.1 encoder-decoder with a landmark input embedding.

The encoder input is the shared token embedding of the prompt tokens ``[B, P]``
followed, along the length axis, by a learned linear projection of the landmark frames
``[B, T, 255]`` (param ``encoder/landmark_embedder/{kernel,bias}``, logical axes
``('landmark', 'embed')`` and ``('embed',)``; map ``landmark`` to ``None`` in the axis
rules, which flax also does for names without a rule). Everything else is T5.1.1 with
T5X parameter names and shapes, so public ByT5/mT5 T5X checkpoints load by identity
(the landmark projection is the only new parameter).

Masks: each stack folds every mask and its relative position bias into ONE additive
attention bias, computed once and reused by all its layers. The decoder self-attention
is causal only: with unpacked examples padding sits after the real targets, so real
positions never see it (``decoder_target_tokens`` is accepted for interface parity and
future packing support).
"""

from __future__ import annotations

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from slt.models import layers

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Network hyperparameters (T5.1.1 defaults; sizes of ByT5/mT5 set in gin)."""

    vocab_size: int = 384  # ByT5 byte vocab padded
    emb_dim: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    head_dim: int = 64
    mlp_dim: int = 1024
    mlp_activations: tuple[str, ...] = ("gelu", "linear")
    dropout_rate: float = 0.0
    dtype: str = "float32"  # compute dtype; "bfloat16" allowed. Params always float32.
    landmark_dim: int = 255  # 85 points x 3
    # Subsampling front end: each group of `landmark_stride` consecutive frames is
    # concatenated and projected as one encoder position (1 = plain linear projection).
    landmark_stride: int = 1
    # Absolute positions of the landmark positions: "none" (T5: relative biases only) or
    # "sinusoidal" (parameter-free, added after the projection). Repeated letters or signs
    # give cross-attention identical keys; positions let the decoder tell them apart.
    landmark_positions: str = "none"
    # Optional CTC head over the landmark positions of the encoder output (joint
    # CTC/attention training, Kim et al. 2017). Off by default, so T5X checkpoints map 1:1.
    # Its param is `encoder_ctc/kernel` [embed, vocab]; the blank is the pad id 0.
    encoder_ctc_head: bool = False
    # Memory and compile-time options; neither changes the math. `scan_layers` runs each
    # stack as one `nn.scan` (compiled once, not once per layer): the layer params are
    # stacked along a leading `layers` axis under `encoder/layers` and `decoder/layers`
    # (see `stack_layers` / `unstack_layers` for the per-layer T5X layout).
    # `remat_policy` recomputes activations of each layer in the backward pass:
    # "none", "full" (save nothing), "minimal" (save only matmuls without batch
    # dimensions, i.e. weight projections) or "dots" (save every matmul output).
    scan_layers: bool = False
    remat_policy: str = "none"
    relpos_num_buckets: int = 32
    relpos_max_distance: int = 128
    logits_via_embedding: bool = False
    float32_attention_logits: bool = True

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def bias_dtype(self) -> jnp.dtype:
        """dtype of the folded attention bias: that of the attention logits."""
        return jnp.dtype(jnp.float32) if self.float32_attention_logits else self.compute_dtype


def encoder_mask(
    encoder_input_tokens: Array, encoder_landmark_mask: Array, landmark_stride: int = 1
) -> Array:
    """int32 ``[B, P+ceil(T/stride)]``, 1 at real positions: ``tokens > 0``, then frames.

    With a stride, a stacked position is real if any of its frames is.
    """
    token_mask = (encoder_input_tokens > 0).astype(jnp.int32)
    frame_mask = (jnp.asarray(encoder_landmark_mask) > 0).astype(jnp.int32)
    frame_mask = stack_frames(frame_mask[..., None], landmark_stride).max(axis=-1)
    return jnp.concatenate([token_mask, frame_mask], axis=1)


def stack_frames(frames: Array, stride: int) -> Array:
    """``[B, T, D] -> [B, ceil(T/stride), stride*D]``, zero-padding the last group."""
    if stride == 1:
        return frames
    batch, length, dim = frames.shape
    pad = -length % stride
    frames = jnp.pad(frames, ((0, 0), (0, pad), (0, 0)))
    return frames.reshape(batch, (length + pad) // stride, stride * dim)


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """float32 ``[length, dim]``: sin on the first half of the features, cos on the second,
    wavelengths from 2*pi to 10000*2*pi (Vaswani et al. 2017)."""
    half = dim // 2
    inv_freq = 1.0 / (10000.0 ** (np.arange(half) / max(half - 1, 1)))
    angles = np.arange(length)[:, None] * inv_freq[None]
    table = np.zeros((length, dim), np.float32)
    table[:, :half] = np.sin(angles)
    table[:, half : 2 * half] = np.cos(angles)
    return table


def _attention(
    cfg: T5Config, name: str, cross: bool = False
) -> layers.MultiHeadDotProductAttention:
    return layers.MultiHeadDotProductAttention(
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        dtype=cfg.compute_dtype,
        dropout_rate=cfg.dropout_rate,
        float32_logits=cfg.float32_attention_logits,
        cross_attention=cross,
        name=name,
    )


def _mlp(cfg: T5Config) -> layers.MlpBlock:
    return layers.MlpBlock(
        intermediate_dim=cfg.mlp_dim,
        activations=cfg.mlp_activations,
        dropout_rate=cfg.dropout_rate,
        dtype=cfg.compute_dtype,
        name="mlp",
    )


def _norm(cfg: T5Config, name: str) -> layers.RMSNorm:
    return layers.RMSNorm(dtype=cfg.compute_dtype, name=name)


def _relpos(cfg: T5Config) -> layers.RelativePositionBiases:
    return layers.RelativePositionBiases(
        num_heads=cfg.num_heads,
        num_buckets=cfg.relpos_num_buckets,
        max_distance=cfg.relpos_max_distance,
        dtype=cfg.compute_dtype,
        name="relpos_bias",
    )


REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
}


def _layer_stack(
    cfg: T5Config,
    layer_cls: type[nn.Module],
    num_layers: int,
    static_argnums: tuple[int, ...],
    num_scan_args: int,
) -> list[nn.Module]:
    """The layers of one stack, as T5X names them: ``layers_0..N-1``, or one scanned
    module ``layers`` (params stacked on axis 0 with logical axis ``layers``; decode
    caches stacked on axis 1, so that their batch axis stays first for beam gathers).

    ``static_argnums`` index the layer's ``__call__`` arguments with ``self`` as 0 (the
    Python flags remat must not trace); ``num_scan_args`` is the number of arguments
    after the carried activations, all the same for every layer.
    """
    if cfg.remat_policy != "none":
        if cfg.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"T5Config.remat_policy={cfg.remat_policy!r}: use 'none', "
                f"{', '.join(repr(p) for p in REMAT_POLICIES)}."
            )
        # Under scan, CSE across iterations cannot undo the remat, so it may stay on.
        layer_cls = nn.remat(
            layer_cls,
            policy=REMAT_POLICIES[cfg.remat_policy],
            prevent_cse=not cfg.scan_layers,
            static_argnums=static_argnums,
        )
    if not cfg.scan_layers:
        return [layer_cls(cfg, name=f"layers_{i}") for i in range(num_layers)]
    scanned = nn.scan(
        layer_cls,
        variable_axes={"params": 0, "cache": 1},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * num_scan_args,
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    return [scanned(cfg, scanned=True, name="layers")]


def stack_layers(params: dict) -> dict:
    """Per-layer params (``encoder/layers_0`` ...) -> the ``scan_layers`` layout
    (``encoder/layers`` with a leading layer axis). Other params are kept as they are."""
    out = dict(params)
    for stack in ("encoder", "decoder"):
        sub = dict(out.get(stack, {}))
        count = sum(1 for name in sub if re.fullmatch(r"layers_\d+", name))
        if not count:
            continue
        per_layer = [sub.pop(f"layers_{i}") for i in range(count)]
        sub["layers"] = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *per_layer)
        out[stack] = sub
    return out


def unstack_layers(params: dict) -> dict:
    """The inverse of ``stack_layers`` (a no-op for per-layer params). Works on arrays
    and on ``jax.ShapeDtypeStruct`` leaves."""
    out = dict(params)
    for stack in ("encoder", "decoder"):
        if "layers" not in out.get(stack, {}):
            continue
        sub = dict(out[stack])
        stacked = sub.pop("layers")
        count = jax.tree.leaves(stacked)[0].shape[0]
        for i in range(count):
            sub[f"layers_{i}"] = jax.tree.map(lambda x, i=i: _layer_slice(x, i), stacked)
        out[stack] = sub
    return out


def _layer_slice(x, i: int):
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=None)
    return x[i]


class EncoderLayer(nn.Module):
    config: T5Config
    scanned: bool = False  # under nn.scan: return (carry, None)

    @nn.compact
    def __call__(self, x: Array, bias: Array, enable_dropout: bool = True):
        cfg = self.config
        h = _norm(cfg, "pre_attention_layer_norm")(x)
        h = _attention(cfg, "attention")(h, h, bias, enable_dropout)
        x = x + layers.dropout(h, cfg.dropout_rate, enable_dropout)
        h = _norm(cfg, "pre_mlp_layer_norm")(x)
        h = _mlp(cfg)(h, enable_dropout)
        x = x + layers.dropout(h, cfg.dropout_rate, enable_dropout)
        x = layers.constrain(x, ("batch", "length", "embed"))
        return (x, None) if self.scanned else x


class DecoderLayer(nn.Module):
    config: T5Config
    scanned: bool = False  # under nn.scan: return (carry, None)

    @nn.compact
    def __call__(
        self,
        y: Array,
        encoded: Array,
        self_bias: Array,
        cross_bias: Array,
        enable_dropout: bool = True,
        decode: bool = False,
        cache_index: Array | None = None,
    ):
        cfg = self.config
        h = _norm(cfg, "pre_self_attention_layer_norm")(y)
        h = _attention(cfg, "self_attention")(
            h, h, self_bias, enable_dropout, decode=decode, cache_index=cache_index
        )
        y = y + layers.dropout(h, cfg.dropout_rate, enable_dropout)
        h = _norm(cfg, "pre_cross_attention_layer_norm")(y)
        h = _attention(cfg, "encoder_decoder_attention", cross=True)(
            h, encoded, cross_bias, enable_dropout, decode=decode
        )
        y = y + layers.dropout(h, cfg.dropout_rate, enable_dropout)
        h = _norm(cfg, "pre_mlp_layer_norm")(y)
        h = _mlp(cfg)(h, enable_dropout)
        y = y + layers.dropout(h, cfg.dropout_rate, enable_dropout)
        y = layers.constrain(y, ("batch", "length", "embed"))
        return (y, None) if self.scanned else y


class Encoder(nn.Module):
    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        encoder_input_tokens: Array,
        encoder_landmarks: Array,
        encoder_landmark_mask: Array,
        enable_dropout: bool = True,
    ) -> Array:
        cfg = self.config
        tokens = self.shared_embedding(encoder_input_tokens.astype(jnp.int32))
        # Frames are projected in float32 (coordinates would lose precision in bf16).
        frames = layers.Dense(
            cfg.emb_dim,
            ("landmark", "embed"),
            layers.mlp_kernel_init,
            use_bias=True,
            dtype=jnp.float32,
            name="landmark_embedder",
        )(stack_frames(jnp.asarray(encoder_landmarks, jnp.float32), cfg.landmark_stride))
        if cfg.landmark_positions == "sinusoidal":
            frames = frames + sinusoidal_positions(frames.shape[1], cfg.emb_dim)[None]
        elif cfg.landmark_positions != "none":
            raise ValueError(
                f"T5Config.landmark_positions={cfg.landmark_positions!r}: "
                "use 'none' or 'sinusoidal'."
            )
        x = jnp.concatenate([tokens, frames.astype(cfg.compute_dtype)], axis=1)
        x = layers.constrain(x, ("batch", "length", "embed"))

        # One additive bias [B, H, S, S] for the whole stack: relpos + key padding.
        length = x.shape[1]
        mask = encoder_mask(encoder_input_tokens, encoder_landmark_mask, cfg.landmark_stride)
        relpos = _relpos(cfg)(length, length, bidirectional=True)
        bias = (
            relpos.astype(cfg.bias_dtype)
            + layers.mask_to_bias(mask, cfg.bias_dtype)[:, None, None, :]
        )

        x = layers.dropout(x, cfg.dropout_rate, enable_dropout)
        for layer in _layer_stack(
            cfg, EncoderLayer, cfg.num_encoder_layers, static_argnums=(3,), num_scan_args=2
        ):
            x = layer(x, bias, enable_dropout)
        if cfg.scan_layers:
            x = x[0]
        x = _norm(cfg, "encoder_norm")(x)
        return layers.dropout(x, cfg.dropout_rate, enable_dropout)


class Decoder(nn.Module):
    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        encoded: Array,
        encoder_mask: Array,
        decoder_input_tokens: Array,
        enable_dropout: bool = True,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> Array:
        cfg = self.config
        length = decoder_input_tokens.shape[1]
        relpos = _relpos(cfg)
        cache_index = None
        if decode and self.has_variable("cache", "cache_index"):
            # One cached step: bias row for query position `cache_index` over the cache.
            if max_decode_length is None:
                raise ValueError("max_decode_length is required for cached decoding.")
            index_var = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
            cache_index = index_var.value
            index_var.value = cache_index + 1
            keys = jnp.arange(max_decode_length)
            causal = (keys <= cache_index)[None, None, None, :]
            self_bias = relpos(1, max_decode_length, False, query_index=cache_index)
        else:
            if decode:  # Cache-creation call over the full [B, max_len] input.
                self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
            causal = jnp.asarray(np.tril(np.ones((length, length), np.bool_)))[None, None]
            self_bias = relpos(length, length, False)
        self_bias = self_bias.astype(cfg.bias_dtype) + layers.mask_to_bias(causal, cfg.bias_dtype)
        cross_bias = layers.mask_to_bias(encoder_mask, cfg.bias_dtype)[:, None, None, :]

        y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
        y = layers.constrain(y, ("batch", "length", "embed"))
        y = layers.dropout(y, cfg.dropout_rate, enable_dropout)
        for layer in _layer_stack(
            cfg, DecoderLayer, cfg.num_decoder_layers, static_argnums=(5, 6), num_scan_args=6
        ):
            y = layer(y, encoded, self_bias, cross_bias, enable_dropout, decode, cache_index)
        if cfg.scan_layers:
            y = y[0]
        y = _norm(cfg, "decoder_norm")(y)
        y = layers.dropout(y, cfg.dropout_rate, enable_dropout)
        if cfg.logits_via_embedding:
            logits = self.shared_embedding.attend(y) / np.sqrt(y.shape[-1]).astype(np.float32)
        else:
            logits = layers.Dense(
                cfg.vocab_size,
                ("embed", "vocab"),
                layers.mlp_kernel_init,
                dtype=jnp.float32,
                name="logits_dense",
            )(y)
        return layers.constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class Transformer(nn.Module):
    """T5.1.1 encoder-decoder over (prompt tokens, landmark frames) -> text.

    Params: ``token_embedder``, ``encoder`` (incl. ``landmark_embedder``), ``decoder``.
    ``init`` returns ``nn.LogicallyPartitioned`` leaves; see ``slt.models.layers``.
    """

    config: T5Config

    def setup(self) -> None:
        cfg = self.config
        self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.compute_dtype)
        self.encoder = Encoder(cfg, shared_embedding=self.token_embedder)
        self.decoder = Decoder(cfg, shared_embedding=self.token_embedder)
        if cfg.encoder_ctc_head:
            self.encoder_ctc = layers.Dense(
                cfg.vocab_size, ("embed", "vocab"), layers.mlp_kernel_init, dtype=jnp.float32
            )

    def encode(
        self,
        encoder_input_tokens: Array,
        encoder_landmarks: Array,
        encoder_landmark_mask: Array,
        enable_dropout: bool = True,
    ) -> Array:
        """Encoder output ``[B, P+T, D]`` in the compute dtype."""
        return self.encoder(
            encoder_input_tokens, encoder_landmarks, encoder_landmark_mask, enable_dropout
        )

    def decode(
        self,
        encoded: Array,
        encoder_mask: Array,
        decoder_input_tokens: Array,
        enable_dropout: bool = True,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> Array:
        """float32 logits ``[B, L, V]``. With ``decode=True`` see ``init_cache`` in model.py:
        the first call (full length, empty 'cache') creates the cache, later calls take
        one token ``[B, 1]`` each and need ``max_decode_length``."""
        return self.decoder(
            encoded, encoder_mask, decoder_input_tokens, enable_dropout, decode, max_decode_length
        )

    def __call__(
        self,
        encoder_input_tokens: Array,
        encoder_landmarks: Array,
        encoder_landmark_mask: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None = None,
        enable_dropout: bool = True,
        decode: bool = False,
        return_encoder_ctc_logits: bool = False,
    ) -> Array | tuple[Array, Array]:
        """Teacher-forced float32 logits ``[B, L, V]``.

        With ``return_encoder_ctc_logits`` (needs ``encoder_ctc_head``) also the CTC
        logits of the landmark positions, float32 ``[B, ceil(T/stride), V]``.
        """
        del decoder_target_tokens  # Causal masking suffices without packing (see module doc).
        encoded = self.encode(
            encoder_input_tokens, encoder_landmarks, encoder_landmark_mask, enable_dropout
        )
        mask = encoder_mask(
            encoder_input_tokens, encoder_landmark_mask, self.config.landmark_stride
        )
        logits = self.decode(
            encoded,
            mask,
            decoder_input_tokens,
            enable_dropout,
            decode,
            max_decode_length=decoder_input_tokens.shape[1] if decode else None,
        )
        if self.is_initializing() and self.config.encoder_ctc_head:
            self.encoder_ctc_logits(encoded, encoder_input_tokens.shape[1])  # creates params
        if not return_encoder_ctc_logits:
            return logits
        return logits, self.encoder_ctc_logits(encoded, encoder_input_tokens.shape[1])

    def encoder_ctc_logits(self, encoded: Array, num_prompt_tokens: int) -> Array:
        """float32 CTC logits ``[B, S-P, V]`` of the landmark positions of ``encoded``."""
        if not self.config.encoder_ctc_head:
            raise ValueError("the network has no CTC head: set T5Config.encoder_ctc_head=True.")
        frames = encoded[:, num_prompt_tokens:]
        return layers.constrain(
            self.encoder_ctc(frames).astype(jnp.float32), ("batch", "length", "vocab")
        )
