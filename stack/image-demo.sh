#!/usr/bin/env bash
# make image-demo: the pipeline run from the built images against the local stack (`make up`).
# Every process runs from an image's own filesystem with `buildah run --isolation chroot` (the
# path this kind of machine offers; docs/deploy.md says why not `podman run`), on the host's
# network, as the image's user 10001: the CPU model server from amberscan-model-server, then
# the demo tile server, the six stages and the web map from amberscan, each as the image's
# entrypoint would start it. It waits for the model server's gRPC health and each stage's
# /healthz (served by the stage's own event loop), checks that the web map serves its MapLibre
# files from the image, then scans the demo area from the image and ends with `make run`'s
# summary line and the verdicts per demo tile (4 mining tiles flagged, none of the other 4).
#
# The run has its own topics (prefix), bucket and database schema, so it neither disturbs nor is
# skipped by scans already stored on the stack, and removes them at the end (KEEP=1 keeps them,
# with the processes stopped). The model and classifier are this checkout's `make model` build
# (models/), mounted read-only; the demo tiles come from the shared data set, mounted read-only.
#   stack/image-demo.sh        (TAG as `make image`: `git describe --always --dirty`)
source "$(dirname "$0")/lib.sh"

TAG="${TAG:-$(git -C "$ROOT" describe --always --dirty)}"
IMAGE="localhost/amberscan:$TAG"
SERVER_IMAGE="localhost/amberscan-model-server:$TAG"
RUN="imagedemo$(date +%s)"
LOGS="$STACK_DIR/image-demo/$RUN"
mkdir -p "$LOGS"
# Ports of this run's own processes (the stack keeps its own).
MODEL_PORT="${AMBERSCAN_IMAGE_DEMO_MODEL_PORT:-28500}"
TILES_PORT=28081
WEB_PORT=28080
METRICS_BASE=29100

log() { printf '[image-demo] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for image in "$IMAGE" "$SERVER_IMAGE"; do
  buildah inspect --type image "$image" >/dev/null 2>&1 || die "no image $image: run \`make image\` (TAG=$TAG)"
done
[ -f "$ROOT/models/classifier.json" ] && [ -d "$ROOT/models/serving/backbone" ] \
  || die "no model in $ROOT/models: \`make model\` builds it"
SHARED="${AMBERSCAN_SHARED_DATA:-}"
for candidate in "$SHARED" "$ROOT/../shared/data/texty-amber" "$ROOT/../../shared/data/texty-amber"; do
  if [ -n "$candidate" ] && [ -d "$candidate/tiles" ]; then SHARED=$(cd "$candidate" && pwd); break; fi
done
[ -d "$SHARED/tiles" ] || die "the shared data set (texty-amber/tiles) is not found; set AMBERSCAN_SHARED_DATA"

# The settings every process gets: the stack's addresses are the settings' defaults (loopback).
ENV=(
  -e "AMBERSCAN_TOPIC_PREFIX=$RUN-"
  -e "AMBERSCAN_S3_BUCKET=$RUN"
  -e "AMBERSCAN_DATABASE_SCHEMA=$RUN"
  -e "AMBERSCAN_MODEL_SERVER=127.0.0.1:$MODEL_PORT"
  -e "AMBERSCAN_MODEL_DIR=/models/serving"
  -e "AMBERSCAN_CLASSIFIER_PATH=/models/classifier.json"
  -e "AMBERSCAN_SHARED_DATA=/data/texty-amber"
  -e "AMBERSCAN_DEMO_TILES_URL=http://127.0.0.1:$TILES_PORT/tiles/{z}/{x}/{y}.png"
  -e "AMBERSCAN_WEB_HOST=127.0.0.1"
  -e "AMBERSCAN_WEB_PORT=$WEB_PORT"
  -e "AMBERSCAN_DEMO=1"
)
MOUNTS=(-v "$(cd "$ROOT/models" && pwd -P):/models:ro" -v "$SHARED:/data/texty-amber:ro")

CONTAINERS=()
PIDS=()
# start NAME IMAGE [ENV...] -- COMMAND...: one process from IMAGE in a container of its own.
start() {
  local name=$1 image=$2 ctr
  shift 2
  ctr=$(buildah from --quiet --name "$RUN-$name" "$image")
  CONTAINERS+=("$ctr")
  setsid buildah run --isolation chroot --user 10001:10001 "${MOUNTS[@]}" "${ENV[@]}" "$@" \
    >"$LOGS/$name.log" 2>&1 </dev/null &
  PIDS+=($!)
  log "started $name from $image (pid $!, log $LOGS/$name.log)"
}
# in_image COMMAND...: run a command to its end in a container of amberscan's image.
in_image() {
  local ctr status=0
  ctr=$(buildah from --quiet "$IMAGE")
  buildah run --isolation chroot --user 10001:10001 "${MOUNTS[@]}" "${ENV[@]}" "$ctr" -- "$@" || status=$?
  buildah rm "$ctr" >/dev/null
  return $status
}

cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  for ctr in "${CONTAINERS[@]}"; do buildah rm "$ctr" >/dev/null 2>&1 || true; done
  if [ -z "${KEEP:-}" ]; then
    in_image python -c '
import asyncio
from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.settings import Settings
from amberscan.common.topic_admin import delete_topics

async def main() -> None:
    settings = Settings()
    await delete_topics(settings.kafka)
    async with Database(settings.database) as db:
        await db.drop_schema()
    BlobStore(settings.s3).remove_bucket()

asyncio.run(main())
' >"$LOGS/cleanup.log" 2>&1 && log "removed this run's topics, bucket and schema ($RUN)" \
      || log "cleanup of $RUN failed: $LOGS/cleanup.log"
  fi
  exit $status
}
trap cleanup EXIT

wait_for() {  # wait_for WHAT SECONDS COMMAND...
  local what=$1 deadline=$((SECONDS + $2)) pid
  shift 2
  until "$@" >/dev/null 2>&1; do
    for pid in "${PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || die "a process exited while waiting for $what; see $LOGS"
    done
    [ $SECONDS -lt $deadline ] || die "$what did not answer in $2 s; see $LOGS"
    sleep 1
  done
  log "$what answers"
}

started=$SECONDS
start model-server "$SERVER_IMAGE" "$RUN-model-server" -- \
  amberscan serve model-server --model-dir /models/serving --name backbone --address "127.0.0.1:$MODEL_PORT"
wait_for "model server (gRPC health SERVING)" 300 in_image python -c "
import grpc, sys
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel('127.0.0.1:$MODEL_PORT') as channel:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=''), timeout=5)
sys.exit(reply.status != health_pb2.HealthCheckResponse.SERVING)
"
start demo-tiles "$IMAGE" "$RUN-demo-tiles" -- amberscan demo-tiles --port "$TILES_PORT" --data /data/texty-amber/tiles
i=0
STAGES=(tiler segmenter feature classifier aggregator sink)
for stage in "${STAGES[@]}"; do
  i=$((i + 1))
  start "$stage" "$IMAGE" -e "AMBERSCAN_METRICS_PORT=$((METRICS_BASE + i))" "$RUN-$stage" -- amberscan serve "$stage"
done
start web "$IMAGE" -e "AMBERSCAN_METRICS_PORT=$METRICS_BASE" "$RUN-web" -- amberscan serve web
i=0
for stage in "${STAGES[@]}"; do
  i=$((i + 1))
  wait_for "$stage /healthz" 300 curl -fsS -m 5 "http://127.0.0.1:$((METRICS_BASE + i))/healthz"
done
wait_for "web map" 120 curl -fsS -m 5 "http://127.0.0.1:$WEB_PORT/"
curl -fsS -m 10 -o /dev/null "http://127.0.0.1:$WEB_PORT/static/vendor/maplibre-gl/maplibre-gl.mjs" \
  || die "the web map does not serve its MapLibre module from the image"
log "the web map serves /static/vendor/maplibre-gl/maplibre-gl.mjs from the image"
log "every process up in $((SECONDS - started)) s; scanning the demo area from the image"

in_image amberscan scan --demo --provider demo | tee "$LOGS/scan.log"
grep -qE '^scan .*: 8 tiles, 4 flagged, .* 0 failed' "$LOGS/scan.log" || die "the scan's summary is not the demo's (8 tiles, 4 flagged, 0 failed)"
# The verdict of each demo tile against what its image shows (the mining tiles are the
# `positive` ones of the data set), read from this run's own schema.
in_image python -c '
import asyncio, sys
from amberscan.common.db import Database
from amberscan.common.settings import Settings
from amberscan.tiler.demo import demo_layout

async def main() -> int:
    async with Database(Settings().database) as db:
        rows = await db.fetch("SELECT x, y, z, flagged FROM detections")
    flagged = {(x, y, z): f for x, y, z, f in rows}
    mining = [d for d in demo_layout() if d.source.startswith("positive")]
    others = [d for d in demo_layout() if not d.source.startswith("positive")]
    hits = sum(flagged.get((d.tile.x, d.tile.y, d.tile.z)) is True for d in mining)
    false = sum(flagged.get((d.tile.x, d.tile.y, d.tile.z)) is True for d in others)
    print(f"verdicts: {hits} of {len(mining)} mining tiles flagged, {false} of {len(others)} others")
    return 0 if (hits, false) == (len(mining), 0) and len(rows) == len(mining) + len(others) else 1

sys.exit(asyncio.run(main()))
' | tee -a "$LOGS/scan.log"
log "done in $((SECONDS - started)) s; logs in $LOGS"
