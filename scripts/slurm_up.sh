#!/usr/bin/env bash
# Start a one-node Slurm on this machine (Debian's slurmctld, slurmd and munge), for CI and for trying
# `medablate run --executor slurm` without a cluster. Needs root (apt-get, /etc/slurm). Safe to run again: a Slurm
# that already answers is left as it is. Exits non-zero when the node is not idle within a minute.
# Never run it on a real cluster's node: it refuses to replace a slurm.conf it did not write.
set -euo pipefail
STATE=${MEDABLATE_SLURM_STATE:-/tmp/medablate-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by medablate scripts/slurm_up.sh"

node_idle() { timeout 5 sinfo -h -N -o "%T" 2>/dev/null | grep -qE "^(idle|mixed|allocated)"; }

if command -v sinfo >/dev/null 2>&1 && node_idle; then
    echo "slurm: already running ($(sinfo -h -N -o '%N %c CPUs %T' | head -1))"
    exit 0
fi
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "slurm: $CONF exists and was not written by this script: not replacing it (is this a cluster node?)" >&2
    exit 1
fi
HOST=$(hostname -s)
mkdir -p "$STATE"/{state,spool,log} /etc/slurm /run/munge /var/log/munge /var/lib/munge
cat >"$CONF" <<EOF
$MARK
ClusterName=medablate
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobRequeue=1
KillWait=5
MinJobAge=600
ReturnToService=2
NodeName=$HOST CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
# munge: one key, its daemon running as root (no systemd here)
[ -s /etc/munge/munge.key ] || mungekey -c -f -k /etc/munge/munge.key
chown -R root:root /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 700 /etc/munge && chmod 600 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --force
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if node_idle; then
        echo "slurm: up ($(sinfo -h -N -o '%N %c CPUs %T' | head -1))"
        exit 0
    fi
    sleep 1
done
echo "slurm: the node did not become idle within 60 s; logs in $STATE/log:" >&2
tail -n 20 "$STATE"/log/*.log >&2 || true
exit 1
