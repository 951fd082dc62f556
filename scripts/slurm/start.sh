#!/usr/bin/env bash
# Start a private single-node SLURM with accounting on 127.0.0.1 (munge, MariaDB, slurmdbd, slurmctld, slurmd).
# Used by the `slurm` test tier and for trying sweeps locally:
#   bash scripts/slurm/start.sh && source "${PLANLIFT_SLURM_DIR:-/tmp/planlift-slurm}/env.sh"
#   python src/train.py -m -cd sweeps -cn reward_ablation debug=fast hydra/launcher=slurm
#   bash scripts/slurm/stop.sh
# Installs the Debian packages when they are missing (root, apt). Every daemon it starts writes its PID to
# $PLANLIFT_SLURM_DIR/pids/; stop.sh stops exactly those. Ports: 6817-6819 (SLURM), 3399 (MariaDB).
set -euo pipefail
D=${PLANLIFT_SLURM_DIR:-/tmp/planlift-slurm}
DB_PORT=${PLANLIFT_SLURM_DB_PORT:-3399}
HOST=$(hostname)
log() { echo "[slurm/start] $*"; }

if ! command -v slurmctld >/dev/null || ! command -v mariadbd >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm, munge, slurmdbd, mariadb-server"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
fi
if [ -f "$D/pids/slurmctld.pid" ] && kill -0 "$(cat "$D/pids/slurmctld.pid")" 2>/dev/null; then
  log "already running ($D)"; exit 0
fi
start=$(date +%s)
HERE=$(cd "$(dirname "$0")" && pwd)
trap 'log "start failed; stopping what was started (logs in $D/log)"; bash "$HERE/stop.sh"' ERR
# a fresh cluster each start: job ids restart at 1, so old accounting records must go too
rm -rf "$D/state" "$D/spool" "$D/log" "$D/pids" "$D/mysql"
mkdir -p "$D"/{state,spool,log,pids,mysql}
chmod 755 "$D"
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 85 / 100 / 1024 ))
CPUS=$(getconf _NPROCESSORS_ONLN)   # not nproc: it honours OMP_NUM_THREADS

cat > "$D/slurm.conf" <<CONF
ClusterName=planlift
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
KillWait=5
InactiveLimit=0
MinJobAge=600
JobRequeue=1
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile=$D/pids/slurmctld.pid
SlurmdPidFile=$D/pids/slurmd.pid
SlurmdSpoolDir=$D/spool
StateSaveLocation=$D/state
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

cat > "$D/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=$HOST
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$D/pids/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
CONF
chmod 600 "$D/slurmdbd.conf"
export SLURM_CONF="$D/slurm.conf"
printf 'export SLURM_CONF=%q\n' "$SLURM_CONF" > "$D/env.sh"

# munge: reuse a running munged (the socket is machine-wide), else start one and record it
if ! munge -n </dev/null >/dev/null 2>&1; then
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$D/pids/munged.pid"
fi

# MariaDB: a private data directory and socket, TCP on 127.0.0.1 only
mariadb-install-db --datadir="$D/mysql" --user=root --auth-root-authentication-method=socket >"$D/log/mariadb-install.log" 2>&1
mariadbd --datadir="$D/mysql" --socket="$D/mysqld.sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
  --user=root --pid-file="$D/mysqld.pid" --log-error="$D/log/mariadb.log" --skip-log-bin >/dev/null 2>&1 &
echo $! > "$D/pids/mariadbd.pid"
for _ in $(seq 150); do [ -S "$D/mysqld.sock" ] && mariadb --socket="$D/mysqld.sock" -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
mariadb --socket="$D/mysqld.sock" <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

slurmdbd
for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.2; done
sacctmgr -i add cluster planlift >/dev/null 2>&1 || true
slurmctld -c
slurmd -c
for _ in $(seq 300); do
  if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
    log "idle after $(( $(date +%s) - start ))s; source $D/env.sh"; exit 0
  fi
  sleep 0.2
done
log "SLURM did not reach idle; logs in $D/log"; sinfo || true
bash "$HERE/stop.sh"; exit 1
