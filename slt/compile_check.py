r"""Compile a training job's train and decode steps for a TPU pod, GPU hosts or CPU
devices, and tell whether they fit in each chip's memory; for TPU and GPU chips also
predict each step's time, the train step's MFU and which term (compute, HBM traffic,
collectives) bounds it (docs/fit.md). Nothing is allocated.

  python -m slt.compile_check --topology=v5e-256 \
      --gin_file=models/byt5_xl.gin --gin_file=partitioning/fsdp.gin \
      --gin.train.batch_size=256 --gin.train.task_feature_lengths=... \
      --json_out=/tmp/xl_v5e256.json

Takes the same gin files and bindings as `python -m slt.train` (MODEL_DIR and the
task need a value but are not read) plus:

  --topology=T       v4-N, v5p-N (TensorCores), v5e-N / v5litepod-N, v6e-N (chips);
                     h100-G, a100-G, h200-G (one host of G GPUs) or h100-HxG (H hosts
                     of G GPUs); cpu-N (fake CPU devices)
  --num_slices=S     S TPU slices of T joined over the data-centre network (multislice;
                     set slt.PartitioningConfig.dcn_mesh_shape, e.g. the NUM_SLICES of
                     partitioning/multislice.gin, to match)
  --json_out=PATH    also write the report as JSON
  --skip_decode      compile only the train step, not the eval jobs' decode steps
  --hbm_gib=G        judge the fit against G GiB per chip instead of the chip's HBM
                     (what a CPU device has, or room kept for something else)
  --always_compile   compile a step even when its inputs (parameters, optimizer
                     state, batch) alone, as one chip holds them, exceed the HBM;
                     without it such a step is reported as not fitting, uncompiled

The mesh is built from the topology's devices as `slt.train` builds it from real ones
(`slt.train.build_training`), and the compiled function is that job's
`Trainer.train_step`; the decode steps are the eval jobs' jitted `predict_fn`
(greedy and beam search) at `slt.EvalConfig.batch_size`. Exit status: 0 when every
step fits, 1 when one does not (the report names the gin bindings that would help),
2 for bad input. TPU topologies need `pip install -e ".[tpu]"`, GPU topologies jax's
CUDA plugin (`pip install -e ".[gpu-compile]"`; no GPU, driver or CUDA needed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from slt import gin_utils, storage
from slt.evaluation import evaluate as evaluate_lib

DEFAULT_EVAL_BATCH_SIZE = 64


def _parse_own_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--topology", default=None)
    parser.add_argument("--num_slices", type=int, default=1)
    parser.add_argument("--json_out", default=None)
    parser.add_argument("--skip_decode", action="store_true")
    parser.add_argument("--hbm_gib", type=float, default=None)
    parser.add_argument("--always_compile", action="store_true")
    return parser.parse_known_args(list(argv))


def _force_cpu_devices(topology: str, num_slices: int) -> None:
    """Fake CPU devices for `cpu-N` (before JAX starts), and the CPU as the default
    backend next to compile-only TPU devices."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    name = topology.strip().lower()
    if name.startswith("cpu-") and name[4:].isdigit():
        count = int(name[4:]) * num_slices
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}"


@dataclasses.dataclass(frozen=True)
class CheckConfig:
    """The job's configs as `slt.train.train` receives them (from gin)."""

    task_feature_lengths: Mapping[str, int]
    batch_size: int
    num_microbatches: int
    configs: Mapping[str, Any]  # network_config, optimizer_config, ... by parameter name


def train_arguments() -> CheckConfig:
    """`slt.train.train`'s arguments from the parsed gin config (defaults filled in)."""
    import inspect

    import gin

    from slt import train as train_job

    bound = gin.get_bindings("train")
    args = {}
    for name, param in inspect.signature(train_job.train).parameters.items():
        value = bound.get(name, param.default)
        args[name] = value
    for name in ("task_feature_lengths", "batch_size"):
        if args[name] is gin.REQUIRED:
            raise ValueError(
                f"train.{name} is not set; bind it in a gin file or --gin.train.{name}="
            )
    configs = {n: v for n, v in args.items() if n.endswith("_config")}
    return CheckConfig(
        dict(args["task_feature_lengths"]),
        int(args["batch_size"]),
        int(args["num_microbatches"]),
        configs,
    )


def analytic_train_flops(network_config: Any, params: Any, batch_shapes: Mapping) -> float:
    """The model's FLOPs per training step: 6 x (weights used per token) x tokens for
    the encoder and the decoder, plus the attention matmuls (forward and backward), no
    recomputation. Embedding lookups are not counted; the output projection is."""
    import jax

    cfg = network_config
    flat = jax.tree_util.tree_flatten_with_path(params)[0]

    def weights(part: str) -> int:
        total = 0
        for path, leaf in flat:
            keys = jax.tree_util.keystr(path)
            if part in keys and leaf.ndim >= 2 and "relpos" not in keys and "embedder" not in keys:
                total += math.prod(leaf.shape)
        return total

    batch, enc_len = batch_shapes["encoder_input_tokens"]
    enc_len += batch_shapes["encoder_landmarks"][1] // max(cfg.landmark_stride, 1)
    dec_len = batch_shapes["decoder_target_tokens"][1]
    logits = cfg.vocab_size * cfg.emb_dim  # tied embeddings still do this matmul
    dense = weights("encoder") * enc_len + weights("decoder") * dec_len
    if cfg.logits_via_embedding:
        dense += logits * dec_len
    attn = cfg.num_heads * cfg.head_dim
    # QK^T and AV: 2 matmuls of 2*L_q*L_k*attn FLOPs each per example and layer.
    attention = (
        4
        * attn
        * (
            cfg.num_encoder_layers * enc_len * enc_len
            + cfg.num_decoder_layers * (dec_len * dec_len + dec_len * enc_len)
        )
    )
    return float(batch * (6 * dense + 3 * attention))


def _compile_step(
    lowerable: Any,
    args: tuple,
    topo: Any,
    always_compile: bool = False,
    predict: Any = None,
) -> dict[str, Any]:
    """The step report of `lowerable` compiled for `args` on the topology's chips.

    The step's inputs stay live through it, so their bytes per chip bound the peak from
    below: when they alone exceed the HBM, the compile (minutes for a big model) would
    only confirm what the shardings say, and it is skipped unless `always_compile`. A
    TPU compile that runs out of HBM raises instead of returning a program; its message
    still says how much the temporaries needed, and that makes the report.
    `predict(hlo_text, report)`, when given, returns the compiled step's `step_time`."""
    import jax

    from slt.performance import compiled as compiled_lib

    input_bytes = compiled_lib.bytes_per_chip(args)
    hbm = topo.chip.hbm_bytes
    if hbm and input_bytes > hbm and not always_compile:
        return compiled_lib.uncompiled_step_report(input_bytes, topo.chip)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        compiled = lowerable.lower(*args).compile()
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        report = compiled_lib.out_of_memory_step_report(str(error), input_bytes, topo.chip)
    else:
        report = compiled_lib.step_report(
            compiled,
            num_chips=topo.num_chips,
            chip=topo.chip,
            compile_seconds=time.perf_counter() - started,
        )
        if predict is not None:
            report["step_time"] = predict(compiled.as_text(), report)
    report["compile_seconds"] = round(time.perf_counter() - started, 1)
    # CPU seconds of this process: on a loaded machine they say more than wall time.
    report["compile_cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    return report


def check(
    topology_name: str,
    num_slices: int = 1,
    decode: bool = True,
    config: CheckConfig | None = None,
    hbm_bytes: int | None = None,
    always_compile: bool = False,
) -> dict[str, Any]:
    """Compiles the job's train step (and decode steps) for the topology; the report.

    A step whose inputs (parameters, optimizer state, batch) alone exceed a chip's HBM
    is not compiled unless `always_compile`: its report says so and gives that lower
    bound as the peak."""
    import jax

    from slt import train as train_job
    from slt.evaluation import predict, trained_model
    from slt.performance import compiled as compiled_lib
    from slt.performance import step_time
    from slt.training import checkpoints, partitioning

    config = config or train_arguments()
    c = config.configs
    partitioning_config = c["partitioning_config"]
    gpu = compiled_lib.is_gpu_topology(topology_name)
    if num_slices > 1 and partitioning_config.dcn_mesh_shape is None and not gpu:
        raise ValueError(
            f"--num_slices={num_slices} but slt.PartitioningConfig.dcn_mesh_shape is not "
            "set; add --gin_file=partitioning/multislice.gin with "
            f"--gin.NUM_SLICES={num_slices}."
        )
    topo = compiled_lib.topology(topology_name, num_slices)
    if hbm_bytes is not None:
        topo = dataclasses.replace(topo, chip=dataclasses.replace(topo.chip, hbm_bytes=hbm_bytes))
    setup = train_job.build_training(
        task_feature_lengths=config.task_feature_lengths,
        batch_size=config.batch_size,
        num_microbatches=config.num_microbatches,
        network_config=c["network_config"],
        optimizer_config=c["optimizer_config"],
        loss_config=c["loss_config"],
        decoding_config=c["decoding_config"],
        partitioning_config=partitioning_config,
        devices=topo.devices,
    )
    trainer = setup.trainer
    eval_config = c.get("eval_config") or evaluate_lib.EvalConfig()
    report: dict[str, Any] = {
        "topology": topology_name,
        "num_slices": num_slices,
        "platform": topo.platform,
        "chip": topo.chip.name,
        "num_chips": topo.num_chips,
        "num_hosts": topo.num_hosts,
        "mesh": dict(setup.mesh.shape),
        "batch_size": config.batch_size,
        "num_microbatches": config.num_microbatches,
        "batch_shapes": {k: list(v) for k, v in setup.batch_shapes.items()},
        "num_params": int(
            sum(math.prod(x.shape) for x in jax.tree.leaves(trainer.abstract_state.params))
        ),
    }
    if decode:
        partitioning.check_batch_size(eval_config.batch_size, trainer.batch_sharding)
    state = checkpoints.abstract_with_shardings(trainer.abstract_state, trainer.state_sharding)
    batch = compiled_lib.abstract_batch(setup.batch_shapes, trainer.batch_sharding)
    rng = jax.ShapeDtypeStruct(
        (), jax.random.key(0).dtype, sharding=partitioning.replicated(setup.mesh)
    )
    layout = step_time.DeviceLayout.from_mesh(setup.mesh)
    rates = topo.rates
    model_flops = analytic_train_flops(
        c["network_config"], trainer.abstract_state.params, setup.batch_shapes
    )

    def predictor(model_total: float | None, tokens: float) -> Any:
        if rates is None:
            return None

        def predict(hlo_text: str, step: Mapping[str, Any]) -> dict[str, Any]:
            return step_time.predict(
                hlo_text,
                layout,
                rates,
                xla_flops_per_chip=step["flops_per_step"]["xla_per_chip"],
                model_flops_total=model_total,
                tokens_per_step=tokens,
            )

        return predict

    target_tokens = math.prod(setup.batch_shapes["decoder_target_tokens"])
    with jax.set_mesh(setup.mesh):
        train = _compile_step(
            trainer.train_step,
            (state, batch, rng),
            topo,
            always_compile,
            predictor(model_flops, target_tokens),
        )
        flops = train["flops_per_step"]
        flops["analytic_total"] = model_flops
        if train.get("compiled", True):
            train["collective_need"] = _collective_need(
                train["collectives"],
                trainer.abstract_state.params,
                trainer.params_sharding,
                c["network_config"].dtype,
            )
        if flops.get("xla_counts_loop_bodies_once") and topo.chip.peak_flops:
            # XLA's count misses all but one run of each loop body; the model's own
            # FLOPs are then the larger lower bound.
            per_chip = max(flops["xla_per_chip"], flops["analytic_total"] / topo.num_chips)
            train["step_seconds_bound"] = per_chip / topo.chip.peak_flops
        report["train_step"] = train
        if decode:
            report["decode_steps"] = {}
            shapes = trained_model.batch_shapes(config.task_feature_lengths, eval_config.batch_size)
            eval_batch = compiled_lib.abstract_batch(shapes, trainer.batch_sharding)
            beams = c["decoding_config"].num_beams
            for method, options in (
                ("greedy", {"decode_method": "greedy"}),
                (f"beam{beams}", {"decode_method": "beam", "num_beams": beams, "ctc_weight": 0.0}),
            ):
                fn = predict.make_predict_fn(
                    setup.model,
                    trainer.params_sharding,
                    trainer.batch_sharding,
                    decode_options=options,
                )
                tokens = math.prod(shapes["decoder_target_tokens"])
                step = _compile_step(
                    fn, (state.params, eval_batch), topo, always_compile, predictor(None, tokens)
                )
                step["batch_size"] = eval_config.batch_size
                report["decode_steps"][method] = step
    steps = [report["train_step"], *report.get("decode_steps", {}).values()]
    report["fits"] = all(s["fits"] for s in steps)
    report["hbm_bytes"] = topo.chip.hbm_bytes
    for key in ("peak_bytes", "argument_bytes", "temp_bytes", "output_bytes"):
        report[key] = report["train_step"][key]
    report["flops_per_step"] = report["train_step"]["flops_per_step"]
    report["collectives"] = report["train_step"]["collectives"]
    report["compile_seconds"] = report["train_step"]["compile_seconds"]
    report["compile_cpu_seconds"] = report["train_step"]["compile_cpu_seconds"]
    report["step_time"] = report["train_step"].get("step_time")
    report["predicted_mfu"] = report["predicted_mfu_no_overlap"] = None
    if report["step_time"]:
        report["predicted_mfu"] = step_time.mfu(
            model_flops, report["step_time"]["predicted_s"], topo.num_chips, rates.peak_flops
        )
        # The same with no overlap at all: the MFU a real step lies above.
        report["predicted_mfu_no_overlap"] = step_time.mfu(
            model_flops, report["step_time"]["no_overlap_s"], topo.num_chips, rates.peak_flops
        )
    if rates is None:
        report["step_time_missing"] = (
            f"no step time: {topo.chip.name} devices have no public rates to predict with"
        )
    elif not report["train_step"].get("compiled", True):
        report["step_time_missing"] = "no step time: the train step was not compiled"
    if not report["fits"]:
        report["advice"] = advice(report, config)
    return report


def _collective_need(
    compiled: Mapping[str, Mapping[str, int]], params: Any, shardings: Any, dtype: str
) -> dict[str, Any]:
    """The train step's weight collectives against what FSDP needs (bytes of results per
    chip per step): weights gathered twice in the compute dtype, gradients
    reduce-scattered once in float32."""
    import numpy as np

    from slt.performance import step_time

    need = step_time.sharding_need(params, shardings, np.dtype(dtype).itemsize)
    got = {k: compiled[k]["bytes"] for k in ("all-gather", "reduce-scatter", "all-reduce")}
    return {
        "need": need,
        "compiled": got,
        "gather_ratio": got["all-gather"] / need["all-gather"] if need["all-gather"] else None,
    }


def advice(report: Mapping[str, Any], config: CheckConfig) -> list[str]:
    """Gin bindings that would make the train step fit, with estimated peaks."""
    from slt.performance import compiled as compiled_lib
    from slt.training import partitioning

    gib = compiled_lib.GIB
    step = report["train_step"]
    c = config.configs
    net, part = c["network_config"], c["partitioning_config"]
    if step.get("temp_bytes") is None:
        # Not compiled and nothing known of the activations: only the inputs' split helps.
        return _advice_for_inputs(report, tuple(part.logical_axis_rules))
    fixed = step["argument_bytes"] + step["output_bytes"] - step["alias_bytes"]
    temp, hbm = step["temp_bytes"], report["hbm_bytes"]
    chips = report["num_chips"]
    out = []

    def est(peak: float) -> str:
        verdict = "fits" if peak <= hbm else "still over"
        return f"~{peak / gib:.1f} GiB per chip, {verdict}"

    rules = tuple(part.logical_axis_rules)
    if rules in (
        tuple(partitioning.DATA_PARALLEL_RULES),
        tuple(partitioning.TENSOR_PARALLEL_RULES),
    ):
        # Parameters and optimizer state are (mostly) replicated: FSDP splits them.
        out.append(
            "FSDP: --gin_file=partitioning/fsdp.gin (or fsdp_tensor_parallel.gin) "
            f"splits parameters and optimizer state over the chips ({est(fixed / chips + temp)})"
        )
    if net.remat_policy == "none":
        out.append(
            'recompute activations: --gin.slt.T5Config.remat_policy=\\"full\\" (or '
            '\\"minimal\\"); most of the '
            f"{temp / gib:.1f} GiB of temporaries are saved activations"
        )
    for micro in (2, 4, 8):
        m = config.num_microbatches * micro
        if config.batch_size % m == 0:
            out.append(
                f"microbatches: --gin.train.num_microbatches={m} (activations ~1/{micro}: "
                f"{est(fixed + temp / micro)})"
            )
            break
    per_chip = config.batch_size / max(
        report["mesh"].get("data", 1) * report["mesh"].get("fsdp", 1), 1
    )
    if per_chip >= 2:
        out.append(
            f"a smaller per-chip batch: --gin.train.batch_size={config.batch_size // 2} "
            f"({per_chip / 2:g} rows per data shard; {est(fixed + temp / 2)}) or twice the chips"
        )
    if not net.scan_layers:
        out.append(
            "--gin.slt.T5Config.scan_layers=True: compiles each stack once (faster compiles, "
            "and with remat_policy the saved activations of one layer at a time)"
        )
    if rules == tuple(partitioning.FSDP_RULES):
        out.append(
            "2-D partitioning: --gin_file=partitioning/fsdp_tensor_parallel.gin "
            "--gin.MODEL_PARALLEL=4 also splits heads, MLP and vocabulary"
        )
    return out


def _advice_for_inputs(report: Mapping[str, Any], rules: tuple) -> list[str]:
    """What would help a train step whose inputs alone overflow a chip: only splitting
    the parameters and optimizer state over more chips does (activations come on top)."""
    from slt.performance import compiled as compiled_lib
    from slt.training import partitioning

    gib = compiled_lib.GIB
    inputs, hbm, chips = (
        report["train_step"]["argument_bytes"],
        report["hbm_bytes"],
        report["num_chips"],
    )
    out = []
    if rules in (
        tuple(partitioning.DATA_PARALLEL_RULES),
        tuple(partitioning.TENSOR_PARALLEL_RULES),
    ):
        split = inputs / chips
        out.append(
            "FSDP: --gin_file=partitioning/fsdp.gin (or fsdp_tensor_parallel.gin) "
            "splits parameters and optimizer state over the chips (their "
            f"{inputs / gib:.1f} GiB per chip become ~{split / gib:.2f} GiB; then run the "
            "check again for the activations)"
        )
    else:
        need = math.ceil(inputs * chips / hbm)
        out.append(
            f"more chips: split this way the inputs need more than {need} chips of "
            f"{hbm / gib:.0f} GiB before any activation (a larger topology or --num_slices)"
        )
    return out


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a table for people."""
    from slt.performance import compiled as compiled_lib

    gib = compiled_lib.GIB

    def g(n: int | None) -> str:
        return "-" if n is None else f"{n / gib:.2f} GiB"

    hosts = report.get("num_hosts", 1)
    where = f"{hosts} host(s), " if report.get("platform") == "gpu" else ""
    lines = [
        f"topology {report['topology']} x {report['num_slices']} slice(s): {where}"
        f"{report['num_chips']} x {report['chip']}, mesh {report['mesh']}",
        f"model: {report['num_params'] / 1e9:.3f}B parameters; global batch "
        f"{report['batch_size']}, {report['num_microbatches']} microbatch(es); "
        f"shapes {report['batch_shapes']}",
        "",
    ]
    steps = {"train step": report["train_step"]}
    for name, step in report.get("decode_steps", {}).items():
        steps[f"decode {name} (batch {step['batch_size']})"] = step
    header = f"{'per chip':34s}" + "".join(f"{n:>26s}" for n in steps)
    lines.append(header)
    rows = [
        ("arguments (params + opt state)", "argument_bytes"),
        ("outputs", "output_bytes"),
        ("  of which donated (aliased)", "alias_bytes"),
        ("temporaries", "temp_bytes"),
        ("generated code", "generated_code_bytes"),
        ("peak", "peak_bytes"),
        ("HBM", "hbm_bytes"),
        ("headroom", "headroom_bytes"),
    ]
    for label, key in rows:
        lines.append(f"{label:34s}" + "".join(f"{g(s.get(key)):>26s}" for s in steps.values()))
    lines.append(
        f"{'fits':34s}" + "".join(f"{('yes' if s['fits'] else 'NO'):>26s}" for s in steps.values())
    )
    lines.append(
        f"{'compile time':34s}"
        + "".join(f"{s['compile_seconds']:>24.1f} s" for s in steps.values())
    )
    lines.append(f"train step compile: {report['train_step']['compile_cpu_seconds']:.1f} CPU s")
    for name, step in steps.items():
        if not step.get("compiled", True):
            hint = (
                ""
                if step.get("compiler_out_of_memory")
                else " (--always_compile compiles it anyway)"
            )
            lines.append(f"{name} not compiled: {step['not_compiled_because']}{hint}")
    flops = report["train_step"]["flops_per_step"]
    if flops["xla_total"] is None:
        lines += [
            "",
            f"train step FLOPs: model (analytic, no recomputation) "
            f"{flops['analytic_total']:.3e} total; XLA's count: none (not compiled)",
        ]
    else:
        lines += [
            "",
            f"train step FLOPs: XLA {flops['xla_per_chip']:.3e} per chip, "
            f"{flops['xla_total']:.3e} total; model (analytic, no recomputation) "
            f"{flops['analytic_total']:.3e} total (XLA / model = "
            f"{flops['xla_total'] / max(flops['analytic_total'], 1):.2f})",
        ]
    if flops.get("xla_counts_loop_bodies_once"):
        lines.append(
            "  (the program runs loops: scanned layers or microbatches. XLA counts each loop "
            "body once, so its figure is short of the FLOPs a step runs)"
        )
    if "step_seconds_bound" in report["train_step"]:
        lines.append(
            f"train step time >= {report['train_step']['step_seconds_bound']:.3f} s "
            "(a bound: the step's FLOPs per chip at the chip's peak bf16 rate, nothing "
            "else)"
        )
    lines += _step_time_lines(report, steps)
    need = report["train_step"].get("collective_need")
    if need and need["gather_ratio"] is not None:
        gib = 2**30
        lines.append(
            f"weights gathered: {need['compiled']['all-gather'] / gib:.3f} GiB compiled, "
            f"{need['need']['all-gather'] / gib:.3f} GiB needed (twice each split weight "
            f"in the compute dtype): {need['gather_ratio']:.1f}x; gradients: "
            f"{need['compiled']['reduce-scatter'] / gib:.3f} GiB reduce-scattered, "
            f"{need['need']['reduce-scatter'] / gib:.3f} GiB needed, "
            f"{need['compiled']['all-reduce'] / gib:.3f} GiB all-reduced"
        )
    lines.append(
        "collectives per train step, per chip:"
        + ("" if report["train_step"].get("compiled", True) else " none known (not compiled)")
    )
    for kind, c in report["train_step"]["collectives"].items():
        lines.append(f"  {kind:20s} {c['count']:6d} ops {c['bytes'] / gib:10.3f} GiB")
    if report.get("platform") == "gpu":
        # JAX's GPU allocator takes 75% of the memory at start-up unless told otherwise.
        share = report["peak_bytes"] / report["hbm_bytes"]
        lines.append(
            f"the train step's peak is {share:.0%} of the GPU's memory; JAX preallocates "
            "75% of it unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise (judge against "
            "that share with --hbm_gib)"
        )
    lines.append("")
    if report["fits"]:
        lines.append("verdict: FITS")
    else:
        lines.append("verdict: DOES NOT FIT. What would help (gin bindings):")
        lines += [f"  - {a}" for a in report.get("advice", [])]
    return "\n".join(lines)


def _step_time_lines(report: Mapping[str, Any], steps: Mapping[str, Any]) -> list[str]:
    """The predicted step times, MFU and the collectives by link, mesh axes and dtype."""
    from slt.performance import step_time

    if not report.get("step_time"):
        return [report["step_time_missing"]] if report.get("step_time_missing") else []
    lines = [
        "predicted step times (from the compiled program and the chip's public rates, not "
        "measured; " + step_time.OVERLAP_ASSUMPTION + "):"
    ]
    for name, step in steps.items():
        if step.get("step_time"):
            train_step = name == "train step"
            mfu = report["predicted_mfu"] if train_step else None
            floor = report.get("predicted_mfu_no_overlap") if train_step else None
            lines.append(f"  {name}: {step_time.summary_line(step['step_time'], mfu, floor)}")
            if note := step["step_time"].get("collectives_not_timed"):
                lines.append(f"    {note}")
    train = report["step_time"]
    if "predicted_tokens_per_s" in train:
        lines.append(
            f"  train step: {train['predicted_tokens_per_s']:,.0f} target tokens/s predicted "
            "(slt.train prints the measured tok/s)"
        )
    lines.append("train step collectives by link, mesh axes and dtype (per chip per step):")
    for row in train["collectives"]:
        seconds = "unknown" if row["seconds"] is None else f"{row['seconds'] * 1e3:.2f} ms"
        lines.append(
            f"  {row['kind']:18s} {row['dtype']:5s} {row['link']:8s} "
            f"{'x'.join(row['mesh_axes']) or '-':14s} {row['count']:6d} ops "
            f"{row['bytes'] / 2**30:9.3f} GiB, sends {row['bytes_sent'] / 2**30:9.3f} GiB, "
            f"{seconds}"
        )
    return lines


def _help() -> str:
    from slt import train as train_job

    doc = __doc__.strip()
    bindings = gin_utils.gin_help(train_job.train)
    # The options of every gin job (--gin_file, --gin.NAME, --verbosity) and train's bindings.
    return f"{doc}\n\n" + bindings[bindings.index("options:") :]


def main(argv: Sequence[str]) -> None:
    if "-h" in argv or "--help" in argv:
        gin_utils.add_cpu_xla_flags()
        sys.stdout.write(
            "usage: python -m slt.compile_check --topology=T [--num_slices=S] "
            "[--json_out=PATH] [--skip_decode] [--hbm_gib=G] [--always_compile]\n"
            "       --gin_file=FILE ... "
            "[--gin.NAME=VALUE ...] [--verbosity=LEVEL]\n\n" + _help()
        )
        raise SystemExit(0)
    own, rest = _parse_own_args(argv)
    if not own.topology:
        print(
            "usage: python -m slt.compile_check --topology=T --gin_file=FILE ...\n"
            "python -m slt.compile_check: error: --topology is required (e.g. v5e-256, "
            "v4-128, cpu-8)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    _force_cpu_devices(own.topology, own.num_slices)
    gin_utils.quiet_tensorflow()
    gin_utils.add_cpu_xla_flags()
    from slt import train as train_job
    from slt.performance import compiled as compiled_lib

    gin_utils.parse_gin_args(rest, train_job.train)
    try:
        hbm = None if own.hbm_gib is None else int(own.hbm_gib * compiled_lib.GIB)
        report = check(
            own.topology,
            own.num_slices,
            decode=not own.skip_decode,
            hbm_bytes=hbm,
            always_compile=own.always_compile,
        )
    except ValueError as error:
        print(f"ERROR: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    print(format_report(report), flush=True)
    if own.json_out:
        storage.write_text(own.json_out, json.dumps(report, indent=1))
        print(f"report written to {own.json_out}")
    raise SystemExit(0 if report["fits"] else 1)


if __name__ == "__main__":
    gin_utils.run_job(main)
