"""A stand-in for the `gcloud` CLI: the TPU commands the launchers use, run locally.

The tests put a `gcloud` script on PATH that runs this file. Every call is appended
to `$GCLOUD_STANDIN_DIR/calls.jsonl`. Forms the real CLI rejects (unknown commands or
flags, missing required flags, `--node-id` together with `--node-count`, a node that
does not exist) exit 2 with gcloud's kind of message. Queued resources are kept in
`state.json`. `tpu-vm ssh NODE --worker=all --command=CMD` runs CMD with bash in one
local process per TPU VM of the node's slice, each with its own $HOME and with
`SLT_COORDINATOR_ADDRESS` / `SLT_NUM_PROCESSES` / `SLT_PROCESS_ID` set where a TPU
VM's metadata would let JAX find its peers (CPU devices, one per TPU chip).
`tpu-vm scp SRC NODE:DEST --worker=all` copies into every worker's $HOME.
With `GCLOUD_STANDIN_CHECK_ONLY=1` a call is checked and recorded, not run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch")
)
import tpu_types  # noqa: E402

ROOT = os.environ["GCLOUD_STANDIN_DIR"]
WHERE = {"--project", "--zone"}
# command -> (required flags, optional flags, boolean flags, positional count)
FORMS = {
    ("compute", "tpus", "queued-resources", "create"): (
        WHERE | {"--accelerator-type", "--runtime-version"},
        {"--node-id", "--node-count", "--node-prefix", "--reservation"},
        {"--spot", "--reserved", "--guaranteed", "--best-effort", "--async"},
        1,
    ),
    ("compute", "tpus", "queued-resources", "describe"): (WHERE, {"--format"}, set(), 1),
    ("compute", "tpus", "queued-resources", "delete"): (
        WHERE,
        set(),
        {"--force", "--quiet", "--async"},
        1,
    ),
    ("compute", "tpus", "tpu-vm", "ssh"): (WHERE, {"--worker", "--command"}, set(), 1),
    ("compute", "tpus", "tpu-vm", "scp"): (WHERE, {"--worker"}, {"--recurse"}, None),
}


def fail(command: tuple[str, ...], message: str) -> None:
    print(f"ERROR: (gcloud.{'.'.join(command)}) {message}", file=sys.stderr)
    sys.exit(2)


def parse(argv: list[str]) -> tuple[tuple[str, ...], dict[str, str | bool], list[str]]:
    command = tuple(argv[:4])
    if command not in FORMS:
        fail(command, f"Invalid choice: {' '.join(argv[:4])!r}.")
    required, optional, booleans, positionals = FORMS[command]
    flags: dict[str, str | bool] = {}
    rest: list[str] = []
    args = iter(argv[4:])
    for arg in args:
        if not arg.startswith("--"):
            rest.append(arg)
            continue
        name, has_value, value = arg.partition("=")
        if name in booleans and not has_value:
            flags[name] = True
        elif name in required | optional:
            flags[name] = value if has_value else next(args, "")
        else:
            fail(command, f"unrecognized arguments: {arg}")
    missing = sorted(required - set(flags))
    if missing:
        fail(command, f"argument {', '.join(missing)}: Must be specified.")
    if positionals is not None and len(rest) != positionals:
        fail(command, f"expected {positionals} positional argument(s), got {rest}")
    return command, flags, rest


def load_state() -> dict:
    path = os.path.join(ROOT, "state.json")
    if not os.path.exists(path):
        return {"queued_resources": {}}
    with open(path) as f:
        return json.load(f)


def save_state(state: dict) -> None:
    with open(os.path.join(ROOT, "state.json"), "w") as f:
        json.dump(state, f)


def find_node(state: dict, command: tuple[str, ...], node: str) -> tuple[dict, int]:
    for resource in state["queued_resources"].values():
        if node in resource["nodes"]:
            return resource, resource["nodes"].index(node)
    fail(command, f"NOT_FOUND: node {node!r} does not exist.")
    raise AssertionError


def create(command, flags, rest, state) -> int:
    name = rest[0]
    if ("--node-id" in flags) == ("--node-count" in flags):
        fail(command, "Exactly one of (--node-count --node-prefix | --node-id) must be specified.")
    if "--node-count" in flags:
        count = int(flags["--node-count"])
        if count < 2:
            fail(command, "INVALID_ARGUMENT: node_count must be > 1.")
        nodes = [f"{flags.get('--node-prefix') or name}-{i}" for i in range(count)]
    else:
        nodes = [flags["--node-id"]]
    if (
        len([f for f in ("--spot", "--reserved", "--guaranteed", "--best-effort") if f in flags])
        > 1
    ):
        fail(command, "argument --spot, --reserved, --guaranteed, --best-effort: at most one.")
    try:
        tpu = tpu_types.parse_tpu_type(flags["--accelerator-type"])
    except ValueError:
        fail(command, f"INVALID_ARGUMENT: unknown accelerator type {flags['--accelerator-type']}")
    if name in state["queued_resources"]:
        fail(command, f"ALREADY_EXISTS: queued resource {name!r}.")
    with socket.socket() as s:  # the port process 0 of this job listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state["queued_resources"][name] = {
        "nodes": nodes,
        "hosts": tpu.hosts,
        "chips_per_host": tpu.chips // tpu.hosts,
        "port": port,
        "state": "ACTIVE",
    }
    print(f"Create request issued for: [{name}]")
    return 0


def ssh(command, flags, rest, state) -> int:
    resource, slice_index = find_node(state, command, rest[0])
    if flags.get("--worker") != "all" or not flags.get("--command"):
        fail(command, "the stand-in runs only --worker=all --command=CMD")
    hosts, nodes = resource["hosts"], resource["nodes"]
    processes = []
    for worker in range(hosts):
        home = os.path.join(ROOT, "workers", rest[0], f"w{worker}")
        os.makedirs(home, exist_ok=True)
        env = dict(
            os.environ,
            HOME=home,
            HOSTNAME=f"{rest[0]}-w{worker}",
            PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=f"--xla_force_host_platform_device_count={resource['chips_per_host']}",
            SLT_COORDINATOR_ADDRESS=f"127.0.0.1:{resource['port']}",
            SLT_NUM_PROCESSES=str(hosts * len(nodes)),
            SLT_PROCESS_ID=str(slice_index * hosts + worker),
        )
        processes.append(subprocess.Popen(["bash", "-c", flags["--command"]], cwd=home, env=env))
    return max(p.wait() for p in processes)


def scp(command, flags, rest, state) -> int:
    if len(rest) < 2 or ":" not in rest[-1] or flags.get("--worker") != "all":
        fail(command, "the stand-in copies only SRC... NODE:DEST --worker=all")
    node, _, dest = rest[-1].partition(":")
    resource, _ = find_node(state, command, node)
    for worker in range(resource["hosts"]):
        home = os.path.join(ROOT, "workers", node, f"w{worker}")
        os.makedirs(home, exist_ok=True)
        for source in rest[:-1]:
            target = os.path.join(home, dest or os.path.basename(source))
            if os.path.isdir(source):
                if "--recurse" not in flags:
                    fail(command, f"{source} is a directory: add --recurse")
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copy(source, target)
    return 0


def main(argv: list[str]) -> int:
    os.makedirs(ROOT, exist_ok=True)
    with open(os.path.join(ROOT, "calls.jsonl"), "a") as f:  # rejected calls too
        f.write(json.dumps(argv) + "\n")
    command, flags, rest = parse(argv)
    state = load_state()
    verb = command[-1]
    if os.environ.get("GCLOUD_STANDIN_CHECK_ONLY") == "1":
        if verb == "create":
            return create(command, flags, rest, {"queued_resources": {}})
        return 0
    if verb == "create":
        code = create(command, flags, rest, state)
    elif verb == "describe":
        if rest[0] not in state["queued_resources"]:
            fail(command, f"NOT_FOUND: queued resource {rest[0]!r}.")
        print(state["queued_resources"][rest[0]]["state"])
        return 0
    elif verb == "delete":
        if state["queued_resources"].pop(rest[0], None) is None:
            fail(command, f"NOT_FOUND: queued resource {rest[0]!r}.")
        code = 0
    elif verb == "ssh":
        return ssh(command, flags, rest, state)
    else:
        return scp(command, flags, rest, state)
    save_state(state)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
