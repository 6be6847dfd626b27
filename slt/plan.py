r"""Plan a training run: which pod slice, rule set and microbatch count cost least.

  python -m slt.plan --steps=100000 --topologies=v5e-256,v5p-128,v4-128 \
      --gin_file=models/byt5_xl.gin --gin.slt.T5Config.scan_layers=True \
      --gin.train.batch_size=256 \
      --gin.train.task_feature_lengths='{"landmarks": 256, "inputs": 32, "targets": 256}'

For every topology x rule set (`--rules`, default dp, fsdp, fsdp_tp4) the plan first
computes a lower bound on the step time that needs no compile: the model's FLOPs per
chip at the chip's peak, and the weight traffic the rule set cannot avoid (FSDP gathers
every weight twice per step, data parallelism all-reduces every gradient) at the chip's
fast-link rate. It then compiles the candidates in the order of that bound's
chip-hours (`python -m slt.compile_check` in a subprocess each, the report cached in
`--plan_dir`), and stops once no candidate left can beat the best compiled one. A
candidate that does not fit is compiled again with twice the microbatches, up to
`--max_microbatches`. The ranking is by predicted chip-hours for `--steps` steps:
predicted step time (docs/fit.md, "Predicted step time and MFU") x chips x steps.

With `--plan_dir=bench/fit_table` the fit table's compiled rows (its `results.json`)
serve as the cache for the configurations they cover (the same names). Every figure is a
prediction from a compiled program and public chip rates, not a measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from slt import gin_utils, storage

# Rule sets a plan tries: the gin files (under slt/gin) that select them.
RULE_SETS = {
    "dp": ["--gin_file=partitioning/data_parallel.gin"],
    "fsdp": ["--gin_file=partitioning/fsdp.gin"],
    "fsdp_tp4": ["--gin_file=partitioning/fsdp_tensor_parallel.gin", "--gin.MODEL_PARALLEL=4"],
}
MODEL_PARALLEL = {"dp": 1, "fsdp": 1, "fsdp_tp4": 4}
DEFAULT_TOPOLOGIES = ("v5e-256", "v5p-128", "v4-128")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One configuration to compile, and what is known of it before compiling."""

    topology: str
    rules: str
    microbatches: int
    chips: int
    lower_bound_s: float

    def name(self, model: str, batch: int, scanned: bool) -> str:
        """The fit table's row name for the same configuration (bench/fit_table.py)."""
        name = f"{model}-{self.topology}-{self.rules}"
        name += "-scan" if scanned else ""
        name += f"-b{batch}" if batch != 256 else ""
        return name + (f"-mb{self.microbatches}" if self.microbatches > 1 else "")


def lower_bound_s(model_flops: float, num_params: int, rules: str, chips: int, rates: Any) -> float:
    """Seconds per step that no program of this rule set can beat on these chips: the
    model's FLOPs at peak, or the weight traffic the sharding implies over the fast
    links at the rate of a group spread over every torus dimension."""
    compute = model_flops / (chips * rates.peak_flops)
    link = rates.fast_send_bandwidth(max(rates.torus_dims, 1))
    if link is None:
        return compute
    model_parallel = MODEL_PARALLEL[rules]
    group = chips // model_parallel
    share = (group - 1) / group if group > 1 else 0.0
    if rules == "dp":
        # Every chip all-reduces every gradient (at least in bf16): 2 (n-1)/n of it.
        sent = 2 * share * num_params * 2
    else:
        # Each weight gathered twice in bf16: (n-1)/n of it sent per gather.
        sent = 2 * share * num_params * 2 / model_parallel
    return max(compute, sent / link)


def _chip_hours(step_s: float, chips: int, steps: int) -> float:
    return step_s * chips * steps / 3600


def _cached(path: str, expect: Mapping[str, Any], table: Mapping[str, Any]) -> dict | None:
    """A compile report for this candidate from an earlier plan or the fit table's
    `table` (its results.json, keyed by the same names), if it matches (batch shapes,
    microbatches, parameters) and has a step-time model."""
    if storage.exists(path):
        report = json.loads(storage.read_text(path))
    else:
        report = table.get(storage.name(path).removesuffix(".json"))
        if not report or report.get("status") != "compiled":
            return None
    train = report.get("train_step", {})
    same = all(report.get(k) == v for k, v in expect.items())
    if not same or ("step_time" not in train and train.get("compiled", True)):
        return None
    return report


def _compile(
    candidate: Candidate, args: Sequence[str], path: str, timeout_s: int
) -> tuple[dict | None, str]:
    command = [
        sys.executable,
        "-m",
        "slt.compile_check",
        f"--topology={candidate.topology}",
        "--skip_decode",
        f"--json_out={path}",
        *args,
        *RULE_SETS[candidate.rules],
        f"--gin.train.num_microbatches={candidate.microbatches}",
    ]
    log_path = path.removesuffix(".json") + ".log"
    # local: local_output's file takes the subprocess's output (a bucket gets it after)
    with storage.local_output(log_path) as local_log, open(local_log, "w") as log:
        try:
            result = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            result = None
    if result is None:
        return None, f"not compiled: stopped after {timeout_s} s (log {log_path})"
    if result.returncode not in (0, 1) or not storage.exists(path):
        text = storage.read_text(log_path)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR:")]
        why = (errors or lines[-1:] or ["?"])[0]
        return None, f"failed (exit {result.returncode}): {why[:300]}"
    return json.loads(storage.read_text(path)), "compiled"


def _row(candidate: Candidate, report: dict | None, status: str, steps: int) -> dict:
    row = {
        "topology": candidate.topology,
        "rules": candidate.rules,
        "microbatches": candidate.microbatches,
        "chips": candidate.chips,
        "lower_bound_s": candidate.lower_bound_s,
        "lower_bound_chip_hours": _chip_hours(candidate.lower_bound_s, candidate.chips, steps),
        "status": status,
    }
    if report is None:
        return row
    train = report["train_step"]
    timing = train.get("step_time") or {}
    row.update(
        mesh=report["mesh"],
        fits=report["fits"],
        peak_gib=report["peak_bytes"] / 2**30,
        hbm_gib=(report["hbm_bytes"] or 0) / 2**30,
    )
    if timing.get("predicted_s"):
        row.update(
            predicted_s=timing["predicted_s"],
            bound_by=timing["bound_by"],
            compute_s=timing["compute_s"],
            memory_s=timing["memory_s"],
            collectives_s=timing["collectives_s"],
            predicted_mfu=report.get("predicted_mfu"),
            no_overlap_s=timing["no_overlap_s"],
            mfu_no_overlap=(report.get("predicted_mfu") or 0)
            * timing["predicted_s"]
            / timing["no_overlap_s"],
            chip_hours=_chip_hours(timing["predicted_s"], candidate.chips, steps),
        )
    return row


def plan(
    args: Sequence[str],
    topologies: Sequence[str],
    rules: Sequence[str],
    steps: int,
    plan_dir: str,
    max_microbatches: int = 8,
    max_compiles: int = 12,
    timeout_s: int = 3600,
) -> dict[str, Any]:
    """Compiles candidates in the order of their lower bound; the ranked rows."""
    import jax

    from slt import compile_check
    from slt import train as train_job
    from slt.evaluation import trained_model
    from slt.models import model as model_lib
    from slt.models import network
    from slt.performance import compiled as compiled_lib

    if steps <= 0:
        raise ValueError(f"--steps={steps}: a plan needs a positive number of steps.")
    unknown = [r for r in rules if r not in RULE_SETS]
    if unknown:
        raise ValueError(f"--rules: unknown rule set(s) {unknown}; use {sorted(RULE_SETS)}.")
    gin_utils.parse_gin_args(list(args), train_job.train)
    config = compile_check.train_arguments()
    network_config = config.configs["network_config"]
    model_name, scanned = _model_name(args), network_config.scan_layers
    batch = config.batch_size
    shapes = trained_model.batch_shapes(config.task_feature_lengths, batch)
    model = model_lib.EncoderDecoderModel(network.Transformer(network_config))
    params = jax.eval_shape(lambda: model.init_params(jax.random.key(0), shapes))
    num_params = int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))
    model_flops = compile_check.analytic_train_flops(network_config, params, shapes)

    candidates = []
    for topology in topologies:
        topo = compiled_lib.topology(topology)  # an unknown chip fails here, before compiling
        if topo.rates is None:
            raise ValueError(
                f"topology {topology}: no public rates to predict with; plan "
                "over TPU or GPU topologies."
            )
        chips = topo.num_chips
        for rule in rules:
            batch_ways = chips // MODEL_PARALLEL[rule]
            if batch % batch_ways:
                continue
            bound = lower_bound_s(model_flops, num_params, rule, chips, topo.rates)
            candidates.append(Candidate(topology, rule, 1, chips, bound))
    if not candidates:
        raise ValueError(
            f"global batch {batch} (gin: train.batch_size) cannot be split over any "
            f"candidate: the batch axes of {list(topologies)} with rule sets {list(rules)} "
            "need a batch divisible by the chips (divided by 4 for fsdp_tp4)."
        )
    storage.makedirs(plan_dir)
    table_path = storage.join(plan_dir, "results.json")
    table = json.loads(storage.read_text(table_path)) if storage.exists(table_path) else {}
    expect_shapes = {k: list(v) for k, v in shapes.items()}
    rows, best, compiles = [], None, 0
    queue = sorted(candidates, key=lambda c: _chip_hours(c.lower_bound_s, c.chips, steps))
    while queue:
        candidate = queue.pop(0)
        bound_hours = _chip_hours(candidate.lower_bound_s, candidate.chips, steps)
        path = storage.join(plan_dir, candidate.name(model_name, batch, scanned) + ".json")
        expect = {
            "batch_shapes": expect_shapes,
            "num_microbatches": candidate.microbatches,
            "num_params": num_params,
        }
        # A cached report costs nothing, so it is shown even where the bound prunes.
        report, status = _cached(path, expect, table), "cached"
        if report is None and best is not None and bound_hours >= best:
            rows.append(
                _row(candidate, None, "not compiled: its lower bound is above the best", steps)
            )
            continue
        if report is None:
            if compiles >= max_compiles:
                rows.append(
                    _row(
                        candidate,
                        None,
                        f"not compiled: --max_compiles={max_compiles} reached",
                        steps,
                    )
                )
                continue
            print(
                f"plan: compiling {storage.name(path)} (lower bound "
                f"{candidate.lower_bound_s * 1e3:.0f} ms per step)",
                flush=True,
            )
            started = time.perf_counter()
            report, status = _compile(candidate, args, path, timeout_s)
            compiles += 1
            print(f"plan: {status} in {time.perf_counter() - started:.0f} s", flush=True)
        row = _row(candidate, report, status, steps)
        rows.append(row)
        if report is None:
            continue
        if not report["fits"]:
            if (
                candidate.microbatches * 2 <= max_microbatches
                and (batch // (candidate.chips // MODEL_PARALLEL[candidate.rules]))
                % (candidate.microbatches * 2)
                == 0
            ):
                queue.insert(
                    0, dataclasses.replace(candidate, microbatches=candidate.microbatches * 2)
                )
            continue
        if "chip_hours" in row:
            best = row["chip_hours"] if best is None else min(best, row["chip_hours"])
    ranked = sorted(
        rows,
        key=lambda r: (
            r.get("chip_hours") is None or not r.get("fits"),
            r.get("chip_hours") or r["lower_bound_chip_hours"],
        ),
    )
    return {
        "model": model_name,
        "num_params": num_params,
        "global_batch": batch,
        "steps": steps,
        "model_flops_per_step": model_flops,
        "rows": ranked,
    }


def _model_name(args: Sequence[str]) -> str:
    """ "byt5-xl" for --gin_file=models/byt5_xl.gin (the fit table's row names)."""
    names = [a.split("=", 1)[1] for a in args if a.startswith("--gin_file=") and "models/" in a]
    if not names:
        return "model"
    return storage.name(names[-1]).removesuffix(".gin").replace("_", "-")


def format_plan(result: Mapping[str, Any]) -> str:
    """The ranked rows as a text table, cheapest predicted run first."""
    lines = [
        f"plan for {result['model']} ({result['num_params'] / 1e9:.2f}B parameters), global "
        f"batch {result['global_batch']}, {result['steps']:,} steps; predictions from "
        "compiled programs and public chip rates, not measurements:",
        f"{'topology':<10} {'rules':<9} {'mb':>3} {'chips':>5} {'peak GiB':>9} "
        f"{'step ms':>8} {'bound by':<12} {'MFU (no overlap)':>16} {'chip-hours':>11}  status",
    ]
    for row in result["rows"]:
        peak = f"{row['peak_gib']:.1f}" if "peak_gib" in row else "-"
        if "chip_hours" in row:
            step = f"{row['predicted_s'] * 1e3:.0f}"
            mfu = (
                f"{row['predicted_mfu']:.0%} ({row['mfu_no_overlap']:.0%})"
                if row.get("predicted_mfu")
                else "-"
            )
            hours = f"{row['chip_hours']:,.0f}"
            bound = row["bound_by"]
        else:
            step, mfu, bound = "-", "-", "-"
            hours = f">= {row['lower_bound_chip_hours']:,.0f}"
        status = row["status"] if row.get("fits", True) else f"{row['status']}, does not fit"
        lines.append(
            f"{row['topology']:<10} {row['rules']:<9} {row['microbatches']:>3} "
            f"{row['chips']:>5} {peak:>9} {step:>8} {bound:<12} {mfu:>16} {hours:>11}  {status}"
        )
    best = next((r for r in result["rows"] if r.get("fits") and "chip_hours" in r), None)
    if best:
        lines.append(
            f"best: {best['topology']} with {best['rules']} rules, {best['microbatches']} "
            f"microbatch(es): {best['predicted_s'] * 1e3:.0f} ms per step, MFU "
            f"{best['predicted_mfu']:.0%} ({best['mfu_no_overlap']:.0%} with no overlap), "
            f"{best['chip_hours']:,.0f} chip-hours"
        )
    else:
        lines.append("no candidate both fits and has a predicted step time")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m slt.plan",
        description=__doc__,
        epilog="Other arguments (--gin_file=FILE, --gin.NAME=VALUE, --verbosity=LEVEL) "
        "configure the job as for slt.train and slt.compile_check.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steps", type=int, required=True, help="training steps of the run")
    parser.add_argument(
        "--topologies",
        default=",".join(DEFAULT_TOPOLOGIES),
        help="comma-separated candidate topologies (default %(default)s)",
    )
    parser.add_argument(
        "--rules",
        default=",".join(RULE_SETS),
        help="comma-separated rule sets (default %(default)s)",
    )
    parser.add_argument(
        "--plan_dir",
        default="plan",
        help="where each candidate's compile report is cached (default "
        "%(default)s; bench/fit_table reuses the fit table's rows)",
    )
    parser.add_argument("--max_microbatches", type=int, default=8)
    parser.add_argument(
        "--max_compiles",
        type=int,
        default=12,
        help="compiles at most (cached reports do not count)",
    )
    parser.add_argument("--timeout_s", type=int, default=3600, help="per compile")
    parser.add_argument("--json_out", help="write the ranked rows here as JSON")
    own, rest = parser.parse_known_args(argv)
    # The CPU runs this process; TPU and GPU chips are only compile targets.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    gin_utils.quiet_tensorflow()
    try:
        result = plan(
            rest,
            [t for t in own.topologies.split(",") if t],
            [r for r in own.rules.split(",") if r],
            own.steps,
            own.plan_dir,
            own.max_microbatches,
            own.max_compiles,
            own.timeout_s,
        )
    except ValueError as error:
        print(f"ERROR: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    print(format_plan(result), flush=True)
    if own.json_out:
        storage.write_text(own.json_out, json.dumps(result, indent=1))
        print(f"plan written to {own.json_out}")


if __name__ == "__main__":
    gin_utils.run_job(main)
