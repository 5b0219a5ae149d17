#!/usr/bin/env bash
# Start, check or stop amberscan's own processes on the local stack: the demo tile server, the
# streaming services and the web map. One process each, pid and log under .stack/services/
# (AMBERSCAN_STACK_DIR/services).
#   stack/services.sh up|status|down [SERVICE...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=${AMBERSCAN_STACK_DIR:-$root/.stack}/services
mkdir -p "$state"
bin=$root/.venv/bin/amberscan
all=(demo-tiles tiler segmenter feature classifier aggregator sink web watch)
action=${1:-status}
shift || true
names=("${@:-${all[@]}}")
[ ${#names[@]} -gt 0 ] || names=("${all[@]}")

command_of() {
  case $1 in
    demo-tiles) echo "$bin demo-tiles" ;;
    web) echo "$bin serve web" ;;
    *) echo "$bin serve $1" ;;
  esac
}

running() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

case $action in
  up)
    for name in "${names[@]}"; do
      if running "$name"; then continue; fi
      # shellcheck disable=SC2046
      nohup $(command_of "$name") >>"$state/$name.log" 2>&1 &
      echo $! >"$state/$name.pid"
      echo "[services] started $name (pid $!, log $state/$name.log)"
    done
    sleep 2
    for name in "${names[@]}"; do
      running "$name" || { echo "[services] $name exited; last log lines:"; tail -n 20 "$state/$name.log"; exit 1; }
    done
    ;;
  status)
    bad=0
    for name in "${names[@]}"; do
      if running "$name"; then echo "$name: running (pid $(cat "$state/$name.pid"))"; else echo "$name: DOWN"; bad=1; fi
    done
    exit $bad
    ;;
  down)
    for name in "${names[@]}"; do
      if running "$name"; then kill -TERM "$(cat "$state/$name.pid")" 2>/dev/null || true; fi
    done
    for name in "${names[@]}"; do
      for _ in $(seq 1 50); do running "$name" || break; sleep 0.2; done
      if running "$name"; then kill -KILL "$(cat "$state/$name.pid")" 2>/dev/null || true; fi
      rm -f "$state/$name.pid"
    done
    ;;
  *) echo "usage: stack/services.sh up|status|down [SERVICE...]" >&2; exit 2 ;;
esac
