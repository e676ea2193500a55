#!/usr/bin/env bash
# Starts N local processes of one kd run on JAX's multi-controller runtime
# (CPU collectives over gloo), e.g. to rehearse a multi-host job on one box:
#
#   launch/local_multihost.sh 2 --config=configs/quickstart.py --workdir=/tmp/mh
#
# Each process gets KD_DEVICES_PER_PROCESS simulated CPU devices (default 2).
# Process 0 prints and logs; the others' output goes to WORKDIR-less logs in
# ${KD_LOG_DIR:-/tmp}/kd_process_<i>.log.
set -euo pipefail
n=${1:?usage: local_multihost.sh NUM_PROCESSES ARGS...}
shift
port=${KD_PORT:-$((20000 + RANDOM % 20000))}
devices=${KD_DEVICES_PER_PROCESS:-2}
log_dir=${KD_LOG_DIR:-/tmp}
pids=()
for ((i = 0; i < n; i++)); do
  env JAX_PLATFORMS=cpu \
      XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${devices}" \
      KD_COORDINATOR="127.0.0.1:${port}" KD_NUM_PROCESSES="$n" KD_PROCESS_ID="$i" \
      python -m kd.main "$@" > >(if ((i == 0)); then cat; else cat > "${log_dir}/kd_process_${i}.log"; fi) 2>&1 &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
