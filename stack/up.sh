#!/usr/bin/env bash
# Start the local stack on loopback and wait until every server really answers: Kafka (KRaft:
# one combined broker+controller, or a 3-node cluster with AMBERSCAN_STACK_KAFKA_BROKERS=3),
# MinIO, PostgreSQL+PostGIS, and the model server when a model has been built (`make model`).
# State and logs live under .stack/ (AMBERSCAN_STACK_DIR).
#   stack/up.sh [kafka|kafka-N|minio|postgres|model-server ...]   (default: all)
source "$(dirname "$0")/lib.sh"
mkdir -p "$LOG_DIR" "$RUN_DIR"
PY="$ROOT/.venv/bin/python"

# already_running NAME PIDFILE: true when NAME's process answers its health check. A live pid that
# does not answer is starting or stopping (e.g. just killed): wait until it answers or exits, so a
# dying server is never reported as running.
already_running() {
  local name=$1 pidfile=$2 deadline=$((SECONDS + 180))
  while pid_alive "$pidfile"; do
    if "$PY" "$ROOT/stack/health.py" "$name" >/dev/null 2>&1; then
      log "$name: running (pid $(cat "$pidfile"))"
      return 0
    fi
    if [ $SECONDS -ge $deadline ]; then
      die "$name: pid $(cat "$pidfile") neither answers nor exits; see $LOG_DIR/$name.log"
    fi
    sleep 0.5
  done
  rm -f "$pidfile"
  return 1
}

# extra_listeners NAME listen|advertised|protocol: the node's part of the listeners of
# AMBERSCAN_STACK_KAFKA_EXTRA_LISTENERS ("LABEL:LISTEN_PORT:ADVERTISED_PORT ...", node i on each
# port + i - 1): `make chaos` gives each pipeline process a listener of its own, advertised at
# its TCP proxy (stack/netproxy.py), so every connection it makes goes through the proxy.
extra_listeners() {
  local i entry label listen advertised
  i=$(($(kafka_node_index "$1") - 1))
  for entry in ${AMBERSCAN_STACK_KAFKA_EXTRA_LISTENERS:-}; do
    IFS=: read -r label listen advertised <<<"$entry"
    case "$2" in
      listen) printf ',%s://127.0.0.1:%s' "$label" $((listen + i)) ;;
      advertised) printf ',%s://127.0.0.1:%s' "$label" $((advertised + i)) ;;
      protocol) printf ',%s:PLAINTEXT' "$label" ;;
    esac
  done
}

# kafka_properties NAME DATA_DIR: the server.properties of one node.
kafka_properties() {
  local name=$1 data=$2 port controller
  port=$(kafka_node_port "$name")
  controller=$(kafka_node_controller_port "$name")
  local replicas=1 isr=1 quorum="controller.quorum.bootstrap.servers=127.0.0.1:$controller"
  if [ "$KAFKA_BROKERS" != 1 ]; then
    replicas=$KAFKA_BROKERS
    isr=$((KAFKA_BROKERS - 1))
    local voters=() node
    for node in $(kafka_nodes); do
      voters+=("$(kafka_node_index "$node")@127.0.0.1:$(kafka_node_controller_port "$node")")
    done
    quorum="controller.quorum.voters=$(IFS=,; echo "${voters[*]}")"
  fi
  cat <<PROPS
process.roles=broker,controller
node.id=$(kafka_node_index "$name")
$quorum
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller$(extra_listeners "$name" listen)
advertised.listeners=PLAINTEXT://127.0.0.1:$port$(extra_listeners "$name" advertised)
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT$(extra_listeners "$name" protocol)
log.dirs=$data
num.partitions=6
auto.create.topics.enable=false
default.replication.factor=$replicas
min.insync.replicas=$isr
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
PROPS
}

# launch_kafka NAME: start one Kafka node unless it runs, adding it to LAUNCHED. A cluster node
# cannot answer before a quorum of its peers runs, so the caller waits for all of them after.
LAUNCHED=()
launch_kafka() {
  local name=$1 dir="$STACK_DIR/$1" pidfile="$RUN_DIR/$1.pid"
  if already_running "$name" "$pidfile"; then return; fi
  [ -f "$KAFKA_LIBS/.complete" ] || die "kafka jars missing: run stack/setup.sh"
  mkdir -p "$dir/data"
  kafka_properties "$name" "$dir/data" > "$dir/server.properties"
  local java=(java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$ROOT/stack/kafka/log4j2.properties" -cp "$KAFKA_LIBS/*")
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster format=(--standalone)
    if [ "$KAFKA_BROKERS" != 1 ]; then
      # One cluster id for every node; the voters are static (controller.quorum.voters).
      local idfile="$STACK_DIR/kafka-cluster.id"
      [ -s "$idfile" ] || "${java[@]}" kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/$name.log" | tail -1 >"$idfile"
      cluster=$(cat "$idfile")
      format=()
    else
      cluster=$("${java[@]}" kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/$name.log" | tail -1)
    fi
    "${java[@]}" kafka.tools.StorageTool format "${format[@]}" -t "$cluster" \
      -c "$dir/server.properties" >>"$LOG_DIR/$name.log" 2>&1 || die "kafka storage format failed; see $LOG_DIR/$name.log"
  fi
  log "$name: starting on 127.0.0.1:$(kafka_node_port "$name")"
  nohup "${java[@]}" kafka.Kafka "$dir/server.properties" >>"$LOG_DIR/$name.log" 2>&1 &
  echo $! >"$pidfile"
  LAUNCHED+=("$name")
}

# start_kafka [NAME...]: the given nodes (default: every node), then wait until each answers.
start_kafka() {
  local node nodes=("$@")
  [ ${#nodes[@]} -gt 0 ] || mapfile -t nodes < <(kafka_nodes)
  LAUNCHED=()
  for node in "${nodes[@]}"; do launch_kafka "$node"; done
  for node in "${LAUNCHED[@]}"; do wait_for "$node" 120 "$PY" "$ROOT/stack/health.py" "$node"; done
}

start_minio() {
  local pidfile="$RUN_DIR/minio.pid"
  if already_running minio "$pidfile"; then return; fi
  [ -x "$MINIO_BIN" ] || die "minio missing: run stack/setup.sh"
  mkdir -p "$STACK_DIR/minio/data"
  log "minio: starting on 127.0.0.1:$MINIO_PORT (console $MINIO_CONSOLE_PORT)"
  MINIO_ROOT_USER="$MINIO_USER" MINIO_ROOT_PASSWORD="$MINIO_PASSWORD" MINIO_BROWSER=on \
    MINIO_UPDATE=off MINIO_CALLHOME_ENABLE=off \
    nohup "$MINIO_BIN" server --quiet --address "127.0.0.1:$MINIO_PORT" \
    --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" "$STACK_DIR/minio/data" >>"$LOG_DIR/minio.log" 2>&1 &
  echo $! >"$pidfile"
  wait_for minio 60 "$PY" "$ROOT/stack/health.py" minio
}

start_postgres() {
  local data="$STACK_DIR/postgres/data" sock="$RUN_DIR/postgres"
  mkdir -p "$STACK_DIR/postgres" "$sock"
  touch "$LOG_DIR/postgres.log"
  if [ "$(id -u)" = 0 ]; then chown "$PG_USER" "$STACK_DIR/postgres" "$sock" "$LOG_DIR/postgres.log"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    log "postgres: initdb (trust auth on loopback, throwaway cluster)"
    as_pg "$PG_BIN/initdb" -D "$data" -U "$PG_USER" --auth=trust --encoding=UTF8 --no-locale >>"$LOG_DIR/postgres.log" 2>&1 \
      || die "initdb failed; see $LOG_DIR/postgres.log"
  fi
  # pg_ctl status (and postgres itself) take a postmaster that exists as a zombie for a live
  # one: just after a SIGKILL, until its parent reaps it, the cluster would neither answer nor
  # start. Wait for the dead one to go.
  local pidfile="$data/postmaster.pid" waited=0
  while [ -f "$pidfile" ] && ! pid_alive "$pidfile" && pid_exists "$(head -n1 "$pidfile")"; do
    if [ $waited -ge 60 ]; then
      log "postgres: postmaster $(head -n1 "$pidfile") is dead but not reaped after 30s; removing its pid file"
      rm -f "$pidfile"
      break
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  if pid_alive "$pidfile" && as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "postgres: running"
  else
    log "postgres: starting on 127.0.0.1:$PG_PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$LOG_DIR/postgres.log" -w -t 60 \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $sock -c fsync=off -c max_connections=200" start >/dev/null \
      || die "postgres did not start; see $LOG_DIR/postgres.log"
  fi
  local psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -v ON_ERROR_STOP=1 -qAt)
  if [ "$("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    "${psql[@]}" -d postgres -c "CREATE DATABASE $PG_DB"
  fi
  "${psql[@]}" -d "$PG_DB" -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS postgis" >/dev/null
  wait_for postgres 30 "$PY" "$ROOT/stack/health.py" postgres
}

start_model_server() {
  local pidfile="$RUN_DIR/model-server.pid"
  local model_dir="${AMBERSCAN_MODEL_DIR:-$ROOT/models/serving}" name="${AMBERSCAN_BACKBONE_NAME:-backbone}"
  if already_running model-server "$pidfile"; then return; fi
  if ! ls "$model_dir/$name"/*/saved_model.pb >/dev/null 2>&1; then
    log "model-server: no model in $model_dir/$name yet (make model builds it); not started"
    return
  fi
  log "model-server: starting on 127.0.0.1:$MODEL_PORT ($model_dir/$name)"
  nohup "$ROOT/.venv/bin/amberscan" serve model-server --model-dir "$model_dir" --name "$name" \
    --address "127.0.0.1:$MODEL_PORT" >>"$LOG_DIR/model-server.log" 2>&1 &
  echo $! >"$pidfile"
  wait_for model-server 180 "$PY" "$ROOT/stack/health.py" model-server
}

[ -x "$PY" ] || die ".venv missing: run make setup-python"
components=("$@")
report=("$@")
if [ ${#components[@]} -eq 0 ]; then components=(postgres minio kafka model-server); report=(--all); fi
for c in "${components[@]}"; do
  case "$c" in
    kafka) start_kafka ;;
    kafka-[0-9]) [ "$KAFKA_BROKERS" != 1 ] || die "$c: the stack runs one Kafka node (AMBERSCAN_STACK_KAFKA_BROKERS=3 for a cluster)"
      start_kafka "$c" ;;
    minio) start_minio ;;
    postgres) start_postgres ;;
    model-server) start_model_server ;;
    *) die "unknown component $c (kafka, kafka-N, minio, postgres, model-server)" ;;
  esac
done
"$PY" "$ROOT/stack/health.py" "${report[@]}"
