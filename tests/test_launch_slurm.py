"""launch/slurm.sbatch on a real one-node SLURM cluster (munged, slurmctld, slurmd from
Debian's slurm-wlm, started by tests/slurm_cluster.py; `.ci/run` installs them).

`sbatch --wait` runs the tiny demo as 2 tasks on a node with 2 GPUs (a generic
resource: JAX runs on one CPU device per task): both tasks join one jax.distributed
job through JAX's SLURM detection, `scontrol requeue` stops it mid-run (SIGTERM:
every process saves the same step and exits 0), the requeued job resumes from that
checkpoint, finishes and sbatch exits 0.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import slurm_cluster
from tiny_train_flags import TINY_TRAIN_FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Steps take milliseconds: the requeue comes about a second after the first logged step,
# so the first run is stopped well before STEPS and the requeued one has steps left.
STEPS = 100

pytestmark = [
    pytest.mark.skipif(
        bool(slurm_cluster.missing_binaries()),
        reason=f"slurm-wlm and munge are not installed ({slurm_cluster.missing_binaries()} "
        "missing): apt-get install slurm-wlm munge, as .ci/run does where it is root",
    ),
    # tests/slurm_cluster.py runs the daemons and jobs as root (SlurmUser=root), as a
    # real cluster's slurmd runs; it was not tried as another user.
    pytest.mark.skipif(
        os.geteuid() != 0, reason="the test's SLURM cluster runs its daemons as root"
    ),
]


def _logged_steps(model_dir):
    path = model_dir / "train" / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if '"loss"' in line]


def _wait(predicate, timeout_s, what, cluster, output, sbatch=None):
    """Waits for `predicate`; fails at once, with the job's output, when `sbatch --wait`
    (if given) has ended (the job ended: it failed, or finished before the awaited state)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if sbatch is not None and sbatch.poll() is not None:
            text = output.read_text() if output.exists() else ""
            raise AssertionError(
                f"{what}: the job ended (sbatch exited with {sbatch.returncode})\n"
                f"{sbatch.stdout.read()}\n{text[-3000:]}\n{cluster.logs()}"
            )
        time.sleep(0.2)
    text = output.read_text() if output.exists() else ""
    raise AssertionError(f"{what} within {timeout_s} s\n{text[-3000:]}\n{cluster.logs()}")


# The cost is four process starts (2 tasks, run twice): no eval, no periodic checkpoint
# (the SIGTERM save and the final one are what is checked), a small clip buffer.
def test_sbatch_two_tasks_join_checkpoint_requeue_and_resume(tmp_path):
    model_dir, output = tmp_path / "run", tmp_path / "slurm.out"
    flags = [
        *TINY_TRAIN_FLAGS,
        f"--gin.train.train_steps={STEPS}",
        f"--gin.slt.OptimizerConfig.decay_steps={STEPS}",
        f"--gin.slt.CheckpointConfig.period={STEPS}",
        "--gin.slt.EvalConfig.final=False",
        "--gin.slt.InputConfig.num_input_shards=2",
        "--gin.slt.PartitioningConfig.donate_state=False",
        # The demo's words with a clip buffer of 8 (the words are shuffled before any clip
        # is composed), not 2,048 composed clips to fill before the first batch: that
        # fill, paid again when the resumed run replays its input, was most of the cost.
        '--gin.train.mixture_or_task_name="fingerspelling_word_slt_ase_en"',
    ]
    with slurm_cluster.one_node_cluster(cpus=2, gpus=2) as cluster:
        env = dict(
            cluster.env,
            MODEL_DIR=str(model_dir),
            JAX_PLATFORMS="cpu",
            XLA_FLAGS="--xla_force_host_platform_device_count=1",
            # The job runs `python` from PATH: this interpreter's, as in an activated
            # virtual environment, even where the tests run one that is not activated.
            PATH=os.pathsep.join([os.path.dirname(sys.executable), cluster.env.get("PATH", "")]),
        )
        sbatch = subprocess.Popen(
            [
                "sbatch",
                "--wait",
                "--nodes=1",
                "--ntasks-per-node=2",
                "--gpus-per-node=2",
                "--cpus-per-task=1",
                f"--output={output}",
                "launch/slurm.sbatch",
                *flags,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            # Generous limits: on a loaded 2-core machine two starting jobs take minutes.
            _wait(lambda: _logged_steps(model_dir), 1500, "no step logged", cluster, output, sbatch)
            job_id = subprocess.run(
                ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True
            ).stdout.split()[0]
            cluster.scontrol("requeue", job_id)
            # SLURM holds a requeued job back for a while; start it as soon as it is queued.
            _wait(
                lambda: cluster.job_field(job_id, "JobState") == "PENDING",
                120,
                "the requeued job did not return to the queue",
                cluster,
                output,
            )
            cluster.scontrol("update", f"jobid={job_id}", "StartTime=now")
            submitted, _ = sbatch.communicate(timeout=1500)
        finally:
            if sbatch.poll() is None:
                sbatch.kill()
        text = output.read_text()
        assert sbatch.returncode == 0, submitted + text[-4000:] + cluster.logs()
    assert re.search(r"restart 0, 2 tasks on 1 node", text) and "restart 1, 2 tasks" in text
    for process in (0, 1):  # JAX's SLURM detection joined both tasks, in both runs
        assert text.count(f"jax.distributed: process {process} of 2 processes") == 2, text[-3000:]
    saved = [int(s) for s in re.findall(r"SIGTERM: saved step (\d+)", text)]
    # Each process printed the one step they agreed on (JAX's preemption sync point).
    assert len(saved) == 2 and saved[0] == saved[1] and 0 < saved[0] < STEPS, text[-3000:]
    checkpoints = sorted(
        int(p.name) for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert checkpoints[-1] == STEPS
    # The requeued run went on from the saved step, not from the start.
    steps = _logged_steps(model_dir)
    assert steps[-1] == STEPS and steps.count(saved[0] + 1) == 1, steps
