#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine (Debian's SLURM 22.05), to test dqn's SLURM
# launcher against: slurmctld and slurmd on localhost, with slurmdbd and a MariaDB of its own
# for accounting (submitit reads job states with sacct, which needs it).
#
#   scripts/slurm_local.sh start     # install what is missing (apt, as root), start, wait for an idle node
#   scripts/slurm_local.sh status    # the daemons it started, and sinfo
#   scripts/slurm_local.sh stop      # stop the daemons it started (by their PID files), nothing else
#   eval "$(scripts/slurm_local.sh env)"   # SLURM_CONF for sbatch/squeue/sacct/scancel in this shell
#
# Everything (configs, state, logs, PID files, the database) lives under SLURM_LOCAL_DIR
# (default /tmp/dqn-slurm); /etc is not touched. Clients find the cluster through SLURM_CONF,
# which `env` prints. One node: this host, its CPUs and 90% of its memory, partition `debug`.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/dqn-slurm}
CLUSTER=dqnlocal
DB_PORT=${SLURM_LOCAL_DB_PORT:-3307}
export SLURM_CONF="$DIR/etc/slurm.conf"
NODE=$(hostname -s)
# munge's default socket: sacctmgr and sacct reach slurmdbd through it whatever AuthInfo says
MUNGE_SOCKET=/run/munge/munge.socket.2
DAEMONS=(mariadb munged slurmdbd slurmctld slurmd)

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit 1; }

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurm-wlm)
  command -v slurmdbd >/dev/null || missing+=(slurmdbd)
  command -v munged >/dev/null || missing+=(munge)
  command -v mariadbd >/dev/null || missing+=(mariadb-server)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; run as root to install them (apt), or install them yourself"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them with"
  log "installing ${missing[*]} (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

pid_of() { # the PID a daemon wrote, if that process still runs
  local f="$DIR/run/$1.pid"
  [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
  return 0
}

wait_for() { # wait_for SECONDS WHAT COMMAND... (a program, or a function of this script that times out itself)
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if [ "$(type -t "$1")" = function ]; then
      "$@" >/dev/null 2>&1 && return 0
    elif timeout 10 "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.5
  done
  die "$what did not come up in ${seconds}s (logs: $DIR/log/)"
}

write_configs() {
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  mkdir -p "$DIR"/{etc,run,log,ctld,spool,munge,mysql}
  chmod 700 "$DIR/munge"
  cat >"$SLURM_CONF" <<EOF
# written by scripts/slurm_local.sh: one node, this host
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# the signal sbatch --signal=USR2@T asks for is sent up to a minute early (SLURM's own granularity)
KillWait=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
# written by scripts/slurm_local.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
  if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
  fi
}

mysql_cli() { timeout 10 mariadb --no-defaults --connect-timeout=5 --socket="$DIR/run/mysql.sock" -uroot "$@"; }

start_mariadb() {
  if [ -z "$(pid_of mariadb)" ]; then
    init_and_run_mariadb
  fi
  wait_for 180 MariaDB mysql_cli -e "SELECT 1"
  # every start, so a start cut off before this line is mended by the next one
  mysql_cli -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

init_and_run_mariadb() {
  if [ ! -d "$DIR/mysql/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --auth-root-authentication-method=socket \
      >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $DIR/log/mariadb-install.log)"
  fi
  mariadbd --no-defaults --datadir="$DIR/mysql" --user=root --socket="$DIR/run/mysql.sock" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve --innodb-lock-wait-timeout=900 --pid-file="$DIR/run/mariadb.pid" \
    --log-error="$DIR/log/mariadb.log" >/dev/null 2>&1 &
}

start() {
  install_packages
  write_configs
  start_mariadb
  if [ -z "$(pid_of munged)" ]; then
    [ -S "$MUNGE_SOCKET" ] && die "a munged not started by this script holds $MUNGE_SOCKET; stop it first"
    mkdir -p "$(dirname "$MUNGE_SOCKET")"
    munged --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
      --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"
    wait_for 20 munged test -S "$MUNGE_SOCKET"
  fi
  [ -n "$(pid_of slurmdbd)" ] || slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -i -n add cluster "$CLUSTER" >/dev/null 2>&1 || true # already there on a restart
  [ -n "$(pid_of slurmctld)" ] || slurmctld
  wait_for 60 slurmctld scontrol ping
  [ -n "$(pid_of slurmd)" ] || slurmd
  wait_for 120 "the node $NODE (idle)" node_up
  log "up: partition debug, node $NODE ($(nproc) CPUs); clients need: export SLURM_CONF=$SLURM_CONF"
}

# up: idle, or running jobs (mix, alloc) when start is called on a cluster that is already up
node_up() { timeout 10 sinfo -h -n "$NODE" -o %t | grep -Eq '^(idle|mix|alloc)'; }

stop() {
  local pid
  for d in slurmd slurmctld slurmdbd munged mariadb; do # the reverse of the start order
    pid=$(pid_of "$d")
    [ -n "$pid" ] || continue
    kill "$pid"
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    log "stopped $d ($pid)"
  done
  return 0
}

status() {
  local pid up=0
  for d in "${DAEMONS[@]}"; do
    pid=$(pid_of "$d")
    if [ -n "$pid" ]; then echo "$d running ($pid)"; up=$((up + 1)); else echo "$d not running"; fi
  done
  [ "$up" -eq "${#DAEMONS[@]}" ] && sinfo
  [ "$up" -eq "${#DAEMONS[@]}" ]
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
