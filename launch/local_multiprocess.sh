#!/usr/bin/env bash
# Start one slt job as N processes on this machine (CPU; each process gets
# DEVICES fake devices), the way a multi-host job runs: every process runs the same
# command, and jax.distributed connects them through process 0 at 127.0.0.1:PORT.
#   launch/local_multiprocess.sh 2 4 --gin_file=runs/demo.gin --gin.MODEL_DIR=\"/tmp/mp\"
# On real clusters set SLT_COORDINATOR_ADDRESS / SLT_NUM_PROCESSES / SLT_PROCESS_ID
# per host the same way (or SLT_DISTRIBUTED_AUTO=1 on TPU pods and SLURM).
set -euo pipefail
num_processes=$1; devices=$2; shift 2
port=${PORT:-$((20000 + RANDOM % 20000))}
pids=()
for ((i = 0; i < num_processes; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${devices}" \
  SLT_COORDINATOR_ADDRESS="127.0.0.1:${port}" SLT_NUM_PROCESSES="${num_processes}" \
  SLT_PROCESS_ID="${i}" python -m slt.train "$@" > >(sed "s/^/[process ${i}] /") 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "${pid}" || status=$?; done
exit "${status}"
