#!/bin/bash
# System packages the tests need, installed as root by .ci/run (Debian):
#   g++                  DeepSpeed JIT-compiles a small CPU op per process (tests/test_deepspeed.py)
#   iproute2             'ip netns' makes the two hosts of tests/test_multinode.py
#   slurmctld slurmd slurm-client munge
#                        the throwaway SLURM cluster of tests/test_slurm.py (tests/slurm/start_cluster.sh)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  g++ iproute2 \
  slurmctld slurmd slurm-client munge
# The munge package creates /etc/munge/munge.key at install; make one if an image skipped it.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chmod 400 /etc/munge/munge.key
fi
