r"""The fit table: the paper's model sizes compiled for TPU pods and GPU hosts with each
rule set.

  nice -n 10 python bench/fit_table.py --out_dir=bench/fit_table [--rows=xl-v5e256-fsdp,...]

Each row runs `python -m slt.compile_check --skip_decode --json_out=...` in its own
process, `--jobs` at a time (on 2 cores a scanned ByT5-XL row takes 2-5 CPU minutes and
3-4 GiB of host memory, an unrolled one 10-15 CPU minutes and 10-13 GiB). Rows run in
the order of `_rows()`; a row whose JSON is already in
`--out_dir` is not compiled again, so the script can be stopped and run again to
produce the rest. Before each compile the script waits until the host has `--min_free_gib`
available (up to `--memory_wait_s`), else skips the row (recorded as not run, with the
reason); `--deadline=HH:MM` (UTC) stops starting new rows.
Writes `--out_dir`/table.md: every row, compiled or not, and why not.
TPU rows need the TPU runtime (pip install -e ".[tpu]"), GPU rows jax's CUDA plugin
(pip install -e ".[gpu-compile]").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
import threading
import time

from slt.plan import RULE_SETS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024**3

# The paper's lengths: 256 landmark frames plus a text prompt, 256 target bytes.
LENGTHS = '{"landmarks": 256, "inputs": 32, "targets": 256}'
MODELS = {
    "byt5-base": "models/byt5_base.gin",
    "byt5-large": "models/byt5_large.gin",
    "byt5-xl": "models/byt5_xl.gin",
    "byt5-xxl": "models/byt5_xxl.gin",
    "mt5-xl": "models/mt5_xl.gin",
    "mt5-xxl": "models/mt5_xxl.gin",
}
TOPOLOGIES = ("v5e-256", "v4-128", "v5p-128")
# One host of 8 H100s, and two such hosts (16 GPUs over the hosts' network).
GPU_TOPOLOGIES = ("h100-8", "h100-2x8")
# The rule sets slt.plan tries, under the same names (a plan reads these rows).
RULES = RULE_SETS
# Big models: scanned layers compile once per stack instead of once per layer.
SCAN = ["--gin.slt.T5Config.scan_layers=True"]


def _row(
    model: str, topology: str, rules: str, slices: int = 1, extra=(), microbatches: int = 1
) -> dict:
    batch = 256 * slices
    name = f"{model}-{topology}-{rules}" + (f"-x{slices}" if slices > 1 else "")
    name += "-scan" if extra == SCAN else ""
    name += f"-mb{microbatches}" if microbatches > 1 else ""
    args = [
        f"--topology={topology}",
        f"--gin_file={MODELS[model]}",
        *RULES[rules],
        f"--gin.train.task_feature_lengths={LENGTHS}",
        f"--gin.train.batch_size={batch}",
        f"--gin.train.num_microbatches={microbatches}",
        *extra,
    ]
    if not topology.startswith("h100"):  # GPU hosts are in the topology name
        args.insert(1, f"--num_slices={slices}")
    if slices > 1:
        args += ["--gin_file=partitioning/multislice.gin", f"--gin.NUM_SLICES={slices}"]
    return {
        "name": name,
        "model": model,
        "topology": topology,
        "slices": slices,
        "rules": rules,
        "batch": batch,
        "microbatches": microbatches,
        "args": args,
    }


def _gpu_rows() -> list[dict]:
    """ByT5-XL with scanned layers on one and two 8 x H100 hosts: FSDP at the paper's
    batch, in 8 microbatches (32 rows each: 4 per GPU on one host), and with the data
    axis over the two hosts (partitioning/multislice.gin: FSDP inside a host only)."""
    rows = [
        _row("byt5-xl", "h100-8", "fsdp", extra=SCAN, microbatches=8),
        _row("byt5-xl", "h100-8", "fsdp", extra=SCAN),
    ]
    two_hosts = _row("byt5-xl", "h100-2x8", "fsdp", extra=SCAN, microbatches=8)
    two_hosts["name"] += "-dcn"
    two_hosts["rules"] += " (data over hosts)"
    two_hosts["args"] += ["--gin_file=partitioning/multislice.gin", "--gin.NUM_SLICES=2"]
    return rows + [two_hosts]


def _rows() -> list[dict]:
    """Every model x topology x rule set with scanned layers (the XL rows first), the
    two-slice case, then ByT5-XL with its layers unrolled for comparison, then the GPU
    hosts."""
    table = []
    for model in ("byt5-xl", "byt5-base", "byt5-large", "mt5-xl", "byt5-xxl", "mt5-xxl"):
        for topology in TOPOLOGIES:
            for rules in RULES:
                table.append(_row(model, topology, rules, extra=SCAN))
        if model == "byt5-xl":
            table.append(_row(model, "v5e-256", "fsdp", slices=2, extra=SCAN))
    unrolled = [
        _row("byt5-xl", "v5e-256", "fsdp"),
        _row("byt5-xl", "v4-128", "fsdp_tp4"),
        _row("byt5-xl", "v5p-128", "fsdp"),
        _row("byt5-xl", "v5e-256", "fsdp", slices=2),
    ]
    return table + unrolled + _gpu_rows()


def _available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    return 0.0


def _high_water_mark(pid: int) -> int:
    """The peak resident memory of process `pid` so far (VmHWM), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _run(row: dict, out_dir: str, timeout_s: int) -> dict:
    json_path = os.path.join(out_dir, f"{row['name']}.json")
    command = [
        sys.executable,
        "-m",
        "slt.compile_check",
        "--skip_decode",
        f"--json_out={json_path}",
    ]
    command += row["args"]
    log_path = os.path.join(out_dir, f"{row['name']}.log")
    started = time.perf_counter()
    peak_rss = 0
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            peak_rss = max(peak_rss, _high_water_mark(proc.pid))
            if time.perf_counter() - started > timeout_s:
                proc.kill()
                proc.wait()
                return {"status": f"not run: stopped after {timeout_s} s", "command": command}
            time.sleep(2)
    wall = time.perf_counter() - started
    with open(log_path) as f:
        output = f.read()
    if proc.returncode not in (0, 1) or not os.path.exists(json_path):
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        # Bad input (exit 2) is an "ERROR: ..." line and its first detail; else the last line.
        errors = [i for i, line in enumerate(lines) if line.startswith("ERROR:")]
        if errors:
            why = " ".join(lines[errors[0] : errors[0] + 2])
        else:
            why = lines[-1] if lines else "?"
        return {"status": f"failed (exit {proc.returncode}): {why[:300]}", "command": command}
    with open(json_path) as f:
        report = json.load(f)
    report.update(status="compiled", wall_seconds=round(wall, 1), host_peak_rss_bytes=peak_rss)
    return report


def _fmt_row(row: dict, result: dict | None) -> str:
    topology = row["topology"] + (f" x {row['slices']} slices" if row["slices"] > 1 else "")
    scan = " + scan_layers" if "scan_layers" in " ".join(row["args"]) else ""
    micro = row.get("microbatches", 1)
    batch = f"{row['batch']} ({micro} microbatches)" if micro > 1 else str(row["batch"])
    cells = [row["model"], topology, row["rules"] + scan, batch]
    if not result or result.get("status") != "compiled":
        reason = (result or {}).get(
            "status", "not run yet: run the script again (it compiles the rows still missing)"
        )
        return "| " + " | ".join(cells + ["-"] * 9 + [reason]) + " |"
    mesh = "x".join(str(v) for v in result["mesh"].values())
    train = result.get("train_step", {})
    if train.get("compiled", True) is False:
        # Not compiled: the inputs alone overflow a chip, or the compiler ran out of HBM
        # (its message names the temporaries needed). The peak is at least this.
        low = train["peak_bytes"] / GIB
        cells += [mesh, f"> {low:.1f} / {result['hbm_bytes'] / GIB:.0f}", "**no**"]
        if train.get("compiler_out_of_memory"):
            temp = train.get("temp_bytes")
            cells += [f"{train['compile_seconds']:.0f} ({train['compile_cpu_seconds']})"]
            cells += ["-", "-", "-", "-", f"{result.get('host_peak_rss_bytes', 0) / GIB:.1f}"]
            needs = f"temporaries {temp / GIB:.1f} GiB" if temp else "see the log"
            cells += [f"compiler out of HBM: {needs}"]
        else:
            inputs = train["argument_bytes"] / GIB
            cells += ["-"] * 6 + [f"not compiled: inputs alone {inputs:.1f} GiB per chip"]
        return "| " + " | ".join(cells) + " |"
    coll = result["collectives"]
    coll_gib = sum(c["bytes"] for c in coll.values()) / GIB
    flops = result["flops_per_step"]
    cells += [
        mesh,
        f"{result['peak_bytes'] / GIB:.1f} / {result['hbm_bytes'] / GIB:.0f}",
        "yes" if result["fits"] else "**no**",
        f"{result['compile_seconds']:.0f} ({result.get('compile_cpu_seconds', '?')})",
        f"{coll_gib:.1f}",
        "n/a (loops)"
        if flops.get("xla_counts_loop_bodies_once")
        else f"{flops['xla_total'] / max(flops['analytic_total'], 1):.2f}",
        *_step_time_cells(result),
        f"{result.get('host_peak_rss_bytes', 0) / GIB:.1f}",
        "compiled",
    ]
    return "| " + " | ".join(cells) + " |"


def _step_time_cells(result: dict) -> list[str]:
    """Predicted step time (with the term that bounds it) and MFU; rows compiled before
    the check predicted step times say so (`--refresh --rows=NAME` compiles them again)."""
    timing = result.get("step_time")
    if not timing:
        return ["not in this row's JSON (--refresh)", "-"]
    mfu = result.get("predicted_mfu")
    if mfu is None:
        return [f"{timing['predicted_s']:.3f} ({timing['bound_by']})", "-"]
    # With no overlap the step takes the sum of its terms (rows compiled before the
    # report carried this MFU get it from their step times).
    floor = result.get("predicted_mfu_no_overlap")
    if floor is None:
        floor = mfu * timing["predicted_s"] / timing["no_overlap_s"]
    return [f"{timing['predicted_s']:.3f} ({timing['bound_by']})", f"{mfu:.0%} ({floor:.0%})"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out_dir", default=os.path.join(REPO, "bench", "fit_table"))
    parser.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    parser.add_argument("--min_free_gib", type=float, default=11.0)
    parser.add_argument("--deadline", default=None, help="HH:MM UTC: start no row after it")
    parser.add_argument("--timeout_s", type=int, default=3600)
    parser.add_argument(
        "--jobs", type=int, default=1, help="rows compiled at once (each needs --min_free_gib)"
    )
    parser.add_argument("--stagger_s", type=int, default=120, help="between the first starts")
    parser.add_argument(
        "--memory_wait_s",
        type=int,
        default=1800,
        help="how long a row waits for --min_free_gib before it is skipped",
    )
    parser.add_argument("--list", action="store_true", help="print the row names and exit")
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="compile the --rows again even when results.json holds them",
    )
    parser.add_argument(
        "--render_only",
        action="store_true",
        help="write table.md from results.json only",
    )
    args = parser.parse_args()
    rows = _rows()
    if args.list:
        print("\n".join(r["name"] for r in rows))
        return
    wanted = [n for n in args.rows.split(",") if n]
    unknown = set(wanted) - {r["name"] for r in rows}
    if unknown:
        raise SystemExit(f"unknown --rows {sorted(unknown)}; --list prints the names.")
    os.makedirs(args.out_dir, exist_ok=True)
    results_path = os.path.join(args.out_dir, "results.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
    todo = [
        row
        for row in rows
        if (not wanted or row["name"] in wanted)
        and not args.render_only
        and (args.refresh or results.get(row["name"], {}).get("status") != "compiled")
    ]
    if args.refresh and not wanted:
        raise SystemExit("--refresh compiles the rows named by --rows; name them.")
    lock = threading.Lock()

    def compile_row(row: dict) -> None:
        now = datetime.datetime.now(datetime.UTC)
        if args.deadline and now.strftime("%H:%M") >= args.deadline:
            with lock:
                results.setdefault(row["name"], {"status": "not run: out of time in this run"})
            return
        # A row that starts while another compiles waits for the memory it needs.
        waited = 0
        while (free := _available_gib()) < args.min_free_gib and waited < args.memory_wait_s:
            time.sleep(10)
            waited += 10
        if free < args.min_free_gib:
            with lock:
                results[row["name"]] = {
                    "status": f"not run: {free:.1f} GiB host memory available, "
                    f"a compile needs ~{args.min_free_gib:.0f}"
                }
            print(f"{row['name']}: skipped, {free:.1f} GiB available", flush=True)
            return
        print(
            f"{datetime.datetime.now(datetime.UTC):%H:%M:%S} {row['name']}: compiling", flush=True
        )
        result = _run(row, args.out_dir, args.timeout_s)
        print(f"  {row['name']} -> {result['status']}", flush=True)
        with lock:
            results[row["name"]] = result
            with open(results_path, "w") as f:
                json.dump(results, f, indent=1)

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = []
        for index, row in enumerate(todo):
            if index and index < args.jobs:
                # Let the first compile reach its peak before the next one checks memory.
                time.sleep(args.stagger_s)
            futures.append(pool.submit(compile_row, row))
        for future in futures:
            future.result()  # an error in the script itself stops it, not just its row
    lines = [
        "| model | topology | rules | global batch | mesh (data x fsdp x model) | "
        "peak / HBM GiB per chip | fits | compile s (CPU s) | collective GiB per chip per step | "
        "XLA / model FLOPs | predicted step s (bound by) | predicted MFU (no overlap) | "
        "host GiB | status |",
        "|" + "---|" * 14,
    ]
    lines += [_fmt_row(r, results.get(r["name"])) for r in rows]
    with open(os.path.join(args.out_dir, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
