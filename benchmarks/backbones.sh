#!/usr/bin/env bash
# Backbones compared the way production uses them: each exported as a TF Serving SavedModel,
# served by the model server on a spare port, features fetched over gRPC by `amberscan train`
# (XGBoost, 5-fold CV grouped by tile, one threshold for precision >= 0.95 on pooled
# out-of-fold scores). Prints one row per backbone.
#   benchmarks/backbones.sh [VARIANT ...]   variants: resnet50-random efficientnet-lite0
#                                           efficientnet-lite0-multi efficientnet-lite0-tta
#                                           finetuned=FILE.weights.h5 (a fine-tuned Lite0)
set -euo pipefail
cd "$(dirname "$0")/.."
source stack/lib.sh
BIN=.venv/bin/amberscan
DATA=$(shared_data superpixels)
PORT=${BENCH_MODEL_PORT:-18599}
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(resnet50-random efficientnet-lite0 efficientnet-lite0-multi)

printf '%-34s %8s %9s %7s %8s %7s %7s\n' variant features "F1@0.5" "P" "R@P.95" ROC-AUC PR-AUC
for variant in "${variants[@]}"; do
  name="m$RANDOM"
  case $variant in
    resnet50-random) args=(--backbone resnet50 --weights random) ;;
    efficientnet-lite0) args=(--backbone efficientnet-lite0) ;;
    efficientnet-lite0-multi) args=(--backbone efficientnet-lite0-multi) ;;
    efficientnet-lite0-tta) args=(--backbone efficientnet-lite0 --tta) ;;
    finetuned=*) args=(--backbone efficientnet-lite0 --finetuned "${variant#finetuned=}" --tta) ;;
    *) die "unknown variant $variant" ;;
  esac
  "$BIN" export-backbone "${args[@]}" --model-dir "$WORK/models" --name "$name" --version 1 >/dev/null 2>&1
  "$BIN" serve model-server --model-dir "$WORK/models" --name "$name" --address "127.0.0.1:$PORT" \
    >"$WORK/server.log" 2>&1 &
  echo $! >"$WORK/pid"
  AMBERSCAN_MODEL_SERVER="127.0.0.1:$PORT" wait_for model-server 180 .venv/bin/python stack/health.py model-server
  report=$(AMBERSCAN_MODEL_SERVER="127.0.0.1:$PORT" "$BIN" train --data "$DATA" \
    --backbone "$name" --out "$WORK/$name.json" --no-registry --json 2>/dev/null | tail -1)
  kill "$(cat "$WORK/pid")"; wait "$(cat "$WORK/pid")" 2>/dev/null || true
  .venv/bin/python - "$variant" "$report" <<'PY'
import json, sys
variant, report = sys.argv[1], json.loads(sys.argv[2])
print(f"{variant:<34} {report.get('feature_dim', ''):>8} {report.get('f1_at_0.5', float('nan')):9.3f} "
      f"{report['precision']:7.3f} {report['recall']:8.3f} {report['roc_auc']:7.3f} {report['pr_auc']:7.3f}")
PY
done
