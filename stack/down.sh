#!/usr/bin/env bash
# Stop every server of the local stack and leave no process behind. Data stays under .stack/
# unless --purge is given.
source "$(dirname "$0")/lib.sh"

# stop_pids NAME...: TERM them all at once, then wait (the nodes of a Kafka cluster must stop
# together: one left alone without a quorum cannot finish its controlled shutdown), then KILL
# what did not stop within 30 s.
stop_pids() {
  local name pid pids=()
  for name in "$@"; do
    local pidfile="$RUN_DIR/$name.pid"
    if ! pid_alive "$pidfile"; then rm -f "$pidfile"; continue; fi
    pid=$(cat "$pidfile")
    log "$name: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$name:$pid")
  done
  for entry in "${pids[@]}"; do
    name=${entry%%:*} pid=${entry##*:}
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "$name: did not stop in 30s, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$RUN_DIR/$name.pid"
  done
}

[ -d "$STACK_DIR" ] || exit 0
# The pipeline's services (stack/services.sh) go first: they hold connections to the servers.
if [ -x "$ROOT/stack/services.sh" ]; then "$ROOT/stack/services.sh" down || true; fi
stop_pids model-server
stop_pids minio
# Every Kafka node that has a pid file, whichever layout started it (one node or a cluster).
nodes=()
for pidfile in "$RUN_DIR"/kafka*.pid; do [ -e "$pidfile" ] && nodes+=("$(basename "$pidfile" .pid)"); done
[ ${#nodes[@]} -eq 0 ] || stop_pids "${nodes[@]}"
if [ -f "$STACK_DIR/postgres/data/postmaster.pid" ]; then
  log "postgres: stopping"
  as_pg "$PG_BIN/pg_ctl" -D "$STACK_DIR/postgres/data" -m fast -w stop >/dev/null || true
fi
if [ "${1:-}" = --purge ]; then log "removing $STACK_DIR"; rm -rf "$STACK_DIR"; fi
