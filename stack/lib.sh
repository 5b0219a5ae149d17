# Shared by the stack scripts: where things live, which ports, small helpers. Sourced, not run.
# Every value can be overridden from the environment.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${AMBERSCAN_STACK_DIR:-$ROOT/.stack}"
# Downloaded or built artefacts (Kafka jars, MinIO binary) are cached outside the checkout, so a
# fresh clone on the same machine does not fetch or compile them again.
CACHE_DIR="${AMBERSCAN_CACHE_DIR:-$HOME/.cache/amberscan}"
LOG_DIR="$STACK_DIR/logs"
RUN_DIR="$STACK_DIR/run"

KAFKA_VERSION=4.3.1
# Ports follow the same AMBERSCAN_* variables the services read (one source of truth).
KAFKA_BOOTSTRAP="${AMBERSCAN_KAFKA_BOOTSTRAP:-127.0.0.1:19092}"
KAFKA_FIRST="${KAFKA_BOOTSTRAP%%,*}"
KAFKA_PORT="${KAFKA_FIRST##*:}"
KAFKA_CONTROLLER_PORT="${AMBERSCAN_STACK_KAFKA_CONTROLLER_PORT:-19093}"
# 1: one combined broker+controller (the default). 3: a KRaft cluster as production runs it,
# three nodes each a broker and a controller voter, node i on KAFKA_PORT + 2(i-1) and its
# controller on KAFKA_CONTROLLER_PORT + 2(i-1); topics then want replication factor 3 and
# min.insync.replicas 2 (AMBERSCAN_TOPIC_REPLICATION_FACTOR, AMBERSCAN_TOPIC_MIN_INSYNC_REPLICAS).
KAFKA_BROKERS="${AMBERSCAN_STACK_KAFKA_BROKERS:-1}"
case "$KAFKA_BROKERS" in 1|3) ;; *) echo "AMBERSCAN_STACK_KAFKA_BROKERS must be 1 or 3" >&2; exit 1 ;; esac
if [ "$KAFKA_BROKERS" = 1 ]; then KAFKA_DEFAULT_HEAP="-Xms256m -Xmx768m"; else KAFKA_DEFAULT_HEAP="-Xms128m -Xmx512m"; fi
KAFKA_HEAP="${AMBERSCAN_STACK_KAFKA_HEAP:-$KAFKA_DEFAULT_HEAP}"
KAFKA_LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"

# MinIO publishes no semver tags; this is the module's pseudo-version of the pinned commit.
MINIO_VERSION="${AMBERSCAN_STACK_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
MINIO_BIN="$CACHE_DIR/minio-$MINIO_VERSION/minio"
S3_ENDPOINT="${AMBERSCAN_S3_ENDPOINT:-127.0.0.1:19000}"
MINIO_PORT="${S3_ENDPOINT##*:}"
MINIO_CONSOLE_PORT="${AMBERSCAN_STACK_MINIO_CONSOLE_PORT:-19001}"
MINIO_USER="${AMBERSCAN_S3_ACCESS_KEY:-amberscan}"
MINIO_PASSWORD="${AMBERSCAN_S3_SECRET_KEY:-amberscan-secret}"

# kustomize builds the k8s overlays in the tests (tests/deploy); the newest release needs a newer
# Go than Debian's, this one builds with it.
KUSTOMIZE_VERSION=v5.6.0
KUSTOMIZE_BIN="$CACHE_DIR/kustomize-$KUSTOMIZE_VERSION/kustomize"

PG_BIN="${AMBERSCAN_STACK_PG_BIN:-/usr/lib/postgresql/15/bin}"
DATABASE_URL="${AMBERSCAN_DATABASE_URL:-postgresql://postgres@127.0.0.1:15432/amberscan}"
PG_PORT="$(sed -E 's#^.*:([0-9]+)/.*$#\1#' <<<"$DATABASE_URL")"
PG_DB=amberscan
PG_USER=postgres  # initdb refuses root: the cluster belongs to this system user


# The local stack is the demo: its services may use the built-in credentials (the web map
# refuses them otherwise, #26 defect 9).
export AMBERSCAN_DEMO="${AMBERSCAN_DEMO:-1}"
# Its source policy (#26 defect 8), as the Makefile's: imagery servers on loopback over plain
# HTTP, files in the checkout, the stack's bucket.
export AMBERSCAN_SOURCE_SCHEMES="${AMBERSCAN_SOURCE_SCHEMES:-https,http,s3}"
export AMBERSCAN_SOURCE_ALLOWED_HOSTS="${AMBERSCAN_SOURCE_ALLOWED_HOSTS:-*,127.0.0.1,localhost,::1}"
export AMBERSCAN_SOURCE_ALLOWED_ROOTS="${AMBERSCAN_SOURCE_ALLOWED_ROOTS:-$ROOT}"
export AMBERSCAN_SOURCE_ALLOWED_BUCKETS="${AMBERSCAN_SOURCE_ALLOWED_BUCKETS:-amberscan}"

MODEL_SERVER="${AMBERSCAN_MODEL_SERVER:-127.0.0.1:18500}"
MODEL_PORT="${MODEL_SERVER##*:}"

export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shared_data [PART]: the labelled texty-amber data set (or its PART/ folder), found by the one
# rule of services/amberscan/common/data.py: AMBERSCAN_SHARED_DATA, else shared/data/texty-amber
# beside the checkout or a folder above it. Fails naming every place it looked at.
shared_data() {
  local python="$ROOT/.venv/bin/python"
  [ -x "$python" ] || python=python3  # a worktree without its own .venv uses the one on PATH
  "$python" -m amberscan.common.data "$@" || die "the shared data set is needed here"
}

# as_pg CMD...: run a command as the cluster's owner (we may be root, or that user already).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

# pid_alive PIDFILE: the process its first line names exists and is not a zombie (a killed child
# not yet reaped). The first line: PostgreSQL's postmaster.pid holds more after it.
# Read from /proc rather than ps: procps is not on every minimal machine.
pid_alive() {
  [ -f "$1" ] || return 1
  local stat; stat=$(cat "/proc/$(head -n1 "$1")/stat" 2>/dev/null) || return 1
  stat=${stat##*) }  # the state letter follows the command name, which may hold spaces
  [ "${stat%% *}" != Z ]
}

# pid_exists PID: any process, a zombie included, has that pid.
pid_exists() { [ -n "$1" ] && [ -e "/proc/$1" ]; }

# wait_for NAME SECONDS CMD...: poll CMD until it succeeds, or fail naming the log to read.
wait_for() {
  local name=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      die "$name did not answer within ${seconds}s; see $LOG_DIR/$name.log"
    fi
    sleep 0.5
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# kafka_nodes: the names of the Kafka nodes, as up.sh, down.sh and health.py know them: "kafka"
# for the single node, "kafka-1" … "kafka-3" for the cluster.
kafka_nodes() {
  if [ "$KAFKA_BROKERS" = 1 ]; then echo kafka; else seq -f 'kafka-%g' 1 "$KAFKA_BROKERS"; fi
}
# kafka_node_port NAME / kafka_node_controller_port NAME: the ports of one node.
kafka_node_index() { local i=${1#kafka}; i=${i#-}; echo "${i:-1}"; }
kafka_node_port() { echo $((KAFKA_PORT + 2 * ($(kafka_node_index "$1") - 1))); }
kafka_node_controller_port() { echo $((KAFKA_CONTROLLER_PORT + 2 * ($(kafka_node_index "$1") - 1))); }
# kafka_cluster_bootstrap: every node's address, for the clients of a cluster.
kafka_cluster_bootstrap() {
  local node out=()
  for node in $(kafka_nodes); do out+=("127.0.0.1:$(kafka_node_port "$node")"); done
  (IFS=,; echo "${out[*]}")
}
