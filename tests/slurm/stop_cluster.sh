#!/bin/bash
# Stop the cluster started by start_cluster.sh DIR: each daemon by the pid it recorded.
DIR=$(realpath -m "${1:?usage: stop_cluster.sh DIR}")
for pidfile in "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid" "$DIR/run/munged.pid"; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
done
