#!/usr/bin/env python3
"""Run slt jobs on Cloud TPU VM slices (one or several) through `gcloud`.

    python launch/tpu_vm.py create --name=slt-demo --project=P --zone=Z \\
        --accelerator_type=v5litepod-16 [--node_count=2] [--capacity=spot]
    python launch/tpu_vm.py setup  --name=slt-demo --project=P --zone=Z [--git_ref=HEAD]
    python launch/tpu_vm.py run    --name=slt-demo --project=P --zone=Z \\
        --accelerator_type=v5litepod-16 --model_dir=gs://BUCKET/runs/demo -- \\
        --gin_file=runs/demo.gin
    python launch/tpu_vm.py logs   --name=slt-demo --project=P --zone=Z --run_name=demo
    python launch/tpu_vm.py delete --name=slt-demo --project=P --zone=Z

`--dry_run` prints every gcloud command instead of running it. The TPU slices are
one queued resource named `--name`; with `--node_count=N > 1` its nodes are
`NAME-0` ... `NAME-(N-1)` (gcloud's `--node-prefix`) and `run` adds
partitioning/multislice.gin. Every worker runs the same command with
`SLT_DISTRIBUTED_AUTO=1` (JAX finds its peers from the TPU VM metadata) and keeps
its log in `~/slt_logs/RUN_NAME-HOST.log`. Standard library only. See docs/launch.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tpu_types  # noqa: E402  (this folder, not a package)

log = logging.getLogger("launch.tpu_vm")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MULTISLICE_GIN = "partitioning/multislice.gin"
CAPACITY_FLAGS = {"on-demand": [], "spot": ["--spot"], "reserved": ["--reserved"]}


class LaunchError(ValueError):
    """Bad launcher input, found before anything is created or started."""


def node_names(name: str, node_count: int) -> list[str]:
    """The TPU nodes of queued resource `name` (gcloud's `--node-prefix` naming)."""
    return [name] if node_count == 1 else [f"{name}-{i}" for i in range(node_count)]


def _where(args: argparse.Namespace) -> list[str]:
    return [f"--project={args.project}", f"--zone={args.zone}"]


def create_commands(args: argparse.Namespace) -> list[list[str]]:
    tpu = tpu_types.parse_tpu_type(args.accelerator_type)
    nodes = (
        [f"--node-id={args.name}"]
        if args.node_count == 1
        else [f"--node-count={args.node_count}", f"--node-prefix={args.name}"]
    )
    return [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "create",
            args.name,
            *_where(args),
            f"--accelerator-type={tpu.name}",
            f"--runtime-version={args.runtime_version or tpu.runtime_version}",
            *nodes,
            *CAPACITY_FLAGS[args.capacity],
        ]
    ]


def _ssh(node: str, args: argparse.Namespace, script: str) -> list[str]:
    return [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        node,
        *_where(args),
        "--worker=all",
        f"--command={script}",
    ]


def setup_commands(args: argparse.Namespace, archive: str) -> list[list[list[str]]]:
    """Copy `git archive` of the ref to every worker, unpack, install.

    Returns stages; the commands of one stage (one per node) run in parallel.
    """
    remote = args.remote_dir
    unpack = (
        f"set -e; rm -rf {remote}; mkdir -p {remote}; tar -xzf slt-checkout.tar.gz -C {remote}; "
        f"cd {remote}; {args.install_command}"
    )
    nodes = node_names(args.name, args.node_count)
    scp = [
        [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "scp",
            archive,
            f"{node}:slt-checkout.tar.gz",
            *_where(args),
            "--worker=all",
        ]
        for node in nodes
    ]
    return [scp, [_ssh(node, args, f"bash -c {shlex.quote(unpack)}") for node in nodes]]


def job_arguments(args: argparse.Namespace) -> list[str]:
    """The job's own flags: the user's, the multislice gin file, MODEL_DIR (training)."""
    job_args = list(args.job_args)
    if args.node_count > 1 and not any(MULTISLICE_GIN in a for a in job_args):
        job_args += [f"--gin_file={MULTISLICE_GIN}", f"--gin.NUM_SLICES={args.node_count}"]
    if args.model_dir:
        job_args.append(f'--gin.MODEL_DIR="{args.model_dir}"')
    return job_args


def run_script(args: argparse.Namespace) -> str:
    """What every worker runs: the job, its output tee'd to the worker's log."""
    job = shlex.join(["python3", "-m", args.job, *job_arguments(args)])
    logfile = f"$HOME/slt_logs/{args.run_name}-$HOSTNAME.log"
    body = (
        f"set -o pipefail; mkdir -p $HOME/slt_logs; cd {args.remote_dir}; "
        f'SLT_DISTRIBUTED_AUTO=1 {job} 2>&1 | tee -a {logfile} | sed -u "s/^/[$HOSTNAME] /"'
    )
    if args.detach:  # keeps running after ssh disconnects; `logs` reads it
        body = (
            f"mkdir -p $HOME/slt_logs; cd {args.remote_dir}; SLT_DISTRIBUTED_AUTO=1 "
            f"nohup {job} >> {logfile} 2>&1 < /dev/null & echo started $HOSTNAME"
        )
    return f"bash -c {shlex.quote(body)}"


def run_commands(args: argparse.Namespace) -> list[list[list[str]]]:
    tpu = tpu_types.parse_tpu_type(args.accelerator_type)
    if args.model_dir and not args.shared_model_dir:
        tpu_types.check_shared_model_dir(args.model_dir, tpu.hosts * args.node_count)
    script = run_script(args)
    return [[_ssh(node, args, script) for node in node_names(args.name, args.node_count)]]


def logs_commands(args: argparse.Namespace) -> list[list[list[str]]]:
    script = f"bash -c {shlex.quote(f'tail -n {args.lines} $HOME/slt_logs/{args.run_name}-*.log')}"
    return [[_ssh(node, args, script) for node in node_names(args.name, args.node_count)]]


def delete_commands(args: argparse.Namespace) -> list[list[str]]:
    # --force deletes the TPU nodes with the queued resource.
    return [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "delete",
            args.name,
            *_where(args),
            "--force",
            "--quiet",
        ]
    ]


def _stream(command: list[str]) -> int:
    """Runs `command`, printing its output line by line (workers' lines stay whole)."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    for line in process.stdout:
        print(line, end="", flush=True)
    return process.wait()


def _run_into(codes: list[int], index: int, command: list[str]) -> None:
    codes[index] = _stream(command)


def execute(stages: list[list[list[str]]], dry_run: bool) -> int:
    """Runs each stage's commands in parallel (output prefixed per node); stops at a failure."""
    for stage in stages:
        if dry_run:
            for command in stage:
                print(shlex.join(command))
            continue
        codes = [0] * len(stage)
        threads = [
            threading.Thread(target=_run_into, args=(codes, i, c)) for i, c in enumerate(stage)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if any(codes):
            failed = [shlex.join(c[:6]) for c, code in zip(stage, codes) if code]
            print(f"failed (exit {max(codes)}): {'; '.join(failed)}", file=sys.stderr)
            return max(codes)
    return 0


def _git_archive(ref: str, directory: str) -> str:
    path = os.path.join(directory, "slt-checkout.tar.gz")
    result = subprocess.run(
        ["git", "archive", "--format=tar.gz", f"--output={path}", ref],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise LaunchError(
            f"--git_ref={ref!r}: git archive failed in {REPO}: {result.stderr.strip()}; "
            "give a commit, branch or tag of this checkout."
        )
    return path


def _check_common(args: argparse.Namespace) -> None:
    for flag in ("name", "project", "zone"):
        if not getattr(args, flag):
            raise LaunchError(
                f"--{flag} is required: "
                + {
                    "name": "the queued resource (and TPU node) name, e.g. --name=slt-demo.",
                    "project": "the Google Cloud project, e.g. --project=my-project.",
                    "zone": "a zone with the TPU type, e.g. --zone=us-west4-a.",
                }[flag]
            )
    if args.node_count < 1:
        raise LaunchError(f"--node_count={args.node_count}: give 1 or more slices.")
    needs_type = args.command in ("create", "run")
    if needs_type and not args.accelerator_type:
        raise LaunchError(
            "--accelerator_type is required (the slice type, e.g. --accelerator_type=v5litepod-16)."
        )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="launch/tpu_vm.py",
        description=__doc__.split("\n\n")[0],
        epilog="Full walk-through with costs: docs/launch.md.",
    )
    parser.add_argument("--dry_run", action="store_true", help="print the gcloud commands only")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--name", help="queued resource name; nodes are NAME or NAME-i")
        p.add_argument("--project", help="Google Cloud project")
        p.add_argument("--zone", help="zone, e.g. us-west4-a")
        p.add_argument("--node_count", type=int, default=1, help="number of slices")
        p.add_argument("--dry_run", action="store_true", default=argparse.SUPPRESS)
        return p

    create = add("create", "request the slices as one queued resource")
    create.add_argument("--accelerator_type", help="e.g. v4-8, v5litepod-16, v5p-32, v6e-8")
    create.add_argument("--capacity", choices=sorted(CAPACITY_FLAGS), default="on-demand")
    create.add_argument("--runtime_version", help="TPU VM image (default: per generation)")

    setup = add("setup", "copy a git ref of this checkout to every worker and install it")
    setup.add_argument("--git_ref", default="HEAD", help="commit, branch or tag (committed files)")
    setup.add_argument("--remote_dir", default="slt", help="checkout directory under $HOME")
    setup.add_argument(
        "--install_command",
        default='python3 -m pip install -e ".[tpu]"',
        help="run in the checkout on every worker",
    )

    run = add("run", "run one slt job on every worker (`-- JOB FLAGS...`)")
    run.add_argument("--accelerator_type", help="slice type (to count hosts)")
    run.add_argument(
        "--model_dir",
        help="slt.train's run directory (a gs:// path); other jobs take their own flags",
    )
    run.add_argument(
        "--shared_model_dir",
        action="store_true",
        help="--model_dir is a filesystem every worker mounts (e.g. Filestore), not a bucket",
    )
    run.add_argument("--job", default="slt.train", help="module: slt.train, slt.eval, ...")
    run.add_argument("--run_name", help="log file name (default: last part of --model_dir)")
    run.add_argument("--remote_dir", default="slt", help="checkout directory under $HOME")
    run.add_argument("--detach", action="store_true", help="return at once; read with `logs`")
    run.add_argument("job_args", nargs="*", help="the job's flags, after `--`")

    logs = add("logs", "print the end of every worker's log of a run")
    logs.add_argument("--run_name", required=True)
    logs.add_argument("--lines", type=int, default=50)

    add("delete", "delete the queued resource and its TPU nodes")
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.job == "slt.train" and not args.model_dir:
            parser.error("run --job=slt.train needs --model_dir (e.g. gs://BUCKET/runs/NAME)")
        if not args.run_name:
            args.run_name = os.path.basename((args.model_dir or args.job).rstrip("/"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        _check_common(args)
        with tempfile.TemporaryDirectory() as tmp:
            if args.command == "create":
                stages = [create_commands(args)]
            elif args.command == "setup":
                stages = setup_commands(args, _git_archive(args.git_ref, tmp))
            elif args.command == "run":
                stages = run_commands(args)
            elif args.command == "logs":
                stages = logs_commands(args)
            else:
                stages = [delete_commands(args)]
            return execute(stages, args.dry_run)
    except ValueError as error:  # LaunchError and tpu_types' checks
        print(f"launch/tpu_vm.py {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
