#!/bin/bash
# Stop the cluster started by start_cluster.sh DIR: each daemon by the pid it recorded
# (SIGTERM to all at once, SIGKILL to any still there after 5 s).
DIR=$(realpath -m "${1:?usage: stop_cluster.sh DIR}")
pids=()
for pidfile in "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid" "$DIR/run/munged.pid"; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null && pids+=("$pid")
done
for _ in $(seq 50); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && exit 0
  sleep 0.1
done
for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
exit 0
