#!/bin/bash
# Start a throwaway SLURM cluster (munged + slurmctld + slurmd) from Debian's packages,
# everything under DIR, as root. Prints the environment to use it:
#   eval "$(tests/slurm/start_cluster.sh DIR [CPUS])"   ->  SLURM_CONF, PATH (with the sacct stand-in)
# Stop it with tests/slurm/stop_cluster.sh DIR.
#
# One node (this host) by default. With NODES="name=addr@netns ..." each node's slurmd runs
# in its own network namespace (nsenter --net, so the daemon really lives there) and
# slurmctld in the first node's; clients then run in that namespace too
# (ip netns exec NETNS sbatch ...). Each node gets CPUS cpus.
#
# Known traps handled here: munged wants its socket directory and every parent at mode 755;
# there is no accounting database, so a small sacct stand-in (reading scontrol) goes first on
# PATH for submitit; job ids restart at 1 with a fresh state directory; the scheduler
# parameters make back-to-back jobs start in about a second.
set -euo pipefail
DIR=$(realpath -m "${1:?usage: start_cluster.sh DIR [CPUS]}")
CPUS=${2:-$(nproc)}
HERE=$(cd "$(dirname "$0")" && pwd)
HOST=$(hostname -s)  # slurmctld checks that it runs on SlurmctldHost's name
# Free ports: several clusters (parallel test sessions) may run on one machine.
read -r CTLD_PORT SLURMD_PORT < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)

mkdir -p "$DIR"/{state,spool,log,run,munge}
chmod 755 "$DIR" "$DIR/munge" "$DIR/run"
# munged checks the socket directory and each parent: none may be writable by others.
for d in "$DIR" "$(dirname "$DIR")"; do
  [ "$d" = /tmp ] || chmod go-w "$d"
done
SOCK="$DIR/munge/munge.socket.2"

munged --force --socket="$SOCK" --key-file=/etc/munge/munge.key --log-file="$DIR/log/munged.log" \
  --pid-file="$DIR/run/munged.pid" --seed-file="$DIR/munge/munged.seed"

MEM=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
if [ -n "${NODES:-}" ]; then
  read -r -a SPECS <<< "$NODES"
else
  SPECS=("$HOST=127.0.0.1@")
fi
NAMES=()
NODE_LINES=""
for spec in "${SPECS[@]}"; do
  name=${spec%%=*}; rest=${spec#*=}; addr=${rest%@*}
  NAMES+=("$name")
  NODE_LINES+="NodeName=$name NodeAddr=$addr CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"$'\n'
done
FIRST_ADDR=${SPECS[0]#*=}; FIRST_ADDR=${FIRST_ADDR%@*}
FIRST_NS=${SPECS[0]##*@}
in_ns() {  # run a daemon in a node's network namespace (or here when none)
  local ns=$1; shift
  if [ -n "$ns" ]; then nsenter --net="/var/run/netns/$ns" "$@"; else "$@"; fi
}

cat > "$DIR/slurm.conf" <<CONF
ClusterName=harness
SlurmctldHost=$HOST($FIRST_ADDR)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MailProg=/bin/true
${NODE_LINES}PartitionName=debug Nodes=$(IFS=,; echo "${NAMES[*]}") Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF="$DIR/slurm.conf"
in_ns "$FIRST_NS" slurmctld -i -f "$SLURM_CONF" 2>>"$DIR/log/slurmctld.stderr"
for spec in "${SPECS[@]}"; do
  in_ns "${spec##*@}" slurmd -N "${spec%%=*}" -f "$SLURM_CONF" 2>>"$DIR/log/slurmd.stderr"
done

# Ready when every node is idle.
for _ in $(seq 100); do
  if [ "$(in_ns "$FIRST_NS" sinfo -h -N -o %t 2>/dev/null | grep -c '^idle')" = "${#SPECS[@]}" ]; then
    echo "export SLURM_CONF=$SLURM_CONF"
    echo "export PATH=$HERE/bin:\$PATH"
    exit 0
  fi
  sleep 0.1
done
echo "SLURM cluster in $DIR did not become ready; see $DIR/log" >&2
in_ns "$FIRST_NS" sinfo -N -l >&2 || true
exit 1
