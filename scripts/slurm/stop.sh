#!/usr/bin/env bash
# Stop the daemons scripts/slurm/start.sh started (by the PIDs it recorded), newest first.
set -uo pipefail
D=${PLANLIFT_SLURM_DIR:-/tmp/planlift-slurm}
for name in slurmd slurmctld slurmdbd mariadbd munged; do
  file="$D/pids/$name.pid"
  [ -f "$file" ] || continue
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "[slurm/stop] stopped $name ($pid)"
  fi
  rm -f "$file"
done
