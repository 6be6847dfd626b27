"""A one-node SLURM cluster on localhost for tests: munged, slurmctld and slurmd from
Debian's slurm-wlm, with every file in a fresh directory and free ports.

The node offers `cpus` CPUs and `gpus` GPUs as a generic resource without device
files, so `--gpus-per-node` requests are scheduled and counted as on a GPU node
while JAX runs on CPU devices. Clients (sbatch, squeue, scontrol) find it through
the `SLURM_CONF` of `Cluster.env`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing_binaries() -> list[str]:
    return [name for name in (*DAEMONS, "sbatch", "scontrol") if not shutil.which(name)]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Cluster:
    def __init__(self, root: str, env: dict[str, str]):
        self.root = root
        self.env = env

    def scontrol(self, *args: str) -> str:
        result = subprocess.run(
            ["scontrol", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(f"scontrol {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def job_field(self, job_id: str, field: str) -> str:
        for word in self.scontrol("show", "job", job_id).split():
            key, _, value = word.partition("=")
            if key == field:
                return value
        raise KeyError(field)

    def logs(self) -> str:
        texts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = os.path.join(self.root, name)
            if os.path.exists(path):
                with open(path) as f:
                    texts.append(f"== {name}\n" + "".join(f.readlines()[-40:]))
        return "\n".join(texts)


def _config(root: str, node: str, cpus: int, gpus: int, ports: list[int]) -> str:
    return f"""ClusterName=slttest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
# SIGTERM to SIGKILL: the processes' checkpoint save took over 60 s on a loaded machine.
KillWait=300
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _wait_for(predicate, timeout_s: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise RuntimeError(f"SLURM test cluster: {what} within {timeout_s} s\n{cluster.logs()}")


def _jobs(env: dict[str, str]) -> list[str]:
    result = subprocess.run(
        ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=60
    )
    return result.stdout.split()


def _stop(root: str, env: dict[str, str]) -> None:
    # Jobs first: job steps outlive the daemons, and a failed or interrupted test would
    # leave its training processes running.
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        if _jobs(env):
            subprocess.run(["scancel", "--full", *_jobs(env)], env=env, timeout=60)
            deadline = time.monotonic() + 60
            while _jobs(env) and time.monotonic() < deadline:
                time.sleep(0.5)
    subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True, timeout=60)
    for name in ("slurmd", "slurmctld", "munged"):
        path = os.path.join(root, f"{name}.pid")
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            with open(path) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGTERM)  # ours: started below with this pid file
            for _ in range(50):  # gone before its directory is removed
                os.kill(pid, 0)
                time.sleep(0.1)


@contextlib.contextmanager
def one_node_cluster(cpus: int = 2, gpus: int = 2) -> Iterator[Cluster]:
    """Starts munged, slurmctld and slurmd; stops them (and their jobs) on exit."""
    # A short path: munge's socket name must fit a Unix socket address.
    root = tempfile.mkdtemp(prefix="slt-slurm-")
    os.chmod(root, 0o700)
    for sub in ("state", "spool"):
        os.makedirs(os.path.join(root, sub))
    node = socket.gethostname().split(".")[0]
    key = os.path.join(root, "munge.key")
    with open(key, "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(key, 0o400)
    conf = os.path.join(root, "slurm.conf")
    with open(conf, "w") as f:
        f.write(_config(root, node, cpus, gpus, _free_ports(2)))
    with open(os.path.join(root, "gres.conf"), "w") as f:
        # slurmd counts a GPU per device file; with task/none nothing is bound to them.
        f.write(f"NodeName={node} Name=gpu File=/dev/tty[0-{gpus - 1}]\n")
    env = dict(os.environ, SLURM_CONF=conf)
    cluster = Cluster(root, env)
    try:
        subprocess.run(
            [
                "munged",
                "--force",  # root, and a key under /tmp
                f"--socket={root}/munge.sock",
                f"--key-file={key}",
                f"--pid-file={root}/munged.pid",
                f"--log-file={root}/munged.log",
                f"--seed-file={root}/munge.seed",
            ],
            check=True,
            env=env,
            capture_output=True,
            timeout=30,
        )
        subprocess.run(["slurmctld", "-f", conf, "-i"], check=True, env=env, timeout=30)
        subprocess.run(["slurmd", "-f", conf], check=True, env=env, timeout=30)

        def node_idle() -> bool:
            result = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True
            )
            return result.stdout.strip() == "idle"

        _wait_for(node_idle, 60, "the node did not become idle", cluster)
        yield cluster
    finally:
        _stop(root, env)
        shutil.rmtree(root, ignore_errors=True)
