"""Pretrained T5 weights in and out: T5X legacy checkpoints and Hugging Face safetensors.

Our parameter tree uses T5X names (``encoder/layers_0/attention/query/kernel`` ...), so a
T5X checkpoint maps by identity and a Hugging Face one through ``HF_NAME_TABLE``.

* ``read_t5x_checkpoint(step_dir)``: the legacy T5X format of the public ByT5/mT5
  releases: a msgpack ``checkpoint`` file whose large leaves are TensorStore specs of
  zarr arrays stored next to it (``target.encoder.layers_0.attention.query.kernel/``).
* ``read_hf_checkpoint(path)``: ``model.safetensors`` (or a sharded
  ``model.safetensors.index.json``) of ``T5ForConditionalGeneration`` (T5.1.1, ByT5, mT5).
* ``merge_pretrained(params, weights, source)``: puts the text weights into freshly
  initialised params; parameters with no pretrained counterpart (the landmark
  projection, the optional CTC head) keep their fresh initialisation. Any other
  difference in names or shapes raises one error that lists every mismatch.
* ``write_hf_checkpoint(params, config, out_dir)``: the text model as ``model.safetensors``
  plus a ``config.json`` that ``transformers.T5ForConditionalGeneration`` loads.
* ``write_t5x_checkpoint(params, step_dir)``: the same legacy T5X layout (params only).
* ``t5x_params_loader`` / ``hf_params_loader``: ``slt.CheckpointConfig.initial_params_loader``
  for gin (``slt.CheckpointConfig.initial_path`` names the checkpoint).

All arrays are returned as float32 numpy arrays keyed by ``/``-joined T5X paths.
Checkpoints are read and written through ``slt.storage``, so every path may be local
or ``gs://``: T5X arrays through TensorStore's own ``gcs`` store, safetensors files
through a local copy (``safe_open`` memory-maps a local file).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from slt import storage
from slt.models.network import T5Config, stack_layers, unstack_layers

log = logging.getLogger(__name__)

FlatWeights = dict[str, np.ndarray]

# Parameters of ours that no T5 checkpoint has; they keep their fresh initialisation.
NEW_PARAMETER_PREFIXES = ("encoder/landmark_embedder/", "encoder_ctc/")

# T5X path pattern -> Hugging Face PyTorch name, and whether the 2-D array is transposed
# (PyTorch Linear stores [out, in], T5X [in, out]; relpos is [heads, buckets] in T5X and
# [buckets, heads] in HF). `{i}` is a layer index. The relative position table of a stack
# lives in its block 0 in HF.
_ATTENTION = {"query": "q", "key": "k", "value": "v", "out": "o"}
_MLP = ("wi_0", "wi_1", "wi", "wo")


def _build_table() -> list[tuple[str, str, bool]]:
    table = [
        ("token_embedder/embedding", "shared.weight", False),
        (
            "encoder/relpos_bias/rel_embedding",
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            True,
        ),
        ("encoder/encoder_norm/scale", "encoder.final_layer_norm.weight", False),
        (
            "decoder/relpos_bias/rel_embedding",
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            True,
        ),
        ("decoder/decoder_norm/scale", "decoder.final_layer_norm.weight", False),
        ("decoder/logits_dense/kernel", "lm_head.weight", True),
        (
            "encoder/layers_{i}/pre_attention_layer_norm/scale",
            "encoder.block.{i}.layer.0.layer_norm.weight",
            False,
        ),
        (
            "encoder/layers_{i}/pre_mlp_layer_norm/scale",
            "encoder.block.{i}.layer.1.layer_norm.weight",
            False,
        ),
        (
            "decoder/layers_{i}/pre_self_attention_layer_norm/scale",
            "decoder.block.{i}.layer.0.layer_norm.weight",
            False,
        ),
        (
            "decoder/layers_{i}/pre_cross_attention_layer_norm/scale",
            "decoder.block.{i}.layer.1.layer_norm.weight",
            False,
        ),
        (
            "decoder/layers_{i}/pre_mlp_layer_norm/scale",
            "decoder.block.{i}.layer.2.layer_norm.weight",
            False,
        ),
    ]
    for ours, theirs in _ATTENTION.items():
        table += [
            (
                f"encoder/layers_{{i}}/attention/{ours}/kernel",
                f"encoder.block.{{i}}.layer.0.SelfAttention.{theirs}.weight",
                True,
            ),
            (
                f"decoder/layers_{{i}}/self_attention/{ours}/kernel",
                f"decoder.block.{{i}}.layer.0.SelfAttention.{theirs}.weight",
                True,
            ),
            (
                f"decoder/layers_{{i}}/encoder_decoder_attention/{ours}/kernel",
                f"decoder.block.{{i}}.layer.1.EncDecAttention.{theirs}.weight",
                True,
            ),
        ]
    for name in _MLP:
        table += [
            (
                f"encoder/layers_{{i}}/mlp/{name}/kernel",
                f"encoder.block.{{i}}.layer.1.DenseReluDense.{name}.weight",
                True,
            ),
            (
                f"decoder/layers_{{i}}/mlp/{name}/kernel",
                f"decoder.block.{{i}}.layer.2.DenseReluDense.{name}.weight",
                True,
            ),
        ]
    return table


HF_NAME_TABLE: list[tuple[str, str, bool]] = _build_table()
# Copies of `shared.weight` that HF checkpoints may also hold (tied, never separate).
HF_TIED_EMBEDDINGS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


_T5X_TO_HF = [(_pattern(a), b, t) for a, b, t in HF_NAME_TABLE]
_HF_TO_T5X = [(_pattern(b), a, t) for a, b, t in HF_NAME_TABLE]


def _translate(name: str, rules: list) -> tuple[str, bool] | None:
    for pattern, template, transpose in rules:
        match = pattern.match(name)
        if match:
            return (
                template.replace("{i}", match.group(1)) if match.groups() else template,
                transpose,
            )
    return None


def t5x_to_hf_name(path: str) -> tuple[str, bool] | None:
    """HF name of a T5X param path and whether to transpose; None if HF has none."""
    return _translate(path, _T5X_TO_HF)


def hf_to_t5x_name(name: str) -> tuple[str, bool] | None:
    """T5X path of an HF weight name and whether to transpose; None if unknown."""
    return _translate(name, _HF_TO_T5X)


# ------------------------------------------------------------------------------ helpers


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{'a/b/c': leaf}``; a TensorStore spec dict is one leaf."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and not _is_tensorstore_spec(value):
            out.update(flatten(value, path + "/"))
        else:
            out[path] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _float32(x: Any) -> np.ndarray:
    return np.asarray(x).astype(np.float32)


class WeightsMismatchError(ValueError):
    """Pretrained weights do not fit the network; the message lists every mismatch."""


@dataclasses.dataclass
class ImportReport:
    """What an import did: loaded, freshly initialised and skipped entries."""

    source: str
    loaded: list[str] = dataclasses.field(default_factory=list)
    freshly_initialised: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.source}: loaded {len(self.loaded)} arrays; freshly initialised "
            f"{len(self.freshly_initialised)} ({', '.join(self.freshly_initialised)}); "
            f"skipped {len(self.skipped)} checkpoint entries"
            + (
                f" ({', '.join(self.skipped[:5])}{' ...' if len(self.skipped) > 5 else ''})"
                if self.skipped
                else ""
            )
        )


# ------------------------------------------------------------------------ T5X (legacy)


def _is_tensorstore_spec(leaf: Any) -> bool:
    return isinstance(leaf, Mapping) and "driver" in leaf


def _array_spec(spec: Mapping[str, Any], step_dir: str) -> tuple[dict[str, Any], str]:
    """The spec with its kvstore pointed at its array directory inside ``step_dir``
    (local or ``gs://``), and that directory."""
    kvstore = dict(spec.get("kvstore") or {})
    relative = kvstore.get("path") or spec.get("path")
    if not relative:
        raise ValueError(f"TensorStore spec without a path: {dict(spec)}")
    candidates = [
        storage.join(step_dir, relative),
        storage.join(step_dir, storage.name(relative.rstrip("/"))),
    ]
    directory = next((c for c in candidates if storage.isdir(c)), candidates[-1])
    out = {k: v for k, v in spec.items() if k not in ("kvstore", "path", "metadata")}
    out["kvstore"] = storage.tensorstore_kvstore(directory)
    return out, directory


def read_t5x_checkpoint(step_dir: str) -> tuple[FlatWeights, list[str]]:
    """Params of a legacy T5X checkpoint directory, e.g. ``.../checkpoint_1000000``.

    Returns ``({t5x_path: float32 array}, skipped)``; ``skipped`` names the optimizer
    states (Adafactor accumulators and the step), which fine-tuning does not use.
    """
    import tensorstore as ts
    from flax import serialization

    path = storage.join(step_dir, "checkpoint")
    if not storage.isfile(path):
        hint = (
            " It looks like an Orbax-format T5X checkpoint; convert it with t5x or "
            "export it to Hugging Face first."
            if storage.isdir(storage.join(step_dir, "state"))
            else ""
        )
        raise FileNotFoundError(f"{path}: no T5X msgpack 'checkpoint' file in {step_dir}.{hint}")
    state = serialization.msgpack_restore(storage.read_bytes(path))
    root = state.get("optimizer", state)
    if "target" not in root:
        raise WeightsMismatchError(
            f"{path}: no 'target' params (top-level keys "
            f"{sorted(state)}); is this a T5X checkpoint?"
        )
    skipped = sorted(f"state/{k}" for k in flatten(root.get("state", {})))
    weights, errors = {}, []
    for name, leaf in flatten(root["target"]).items():
        if _is_tensorstore_spec(leaf):
            spec, local = _array_spec(leaf, step_dir)
            if not storage.isdir(local):
                errors.append(f"  {name}: array directory {local} is missing")
                continue
            array = ts.open(spec, open=True).result().read().result()
            want = (leaf.get("metadata") or {}).get("shape")
            if want is not None and list(array.shape) != list(want):
                errors.append(
                    f"  {name}: {local} holds shape {array.shape}, the "
                    f"checkpoint file says {tuple(want)}"
                )
                continue
            weights[name] = _float32(array)
        else:
            weights[name] = _float32(leaf)
    if errors:
        raise WeightsMismatchError(
            f"{step_dir}: {len(errors)} unreadable array(s):\n" + "\n".join(errors)
        )
    return weights, skipped


def write_t5x_checkpoint(
    params: Mapping[str, Any], step_dir: str, step: int = 0, dtype: str = "float32"
) -> None:
    """Writes ``params`` in the legacy T5X layout (msgpack + zarr via TensorStore).

    Every array of rank >= 1 goes to a gzip zarr directory named like T5X does
    (``target.encoder.layers_0...``, relative path in the msgpack spec); scalars stay
    inline. ``dtype`` may be ``"bfloat16"``, as in the public releases. No optimizer state.
    """
    import tensorstore as ts
    from flax import serialization

    storage.makedirs(step_dir)
    target = {}
    for name, value in flatten(unstack_layers(params)).items():
        value = np.asarray(value, np.float32)
        if value.ndim == 0:
            target[name] = value
            continue
        directory = "target." + name.replace("/", ".")
        spec = {
            "driver": "zarr",
            "dtype": dtype,
            "kvstore": {"driver": "file", "path": directory},
            "metadata": {
                "shape": list(value.shape),
                "chunks": list(value.shape),
                "compressor": {"id": "gzip", "level": 1},
            },
        }
        stored = dict(spec, kvstore=storage.tensorstore_kvstore(storage.join(step_dir, directory)))
        store = ts.open(stored, create=True, delete_existing=True).result()
        store.write(value.astype(store.dtype.numpy_dtype)).result()
        target[name] = spec
    state = {
        "version": 3,
        "optimizer": {
            "target": unflatten(target),
            "state": {"step": np.asarray(step, np.int32), "param_states": {}},
        },
    }
    # Last, so that a cut-off write leaves no `checkpoint` file that names missing arrays.
    checkpoint_file = storage.join(step_dir, "checkpoint")
    storage.write_bytes(checkpoint_file, serialization.msgpack_serialize(state))


# --------------------------------------------------------------------- Hugging Face


def _safetensors_files(path: str) -> list[str]:
    if storage.isfile(path):
        return [path]
    index = storage.join(path, "model.safetensors.index.json")
    if storage.isfile(index):
        shards = sorted(set(json.loads(storage.read_text(index))["weight_map"].values()))
        return [storage.join(path, s) for s in shards]
    single = storage.join(path, "model.safetensors")
    if storage.isfile(single):
        return [single]
    raise FileNotFoundError(
        f"{path}: no model.safetensors or model.safetensors.index.json "
        "(PyTorch .bin checkpoints are not read; re-save as safetensors)."
    )


def read_hf_checkpoint(path: str) -> tuple[FlatWeights, list[str]]:
    """Weights of a Hugging Face T5 / ByT5 / mT5 safetensors checkpoint (a directory or
    a ``.safetensors`` file), renamed to T5X paths and transposed to T5X layout.

    Returns ``(weights, skipped)``: ``skipped`` lists the tied copies of the token
    embedding (checked equal to ``shared.weight``). Unknown names raise, all listed.
    """
    from safetensors import safe_open

    raw: dict[str, np.ndarray] = {}
    for file in _safetensors_files(path):
        # One shard at a time: a gs:// shard is copied to local disk while it is read.
        with storage.local_copy(file) as local, safe_open(local, framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                raw[name] = _float32(f.get_tensor(name))
    weights, skipped, unknown = {}, [], []
    for name, value in raw.items():
        if name in HF_TIED_EMBEDDINGS and "shared.weight" in raw:
            if not np.array_equal(value, raw["shared.weight"]):
                unknown.append(
                    f"  {name}: differs from shared.weight (untied input embeddings are not T5)"
                )
            skipped.append(name)
            continue
        translated = hf_to_t5x_name(name)
        if translated is None:
            unknown.append(f"  {name} {value.shape}: no T5X counterpart")
            continue
        t5x_name, transpose = translated
        weights[t5x_name] = np.ascontiguousarray(value.T) if transpose else value
    if "shared.weight" not in raw:
        tied = [n for n in HF_TIED_EMBEDDINGS if n in raw]
        if tied:  # Only an encoder copy was saved: use it as the shared table.
            weights["token_embedder/embedding"] = raw[tied[0]]
            skipped += tied[1:]
    if unknown:
        raise WeightsMismatchError(
            f"{path}: {len(unknown)} weight(s) cannot be mapped:\n" + "\n".join(unknown)
        )
    return weights, sorted(skipped)


def hf_config(config: T5Config) -> dict[str, Any]:
    """``config.json`` for ``transformers.T5ForConditionalGeneration`` (T5.1.1 style)."""
    if tuple(config.mlp_activations) not in (("gelu", "linear"), ("relu",)):
        raise ValueError(
            f"T5Config.mlp_activations={config.mlp_activations} has no Hugging "
            "Face equivalent: use ('gelu', 'linear') or ('relu',)."
        )
    gated = len(config.mlp_activations) == 2
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.emb_dim,
        "d_kv": config.head_dim,
        "d_ff": config.mlp_dim,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "num_heads": config.num_heads,
        "relative_attention_num_buckets": config.relpos_num_buckets,
        "relative_attention_max_distance": config.relpos_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": 1e-6,
        "initializer_factor": 1.0,
        "feed_forward_proj": "gated-gelu" if gated else "relu",
        "is_encoder_decoder": True,
        # T5.1.1: separate lm_head and no d_model**-0.5 scaling of the decoder output.
        "tie_word_embeddings": bool(config.logits_via_embedding),
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "use_cache": True,
    }


def config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> T5Config:
    """A ``T5Config`` with the shape of an HF ``config.json`` (dict); ``overrides`` set
    the rest (e.g. ``dtype``, ``landmark_stride``)."""
    proj = hf.get("feed_forward_proj", "relu")
    activations = {"gated-gelu": ("gelu", "linear"), "relu": ("relu",)}.get(proj)
    if activations is None:
        raise ValueError(
            f"config.json feed_forward_proj={proj!r} is not supported: "
            "use 'gated-gelu' (T5.1.1, ByT5, mT5) or 'relu'."
        )
    return T5Config(
        vocab_size=hf["vocab_size"],
        emb_dim=hf["d_model"],
        num_heads=hf["num_heads"],
        head_dim=hf["d_kv"],
        mlp_dim=hf["d_ff"],
        num_encoder_layers=hf["num_layers"],
        num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        mlp_activations=activations,
        relpos_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relpos_max_distance=hf.get("relative_attention_max_distance", 128),
        logits_via_embedding=bool(hf.get("tie_word_embeddings", True)),
        **overrides,
    )


def write_hf_checkpoint(params: Mapping[str, Any], config: T5Config, out_dir: str) -> list[str]:
    """Writes the text parts of ``params`` as ``out_dir/model.safetensors`` and
    ``out_dir/config.json``. Returns the param paths left out (the landmark projection,
    the CTC head), which a text-only T5 has no place for."""
    from safetensors.numpy import save_file

    storage.makedirs(out_dir)
    tensors, left_out = {}, []
    for name, value in flatten(unstack_layers(params)).items():
        translated = t5x_to_hf_name(name)
        if translated is None:
            if not name.startswith(NEW_PARAMETER_PREFIXES):
                raise WeightsMismatchError(
                    f"param {name} has no Hugging Face name; add it "
                    "to slt.models.weights.HF_NAME_TABLE."
                )
            left_out.append(name)
            continue
        hf_name, transpose = translated
        value = np.asarray(value, np.float32)
        tensors[hf_name] = np.ascontiguousarray(value.T if transpose else value)
    with storage.local_output(storage.join(out_dir, "model.safetensors")) as local:
        save_file(tensors, local, metadata={"format": "pt"})
    config_json = json.dumps(hf_config(config), indent=2, sort_keys=True)
    storage.write_text(storage.join(out_dir, "config.json"), config_json)
    return sorted(left_out)


# ------------------------------------------------------------------------------ merging


def merge_pretrained(
    params: Mapping[str, Any],
    weights: Mapping[str, np.ndarray],
    source: str,
    skipped: list[str] | None = None,
) -> tuple[dict[str, Any], ImportReport]:
    """``params`` (freshly initialised, nested) with every pretrained array put in.

    Parameters under ``NEW_PARAMETER_PREFIXES`` keep their initialisation. Any param
    the weights lack, any weight the network lacks and any shape difference are all
    reported in one ``WeightsMismatchError``.
    """
    ours = flatten(params)
    report = ImportReport(source, skipped=list(skipped or []))
    problems = []
    for name in sorted(ours.keys() - weights.keys()):
        if name.startswith(NEW_PARAMETER_PREFIXES):
            report.freshly_initialised.append(name)
        else:
            problems.append(f"  missing in checkpoint: {name} {tuple(np.shape(ours[name]))}")
    for name in sorted(weights.keys() - ours.keys()):
        problems.append(f"  not in the network: {name} {tuple(weights[name].shape)}")
    for name in sorted(ours.keys() & weights.keys()):
        if tuple(np.shape(ours[name])) != tuple(weights[name].shape):
            problems.append(
                f"  shape differs: {name}: checkpoint {tuple(weights[name].shape)}"
                f", network {tuple(np.shape(ours[name]))}"
            )
    if problems:
        hint = (
            "\nUse the gin model config of the checkpoint's size (models/"
            "byt5_*.gin, mt5_*.gin) or check num_encoder_layers / num_decoder_layers."
        )
        if any("/layers/" in p for p in problems):
            hint += " Checkpoints with scanned (stacked) layers are not supported."
        raise WeightsMismatchError(
            f"{source} does not fit the network "
            f"({len(problems)} mismatch(es)):\n" + "\n".join(problems) + hint
        )
    merged = dict(ours)
    for name, value in weights.items():
        merged[name] = value.astype(np.float32)
        report.loaded.append(name)
    return unflatten(merged), report


def load_pretrained(params: Mapping[str, Any], source: str) -> tuple[dict[str, Any], ImportReport]:
    """``source``: ``"t5x:<step dir>"`` or ``"hf:<dir or .safetensors>"``."""
    kind, _, path = source.partition(":")
    if kind == "t5x":
        weights, skipped = read_t5x_checkpoint(path)
    elif kind == "hf":
        weights, skipped = read_hf_checkpoint(path)
    else:
        raise ValueError(
            f"pretrained source {source!r}: write 't5x:<checkpoint dir>' or "
            "'hf:<directory or .safetensors file>'."
        )
    return merge_pretrained(params, weights, source, skipped)


# ----------------------------------------- slt.CheckpointConfig.initial_params_loader


def _fresh_new_parameter(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The network's own initialisers for params no checkpoint has (see network.py)."""
    import jax

    from slt.models import layers

    if name.endswith("/bias"):
        return np.zeros(shape, np.float32)
    # crc32, not hash(): every host must draw the same values.
    key = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()) % (2**31))
    return np.asarray(layers.mlp_kernel_init(key, shape, np.float32))


def _loader(source: str, abstract_params: Any, seed: int) -> Any:
    # Checkpoints hold one entry per layer; a `scan_layers` network stacks them.
    scanned = "layers" in abstract_params.get("encoder", {})
    merged, report = load_pretrained(unstack_layers(abstract_params), source)
    flat = flatten(merged)
    for name in report.freshly_initialised:
        flat[name] = _fresh_new_parameter(name, tuple(flat[name].shape), seed)
    log.info("%s", report.summary())
    params = unflatten(flat)
    return stack_layers(params) if scanned else params


def t5x_params_loader(path: str, abstract_params: Any, seed: int = 0) -> Any:
    """``slt.CheckpointConfig.initial_params_loader`` for a legacy T5X checkpoint
    directory: text weights from ``path``, the landmark projection (and CTC head) freshly
    initialised."""
    return _loader(f"t5x:{path}", abstract_params, seed)


def hf_params_loader(path: str, abstract_params: Any, seed: int = 0) -> Any:
    """``slt.CheckpointConfig.initial_params_loader`` for a Hugging Face safetensors
    checkpoint."""
    return _loader(f"hf:{path}", abstract_params, seed)
