#!/usr/bin/env bash
# Install the local stack's servers, idempotently, from the package registries only:
#   Kafka  — broker jars resolved by Maven into the cache (stack/kafka/pom.xml)
#   MinIO  — built from source with `go install` into the cache
#   kustomize — built with `go install` into the cache (the tests build the k8s overlays)
#   PostgreSQL 15 + PostGIS 3 — Debian packages (needs root; skipped when already installed)
#   Chromium + ChromeDriver — Debian packages, for the web map's browser tests
source "$(dirname "$0")/lib.sh"

setup_kafka() {
  if [ -f "$KAFKA_LIBS/.complete" ]; then log "kafka $KAFKA_VERSION: jars cached in $KAFKA_LIBS"; return; fi
  command -v java >/dev/null || die "java not found: Kafka needs a JDK 17+"
  command -v mvn >/dev/null || die "mvn not found: Kafka's jars are resolved with Maven"
  log "kafka $KAFKA_VERSION: resolving jars with Maven"
  rm -rf "$KAFKA_LIBS"
  mvn -q -B -Dstyle.color=never -f "$ROOT/stack/kafka/pom.xml" dependency:copy-dependencies \
    -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS"
  touch "$KAFKA_LIBS/.complete"
}

# go_install NAME BIN MODULE@VERSION [NOTE]: build a Go tool into the cache unless it is there.
go_install() {
  local name=$1 bin=$2 module=$3 note=${4:-}
  if [ -x "$bin" ]; then log "$name: cached at $bin"; return; fi
  command -v go >/dev/null || die "go not found: $name is built with 'go install'"
  log "$name: building with go install$note"
  GOBIN="$(dirname "$bin")" GOFLAGS=-trimpath go install "$module"
  [ -x "$bin" ] || die "go install did not produce $bin"
}

setup_minio() {
  go_install "minio $MINIO_VERSION" "$MINIO_BIN" "github.com/minio/minio@$MINIO_VERSION" \
    " (several minutes on 2 cores)"
}

setup_kustomize() {
  go_install "kustomize $KUSTOMIZE_VERSION" "$KUSTOMIZE_BIN" \
    "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
}

setup_postgres() {
  if [ -x "$PG_BIN/postgres" ] && [ -f /usr/share/postgresql/15/extension/postgis.control ]; then
    log "postgresql 15 + postgis: installed"; return
  fi
  [ "$(id -u)" = 0 ] || die "PostgreSQL 15 + PostGIS 3 are missing; install the Debian packages postgresql-15 postgresql-15-postgis-3 as root"
  log "postgresql 15 + postgis: installing Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends postgresql-15 postgresql-15-postgis-3 >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends postgresql-15 postgresql-15-postgis-3 >/dev/null; }
  # The Debian package starts its own cluster on 5432; the stack runs its own, so stop that one.
  if command -v pg_ctlcluster >/dev/null; then pg_ctlcluster 15 main stop 2>/dev/null || true; fi
}

setup_browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then log "chromium: installed"; return; fi
  [ "$(id -u)" = 0 ] || die "Chromium is missing; install the Debian packages chromium chromium-driver as root"
  log "chromium: installing Debian packages (browser tests drive it headless)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; }
}

mkdir -p "$CACHE_DIR"
case "${1:-all}" in
  kafka) setup_kafka ;;
  minio) setup_minio ;;
  postgres) setup_postgres ;;
  browser) setup_browser ;;
  kustomize) setup_kustomize ;;
  all) setup_postgres; setup_browser; setup_kafka; setup_minio; setup_kustomize ;;
  *) die "usage: stack/setup.sh [all|kafka|minio|kustomize|postgres|browser]" ;;
esac
