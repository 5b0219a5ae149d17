#!/usr/bin/env bash
# Build the default model from what ships with the package registries and the shared labelled
# data: the backbone (TF Serving SavedModel, plus its OpenVINO export for the CPU model server)
# and the XGBoost classifier trained on features that come through the model server (the path
# production uses). Repeatable: fixed seeds and one TensorFlow thread for the fine-tune, so the
# same machine and data give the same weights and the same classifier version.
# Skips what is already built; FORCE=1 rebuilds both. Says how long each step took.
# `stack/model.sh finetune` does the fine-tune alone (no stack needed): `make run` runs it on one
# core while the other installs the stack's servers.
source "$(dirname "$0")/lib.sh"

MODEL_DIR="${AMBERSCAN_MODEL_DIR:-$ROOT/models/serving}"
NAME="${AMBERSCAN_BACKBONE_NAME:-backbone}"
CLASSIFIER="${AMBERSCAN_CLASSIFIER_PATH:-$ROOT/models/classifier.json}"
BIN="$ROOT/.venv/bin/amberscan"
PY="$ROOT/.venv/bin/python"
[ -x "$BIN" ] || die ".venv missing: run make setup-python"
# The served recipe's backbone and views (model/recipe.py).
recipe() { "$PY" -c "from amberscan.model.recipe import SERVED_RECIPE as r; print(r.$1)"; }
BACKBONE="${AMBERSCAN_DEFAULT_BACKBONE:-$(recipe backbone)}"
WEIGHTS="${AMBERSCAN_DEFAULT_WEIGHTS:-pretrained}"
DATA="${AMBERSCAN_TRAINING_DATA:-$(shared_data superpixels)}"
# The offline default fine-tunes the pretrained backbone on the labelled crops (docs/model.md);
# AMBERSCAN_FINETUNE=0 serves the frozen ImageNet backbone instead.
FINETUNE="${AMBERSCAN_FINETUNE:-1}"
FINETUNED="${AMBERSCAN_FINETUNED_WEIGHTS:-$ROOT/models/finetuned/$BACKBONE.weights.h5}"
# The CPU model server serves the backbone quantized to INT8, calibrated on the training crops
# (docs/model.md, docs/performance.md); AMBERSCAN_INT8=0 exports float32 only.
INT8="${AMBERSCAN_INT8:-1}"
export AMBERSCAN_MODEL_DIR="$MODEL_DIR" AMBERSCAN_CLASSIFIER_PATH="$CLASSIFIER"

[ -d "$DATA/positive" ] && [ -d "$DATA/negative" ] || die "training data not found at $DATA (positive/ and negative/)"

VIEWS="$(recipe views)"

timed() {  # timed WHAT CMD...: run CMD and log how long WHAT took
  local what=$1 started=$SECONDS; shift
  "$@" || return $?
  log "model: $what took $((SECONDS - started)) s"
}

# How the recipe resizes crops (vision/crops.py); the export and the fine-tune record theirs.
RESAMPLE="$("$PY" -c 'from amberscan.vision.crops import CROP_RESAMPLE as r; print(r)')"
recorded() {  # recorded KEY FILE...: the values of KEY in those JSON files, space-separated
  local key=$1; shift
  (cat "$@" 2>/dev/null || true) | sed -n "s/^ *\"$key\": \"\([^\"]*\)\".*/\1/p" |
    sort -u | tr '\n' ' '
}

# What the fine-tune holds out (model/promotion.py): the promotion gate's share of tiles, which
# neither the fine-tune nor the classifier trains on (the build's expected quality is measured
# there), and the calibration share, on which the classifier's threshold is chosen.
HOLDOUT="$("$PY" -c 'from amberscan.model.promotion import FINETUNE_HOLDOUT_RULE as r; print(r)')"
# Fine-tuned weights of crops resized another way (before it was recorded: nearest), or trained
# with another share held out (before it was recorded: none), are redone.
tuned_as=$(recorded crop_resample "${FINETUNED%.weights.h5}.json")
tuned_as=${tuned_as:-nearest }
tuned_holdout=$(recorded holdout "${FINETUNED%.weights.h5}.json")
if [ -f "$FINETUNED" ] && [ "$tuned_as" != "$RESAMPLE " ]; then
  log "model: $FINETUNED was fine-tuned on ${tuned_as% } crops, the recipe's are $RESAMPLE:" \
    "redoing it"
  rm -f "$FINETUNED" "${FINETUNED%.weights.h5}.json"
elif [ -f "$FINETUNED" ] && [ "$tuned_holdout" != "$HOLDOUT " ]; then
  log "model: $FINETUNED was fine-tuned on held-out shares too: redoing it without them"
  rm -f "$FINETUNED" "${FINETUNED%.weights.h5}.json"
fi
# A backbone built by an earlier recipe (another backbone, or crops resized another way) is
# rebuilt, with its classifier.
built_as=$(recorded backbone "$MODEL_DIR/$NAME"/*/amberscan.json)
built_resample=$(recorded crop_resample "$MODEL_DIR/$NAME"/*/amberscan.json)
built_holdout=$(recorded holdout "$MODEL_DIR/$NAME"/*/amberscan.json)
if [ -n "$built_as" ] && [ "$FINETUNE" = 1 ] && [ "$built_holdout" != "$HOLDOUT " ]; then
  log "model: $MODEL_DIR/$NAME was fine-tuned on held-out shares too: rebuilding"
  "$ROOT/stack/down.sh" >/dev/null 2>&1 || true
  rm -rf "${MODEL_DIR:?}/$NAME" "$CLASSIFIER"
elif [ -n "$built_as" ] &&
  { [ "$built_as" != "$BACKBONE " ] || [ "$built_resample" != "$RESAMPLE " ]; }; then
  log "model: $MODEL_DIR/$NAME holds ${built_as% } (${built_resample% } crops) and the recipe" \
    "serves $BACKBONE ($RESAMPLE crops): rebuilding"
  "$ROOT/stack/down.sh" >/dev/null 2>&1 || true
  rm -rf "${MODEL_DIR:?}/$NAME" "$CLASSIFIER"
fi

if [ "${FORCE:-0}" = 1 ]; then
  "$ROOT/stack/down.sh" >/dev/null 2>&1 || true
  rm -rf "${MODEL_DIR:?}/$NAME" "$CLASSIFIER" "$FINETUNED"
fi

backbone_built() { ls "$MODEL_DIR/$NAME"/*/saved_model.pb >/dev/null 2>&1; }

finetune_once() {
  if [ "$FINETUNE" = 1 ] && [ ! -f "$FINETUNED" ]; then
    log "model: fine-tuning $BACKBONE on $DATA (one thread, so the build is repeatable)"
    timed "fine-tuning" "$BIN" finetune --backbone "$BACKBONE" --data "$DATA" --out "$FINETUNED"
  fi
}

case "${1:-all}" in
  finetune)
    backbone_built || finetune_once
    exit 0 ;;
  all) ;;
  *) die "usage: stack/model.sh [all|finetune]" ;;
esac

if ! backbone_built; then
  extra=()
  if [ "$FINETUNE" = 1 ]; then
    finetune_once
    extra=(--finetuned "$FINETUNED" --views "$VIEWS")
  fi
  what="SavedModel + OpenVINO"
  if [ "$INT8" = 1 ]; then
    extra+=(--int8 "$DATA")
    what+=" + INT8"
  fi
  log "model: exporting $BACKBONE ($WEIGHTS${extra[*]:+, ${extra[*]}}) to $MODEL_DIR/$NAME/1"
  timed "the export ($what)" "$BIN" export-backbone --backbone "$BACKBONE" \
    --weights "$WEIGHTS" --model-dir "$MODEL_DIR" --name "$NAME" --version 1 "${extra[@]}"
else
  log "model: backbone present in $MODEL_DIR/$NAME"
fi

# Training reads features from the model server and publishes to the registry in MinIO.
timed "starting the stack" "$ROOT/stack/up.sh" postgres minio kafka model-server >/dev/null

newest=$(ls -t "$MODEL_DIR/$NAME"/*/saved_model.pb | head -1)
if [ ! -f "$CLASSIFIER" ] || [ "$newest" -nt "$CLASSIFIER" ]; then
  log "model: training the classifier on $DATA (5-fold CV grouped by tile)"
  mkdir -p "$(dirname "$CLASSIFIER")"
  if [ "$FINETUNE" = 1 ]; then
    # The threshold is chosen on this build's own scores of the calibration share, crops its
    # backbone was not fine-tuned on (docs/model.md, section 4).
    timed "training the classifier" "$BIN" train --data "$DATA" --out "$CLASSIFIER"
  else
    # A frozen backbone has seen none of the crops: every crop's out-of-fold score is honest.
    timed "training the classifier" "$BIN" train --data "$DATA" --out "$CLASSIFIER" \
      --threshold-from cv
  fi
fi
# `make model` serves its build: the classifier becomes the registry's current one (recorded as
# promoted by "make model"; `amberscan train` alone only adds candidates). Then what to expect on
# unseen tiles: its figures on the gate share, which neither it nor (FINETUNE=1) its backbone
# was trained on, with their intervals.
"$PY" - "$CLASSIFIER" <<'PY'
import asyncio, sys
from pathlib import Path
from amberscan.cli.train import expected_text
from amberscan.common import registry
from amberscan.common.blobstore import MissingBlob
from amberscan.common.settings import load_settings
from amberscan.model.classifier import Classifier

settings = load_settings()
classifier = Classifier.load(Path(sys.argv[1]))

async def serve() -> str:
    try:
        if await registry.current_version(settings.s3) == classifier.version:
            return "is the registry's current classifier"
    except MissingBlob:
        pass
    await registry.make_current(
        settings.s3, classifier, action="promote", by="make model", forced=False,
        gate="none: make model serves the default build it made",
    )
    return "is now the registry's current classifier"

print(f"[model] classifier {classifier.version} {asyncio.run(serve())}")
calibration = classifier.metadata.get("calibration")
if calibration:
    print(
        f"[model] threshold {classifier.threshold:.4f} chosen on this build's out-of-fold scores "
        f"of the calibration share ({calibration['crops']} crops, {calibration['mining_crops']} "
        f"mining, held out from the fine-tune): precision {calibration['precision']:.3f}, "
        f"recall {calibration['recall']:.3f} there"
    )
share = classifier.metadata.get("gate_share")
if share:
    print(
        f"[model] expected on unseen tiles, measured on the gate share held out from this build "
        f"at threshold {classifier.threshold:.4f}: {expected_text(share)} (docs/model.md)"
    )
PY
