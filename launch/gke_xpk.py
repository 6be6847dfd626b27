#!/usr/bin/env python3
"""Run one slt job on TPU slices of a GKE cluster with xpk (`xpk workload create`).

    python launch/gke_xpk.py --cluster=slt-v5e --workload=demo-1 --project=P \\
        --zone=us-west4-a --tpu_type=v5litepod-16 --num_slices=2 \\
        --docker_image=us-docker.pkg.dev/P/slt/slt:latest \\
        --model_dir=gs://BUCKET/runs/demo -- --gin_file=runs/demo.gin

The image is launch/Dockerfile (the project with its TPU extra); every pod of every
slice runs `python -m JOB FLAGS --gin.MODEL_DIR=...` with `SLT_DISTRIBUTED_AUTO=1`,
and with several slices partitioning/multislice.gin. `--dry_run` passes xpk's
own `--dry-run` (xpk prints the commands and the JobSet, runs nothing);
`--manifest=PATH` keeps the JobSet YAML. Standard library only. See docs/launch.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tpu_types  # noqa: E402  (this folder, not a package)

MULTISLICE_GIN = "partitioning/multislice.gin"


def job_command(args: argparse.Namespace) -> str:
    """The shell command every pod runs (in the image's checkout, /app/slt)."""
    job_args = list(args.job_args)
    if args.num_slices > 1 and not any(MULTISLICE_GIN in a for a in job_args):
        job_args += [f"--gin_file={MULTISLICE_GIN}", f"--gin.NUM_SLICES={args.num_slices}"]
    if args.model_dir:
        job_args.append(f'--gin.MODEL_DIR="{args.model_dir}"')
    return "SLT_DISTRIBUTED_AUTO=1 " + shlex.join(["python", "-m", args.job, *job_args])


def xpk_command(args: argparse.Namespace) -> list[str]:
    command = [
        args.xpk,
        "workload",
        "create",
        f"--cluster={args.cluster}",
        f"--workload={args.workload}",
        f"--project={args.project}",
        f"--zone={args.zone}",
        f"--tpu-type={args.tpu_type}",
        f"--num-slices={args.num_slices}",
        f"--docker-image={args.docker_image}",
        f"--max-restarts={args.max_restarts}",
        f"--command={job_command(args)}",
    ]
    if args.dry_run:
        command.append("--dry-run")
    if args.manifest:
        command.append(f"--output-manifest-file={args.manifest}")
    return command


def check(args: argparse.Namespace) -> None:
    fixes = {
        "cluster": "the GKE cluster `xpk cluster create` made, e.g. --cluster=slt-v5e",
        "workload": "a new name for this run, e.g. --workload=demo-1",
        "project": "the Google Cloud project, e.g. --project=my-project",
        "zone": "the cluster's zone, e.g. --zone=us-west4-a",
        "tpu_type": "the slice type of the cluster's node pool, e.g. --tpu_type=v5litepod-16",
        "docker_image": "the image built from launch/Dockerfile, e.g. "
        "--docker_image=us-docker.pkg.dev/PROJECT/slt/slt:latest",
        "model_dir": "the run directory, a bucket: --model_dir=gs://BUCKET/runs/NAME",
    }
    if args.job != "slt.train":  # other jobs name their outputs in their own flags
        del fixes["model_dir"]
    for flag, fix in fixes.items():
        if not getattr(args, flag):
            raise ValueError(f"--{flag} is required: {fix}.")
    if args.num_slices < 1:
        raise ValueError(f"--num_slices={args.num_slices}: give 1 or more slices.")
    tpu = tpu_types.parse_tpu_type(args.tpu_type, "--tpu_type")
    if args.model_dir and not args.shared_model_dir:
        # Pods of a multi-host slice do not share a disk.
        tpu_types.check_shared_model_dir(args.model_dir, tpu.gke_hosts * args.num_slices)
    if not shutil.which(args.xpk):
        raise ValueError(
            f"--xpk={args.xpk!r} is not on PATH: pip install xpk==1.16.0 (a venv is "
            "fine) and pass --xpk=/path/to/venv/bin/xpk."
        )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="launch/gke_xpk.py",
        description=__doc__.split("\n\n")[0],
        epilog="Cluster creation and costs: docs/launch.md.",
    )
    parser.add_argument("--cluster")
    parser.add_argument("--workload")
    parser.add_argument("--project")
    parser.add_argument("--zone")
    parser.add_argument("--tpu_type", help="e.g. v5litepod-16, v5p-32, v6e-256")
    parser.add_argument("--num_slices", type=int, default=1)
    parser.add_argument("--docker_image", help="image built from launch/Dockerfile")
    parser.add_argument("--model_dir", help="slt.train's run directory, gs://BUCKET/...")
    parser.add_argument(
        "--shared_model_dir",
        action="store_true",
        help="--model_dir is storage every pod mounts (xpk --storage), not a bucket",
    )
    parser.add_argument("--job", default="slt.train", help="slt.train, slt.eval, ...")
    parser.add_argument(
        "--max_restarts", type=int, default=3, help="JobSet restarts (preemption resumes)"
    )
    parser.add_argument("--xpk", default="xpk", help="the xpk executable")
    parser.add_argument("--dry_run", action="store_true", help="xpk --dry-run")
    parser.add_argument("--manifest", help="write the JobSet YAML here")
    parser.add_argument("job_args", nargs="*", help="the job's flags, after `--`")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check(args)
    except ValueError as error:
        print(f"launch/gke_xpk.py: {error}", file=sys.stderr)
        return 2
    command = xpk_command(args)
    print(shlex.join(command), flush=True)
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
