#!/usr/bin/env bash
# A real single-node Slurm on loopback, with fake GPUs, for tests and CI.
#
#   scripts/slurm-local.sh install   apt-get the Debian packages (root; skipped when present)
#   scripts/slurm-local.sh start     install if needed, write the config under $BASE, start
#                                    slurmctld + slurmd, wait (bounded) until the node is idle
#   scripts/slurm-local.sh stop      stop the daemons by the PIDs they wrote, nothing else
#   scripts/slurm-local.sh status    print the node state, exit 1 when no controller answers
#   scripts/slurm-local.sh env       print the `export SLURM_CONF=...` line for clients
#
# Environment: BASE (default /tmp/ppodd-slurm; everything lives there), GPUS (fake GPUs through
# GRES, default 2). Auth is auth/none: any local user could act as any other, which is fine on a
# loopback-only test box and nowhere else. No slurmdbd, so no sacct: every wait must be bounded.
set -euo pipefail
BASE=${BASE:-/tmp/ppodd-slurm}
GPUS=${GPUS:-2}
export SLURM_CONF=$BASE/etc/slurm.conf

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; then
    return 0
  fi
  [ "$(id -u)" = 0 ] || { echo "slurm-local: installing Slurm needs root" >&2; return 1; }
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -q >/dev/null
  timeout 600 apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client >/dev/null
}

write_conf() {
  mkdir -p "$BASE"/{etc,state,spool,log,run}
  local cpus mem gres_line="" gres_types=""
  cpus=$(nproc)
  mem=$(( $(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p') - 1024 ))
  if [ "$GPUS" -gt 0 ]; then
    # Character devices (major/minor of /dev/null): slurmd then sets CUDA_VISIBLE_DEVICES per task.
    mkdir -p "$BASE/dev"
    for i in $(seq 0 $((GPUS - 1))); do
      [ -e "$BASE/dev/nvidia$i" ] || mknod "$BASE/dev/nvidia$i" c 1 3
    done
    printf 'AutoDetect=off\nNodeName=localhost Name=gpu File=%s/dev/nvidia[0-%d]\n' "$BASE" $((GPUS - 1)) \
      > "$BASE/etc/gres.conf"
    gres_line=" Gres=gpu:$GPUS"
    gres_types="GresTypes=gpu"
  fi
  cat > "$SLURM_CONF" <<CONF
ClusterName=ppoddlocal
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/%n
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
MailProg=/bin/true
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1
AuthInfo=cred_expire=5
$gres_types
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$gres_line State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

node_idle() { timeout 5 sinfo -h -N -o '%N %t' 2>/dev/null | grep -q '^localhost idle'; }

start() {
  install_packages
  if [ -f "$BASE/run/slurmctld.pid" ] && kill -0 "$(cat "$BASE/run/slurmctld.pid")" 2>/dev/null; then
    echo "slurm-local: already running under $BASE" >&2
  else
    rm -rf "$BASE/state"  # old jobs and the job-id counter would come back otherwise
    write_conf
    /usr/sbin/slurmctld
    /usr/sbin/slurmd -N localhost
  fi
  for _ in $(seq 150); do
    if node_idle; then echo "export SLURM_CONF=$SLURM_CONF"; return 0; fi
    sleep 0.2
  done
  echo "slurm-local: node not idle after 30 s; logs:" >&2
  tail -n 20 "$BASE"/log/*.log >&2 || true
  return 1
}

stop() {
  # slurmd first: with no controller to answer it sits in registration retries.
  local f p
  for f in slurmd-localhost slurmctld; do
    f=$BASE/run/$f.pid
    [ -f "$f" ] || continue
    p=$(cat "$f")
    kill "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then kill -9 "$p"; fi
    rm -f "$f"
  done
}

status() {
  if [ -f "$SLURM_CONF" ] && timeout 5 sinfo -h -N -o '%N %t %G' 2>/dev/null; then return 0; fi
  echo "slurm-local: no controller answers (SLURM_CONF=$SLURM_CONF)" >&2
  return 1
}

case "${1:-}" in
  install) install_packages ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  *) echo "usage: $0 install|start|stop|status|env  (env BASE=$BASE GPUS=$GPUS)" >&2; exit 2 ;;
esac
