#!/usr/bin/env bash
# Stop every server of the local stack and leave no process behind. Data stays under .stack/
# unless --purge is given.
source "$(dirname "$0")/lib.sh"

stop_pid() {
  local name=$1 pidfile="$RUN_DIR/$1.pid"
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; return; fi
  local pid; pid=$(cat "$pidfile")
  log "$name: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "$name: did not stop in 30s, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
}

[ -d "$STACK_DIR" ] || exit 0
# The pipeline's services (stack/services.sh) go first: they hold connections to the servers.
if [ -x "$ROOT/stack/services.sh" ]; then "$ROOT/stack/services.sh" down || true; fi
stop_pid model-server
stop_pid minio
stop_pid kafka
if [ -f "$STACK_DIR/postgres/data/postmaster.pid" ]; then
  log "postgres: stopping"
  as_pg "$PG_BIN/pg_ctl" -D "$STACK_DIR/postgres/data" -m fast -w stop >/dev/null || true
fi
if [ "${1:-}" = --purge ]; then log "removing $STACK_DIR"; rm -rf "$STACK_DIR"; fi
