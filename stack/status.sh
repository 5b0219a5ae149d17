#!/usr/bin/env bash
# Health of every server of the local stack: each is asked a real question (Kafka metadata,
# MinIO readiness, a PostGIS query, the model server's gRPC health). Exit 1 if any is down.
source "$(dirname "$0")/lib.sh"
[ -x "$ROOT/.venv/bin/python" ] || die ".venv missing: run make setup-python"
exec "$ROOT/.venv/bin/python" "$ROOT/stack/health.py" --all "$@"
