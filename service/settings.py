"""The one place configuration is read.

Every field is an environment variable under the ``EMBED_`` prefix (``EMBED_PORT``,
``EMBED_MODELS``, ...) and most are also command-line flags of ``python -m service``.
The README's settings table is generated from this class (``make settings-doc``) and a
test checks that it is up to date.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
GraphVariant = Literal["auto", "fp32", "optimized", "int8", "openvino-int8", "fp16"]


def _split_list(value: object) -> object:
    """Accept ``a,b,c`` (or a JSON-free list) for list settings given as env vars."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EMBED_", extra="forbid", use_attribute_docstrings=True
    )

    # --- serving -------------------------------------------------------------------------
    host: str = "0.0.0.0"
    """Address to bind."""
    port: int = Field(8000, ge=1, le=65535)
    """TCP port to listen on."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service's JSON logs."""
    workers: int = Field(0, ge=0)
    """Request-handling processes (HTTP, validation, tokenization, JSON) on the one port, all
    feeding one engine process that owns the models' sessions and batchers (docs/scaling.md).
    1: one process doing both, as before. 0: 1 on CPU (inference needs the cores there: on 2
    cores, 2 workers served MiniLM no more at 32 clients, 162 against 165 passages/s), and on
    a GPU one per 2 cores the process may use, 2 to 8."""

    json_short_path: bool = True
    """Well-formed JSON requests to the embedding routes skip FastAPI's routing, dependency
    solving and JSON reading, and go straight to the same endpoint functions
    (service/front/http/json_routes.py); false: every request through FastAPI."""

    # --- models --------------------------------------------------------------------------
    models: Annotated[list[str], NoDecode] = Field(default_factory=lambda: [DEFAULT_MODEL])
    """Models to serve, comma separated. Each is a catalogue name (fetched from the Hugging
    Face Hub), a local model directory, or NAME@DIR to serve a catalogue entry from DIR; any
    of them may end in :openvino-int8 (or :int8, :fp32, :optimized, :fp16) to serve that model's
    graph."""
    catalogue_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Extra TOML catalogue files, for models the built-in catalogue does not know."""
    cache_dir: Path | None = None
    """Where Hub downloads are kept (default: huggingface_hub's cache, HF_HOME)."""
    offline: bool = False
    """Never contact the Hub; serve only what is in the cache (HF_HUB_OFFLINE=1 does the same)."""
    hf_token: str | None = None
    """Token for private or gated Hub repositories (HF_TOKEN works too)."""
    truncate: bool = True
    """Inputs longer than a model's max tokens are truncated (true) or refused with 413 (false).
    A request's own `truncate` field overrides this."""
    fastembed_limits: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Served models (comma separated names, or *) whose inputs are cut at the limit FastEmbed
    0.9.1 applies to them rather than at the model's own, to match vectors FastEmbed stored
    (all-MiniLM-L6-v2: 128 tokens against 256; docs/fastembed-parity.md). A request's
    `token_limit` field overrides this."""
    token_id_inputs: bool = False
    """Accept token ids on /v1/embeddings, as ids of the served model's own vocabulary. Off:
    they get 400, because the clients that send ids (LangChain's OpenAIEmbeddings by default)
    send OpenAI's tiktoken ids, which a model with another vocabulary would embed as other
    words."""

    # --- inference -------------------------------------------------------------------------
    execution_provider: Literal["auto", "cpu", "cuda"] = "auto"
    """ONNX Runtime provider: cuda needs onnxruntime-gpu and a GPU, and fails at start when
    either is missing; auto takes CUDA when available, else CPU."""
    intra_op_threads: int = Field(0, ge=0)
    """Threads per ONNX Runtime session (0: all cores divided among replicas)."""
    ort_spinning: bool = False
    """Let ONNX Runtime's worker threads spin-wait for work. Off by default: spinning threads
    take the cores that the event loop and tokenization need between batches."""
    ort_graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    """ONNX Runtime's graph optimisation level when a session loads."""
    ort_memory_arena: bool = False
    """ONNX Runtime's CPU memory arena: a session keeps the memory of its runs' tensors
    instead of allocating and freeing them on every run. Off by default: on 2 cores it served
    8.7% more with 32 long passages per request and 2.3% more in a mixed soak, but at 32
    clients of one passage 1.8% more in one set of 4 interleaved rounds and 0.8% less in the
    next. It holds the largest batch's tensors (15-130 MiB more here) and grows in steps when
    a new shape needs more: RSS rose 5.7% over 5 minutes after warm-up in one of four runs,
    against the 5% target (docs/benchmarks/2026-11-26-cpu-2core-arena.md). true for bulk
    embedding where speed outweighs the memory."""
    malloc_mmap_threshold: int = Field(4 * 1024 * 1024, ge=0)
    """glibc: allocations of at least this many bytes get their own mapping, returned to the
    system when freed (a fixed threshold; glibc's own keeps rising). 0: leave glibc's."""
    malloc_trim_threshold: int = Field(16 * 1024 * 1024, ge=0)
    """glibc: free memory kept at the top of each malloc heap before it is returned to the
    system. 16 MiB: with adaptive sessions' extra threads, 64 MiB let RSS climb 5-7% in the
    first minutes of load; 16 MiB stayed flat at the same throughput (docs/benchmarks)."""
    malloc_arena_max: int = Field(0, ge=0)
    """glibc: most malloc heaps (arenas) for the process; glibc's own limit is 8 per core,
    one per busy thread. 0: one per core the process may use. On 2 cores (2 heaps) RSS sat
    4% lower and flat under load at the same throughput (docs/benchmarks); set 8 x cores for
    glibc's own limit."""
    replicas: int = Field(0, ge=0)
    """Sessions per model, each fed by the same batcher (many-core CPUs). 0: one on a GPU; on
    CPU as many sessions of intra_op_threads, else cpu_threads_per_replica, else
    max(2, isqrt(cores)) threads as the cores hold (docs/scaling.md)."""
    adaptive_sessions: bool = True
    """With replicas=0, when a dense model gets one CPU session of 2 or 3 threads: also load
    one single-thread session per thread, all sharing one copy of the weights. A batch with
    nothing behind it runs on all the threads (latency); under load, batches run on the
    single-thread sessions side by side (throughput). Costs about what replicas=2 costs:
    MiniLM's server took 318 MiB after load, against 235 with this off (docs/scaling.md)."""
    graph_variant: GraphVariant = "auto"
    """Which graph of a converted model directory to load, for every model (one model's own
    choice: NAME:VARIANT in `models`); auto takes the variant the conversion recorded as
    default for the provider if it gives the model's own vectors, else fp32. openvino-int8
    runs on OpenVINO (the openvino extra), the others on ONNX Runtime."""

    # --- batching --------------------------------------------------------------------------
    max_batch_items: int = Field(32, ge=1)
    """Most inputs in one inference batch."""
    max_batch_tokens: int = Field(8192, ge=1)
    """Token budget of one batch, counted as padded length x items."""
    batch_overhead_tokens: float = Field(8.0, ge=0)
    """Fixed cost of one inference call, in padded-token equivalents, when choosing a batch:
    small (CPU) groups similar lengths tightly, large (GPU) makes batches as big as allowed.
    8 packed MiniLM best on 2 cores, where batches under load run on single-thread sessions
    (a call there costs 6 tokens); `make packing` measures it for a model."""
    max_wait_ms: float = Field(2.0, ge=0)
    """How long a batch may wait for companions when the model is idle."""
    queue_max_items: int = Field(4096, ge=1)
    """Inputs waiting per model; beyond it requests get 429 with Retry-After."""
    request_timeout_s: float = Field(30.0, gt=0)
    """A request that waits longer for its inference gets 503."""
    inference_timeout_s: float = Field(60.0, gt=0)
    """A batch running longer is abandoned: its requests get 503, its worker a new thread."""
    bulk_max_batch_tokens: int = Field(2048, ge=1)
    """Token budget (padded length x items) of a batch of bulk work (batch jobs, embed-file)
    on CPU while no live request comes (bulk_live_max_batch_tokens otherwise): 2048 is about
    16 bench passages, about 0.25 s on one quiet core. A live request that arrives waits for, or
    stops, the bulk batch running on its worker (docs/batch.md). On CUDA bulk batches take
    the GPU budget (they take milliseconds)."""
    bulk_live_max_batch_tokens: int = Field(512, ge=1)
    """The bulk budget while live requests come (a live batch in the last second): a live
    request then waits for, or stops, a quarter of the work of a full bulk batch. On CPU
    only."""
    bulk_preempt: bool = True
    """A live batch stops the bulk batch running on its worker when that batch is in the
    first half of its expected run (ONNX Runtime ends the run at its next node), and its
    inputs run again later: a live request waits for at most half a bulk batch, and a stop
    loses at most half a batch of work (docs/batch.md). On CPU only."""

    # --- limits ----------------------------------------------------------------------------
    max_inputs_per_request: int = Field(2048, ge=1)
    """Most inputs (texts, images, documents) in one request; more get 400."""
    max_input_chars: int = Field(100_000, ge=1)
    """Longest text input in characters; longer gets 413."""
    max_chunked_tokens: int = Field(131_072, ge=1)
    """Most tokens one request with `chunking` (/embed/dense, /embed/sparse) may send to the
    model: all its chunks together, special tokens, prefixes and overlaps included (late
    chunking: its windows); more get 413 before anything is queued. 131072 is 512 chunks of
    MiniLM's 256 tokens (docs/long-documents.md)."""

    # --- production: security, request limits, shutdown (issue 8, docs/production.md) --------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """API keys, comma separated; when set, every request but GET /health and GET /ready (GET
    /metrics with metrics_public, GET / and the page's files with ui) needs `Authorization:
    Bearer KEY`; POST / too. Empty: no authentication."""
    metrics_public: bool = False
    """Serve /metrics without an API key even when api_keys is set (for in-cluster scraping)."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed by CORS, comma separated (`*` for any); empty: CORS off."""
    ui: bool = True
    """Serve the try-it page at / (its static files under /ui/). The page and its files need no
    API key and hold no data; the API calls it makes do, with the key typed into the page
    (docs/try-it.md). false: / and /ui/ answer 404."""
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest request body in bytes; larger gets 413 before it is read."""
    max_concurrent_requests: int = Field(default=256, ge=1)
    """Requests served at once (operations routes excepted); more get 429 at once."""
    shutdown_timeout_s: int = Field(default=30, ge=1)
    """On SIGTERM, how long in-flight requests may take to finish before they are cancelled."""

    # --- images (/embed/image) ---------------------------------------------------------------
    image_max_images: int = Field(64, ge=1)
    """Most images in one /embed/image request; more get 400."""
    image_max_bytes: int = Field(20 * 1024 * 1024, ge=1)
    """Largest image file (after base64 decoding) in bytes; larger gets 413."""
    image_max_request_bytes: int = Field(100 * 1024 * 1024, ge=1)
    """Largest /embed/image request body in bytes; larger gets 413 before it is read whole."""
    image_max_pixels: int = Field(50_000_000, ge=1)
    """Largest image in pixels (width x height), checked before decoding: decompression
    bombs get 413. Also sets Pillow's own limit (Image.MAX_IMAGE_PIXELS)."""
    image_fetch_urls: bool = False
    """Let /embed/image fetch images by URL (JSON field `urls`). Off: a service that fetches
    URLs for clients can be aimed at hosts only it can reach (see docs/image.md). On: http(s)
    only, public addresses only (checked after DNS and after each redirect), and the size and
    time limits here."""
    image_fetch_timeout_s: float = Field(10.0, gt=0)
    """Time limit for fetching all the URLs of one request."""

    # --- scaling: replicas, GPU batches, shape warming (issue 9, docs/scaling.md) -------------
    cpu_threads_per_replica: int = Field(0, ge=0)
    """With replicas=0 on CPU: one session per this many cores; 0: the integer square root of
    the cores, at least 2 (measured best: 4 x 4 threads on 16 cores, 1 x 2 on 2 when served;
    docs/scaling.md)."""
    gpu_max_batch_items: int = Field(1024, ge=1)
    """Most inputs in one inference batch of a dense model on CUDA (max_batch_items there)."""
    gpu_max_batch_tokens: int = Field(65536, ge=1)
    """Token budget of a dense model's batch on CUDA, padded length x items."""
    gpu_batch_overhead_tokens: float = Field(16384.0, ge=0)
    """batch_overhead_tokens for a dense model on CUDA: large, so batches grow as big as the
    caps allow (on a GPU batch size is the lever, not padding)."""
    gpu_pad_multiple: int = Field(8, ge=1)
    """On CUDA, padded widths are rounded up to a multiple of this (fewer shapes to warm)."""
    warm_shapes: Literal["auto", "on", "off"] = "auto"
    """Run each dense model's sessions over every (batch, width) shape they will meet before
    /ready turns 200; auto: on CUDA only (seconds on a GPU, minutes on a small CPU)."""
    gpu_pad_rows: bool = True
    """With warmed shapes on CUDA, round each batch's row count up to a warmed size (a power
    of two, or the largest the token budget allows), repeating its first row: ONNX Runtime
    runs a shape it has not met tens of times slower than one it has."""

    # --- the result cache (issue 32, docs/batch.md) ----------------------------------------
    cache_max_entries: int = Field(65_536, ge=0)
    """Inputs whose results this process keeps in memory (least recently used go first); 0:
    no memory cache. 65536 MiniLM vectors take 96 MiB; identical inputs inside one request
    run once even with no cache."""
    cache_max_bytes: int = Field(128 * 1024 * 1024, ge=0)
    """Bytes of results kept in memory (128 MiB: a sixth of a 1 GiB container limit above
    the server's own 300 MiB). Multi-vector results (late interaction, about 100 KiB a
    passage) reach this before the entry count."""
    redis_url: str | None = None
    """A Redis (or Valkey) shared by every replica as a second cache layer, e.g.
    redis://cache:6379/0. When it goes away the service serves without it (uncached) and
    /ready's `cache` details say so; it is used again once it answers."""
    redis_ttl_s: int = Field(7 * 24 * 3600, ge=1)
    """How long a result stays in Redis."""
    redis_timeout_s: float = Field(0.1, gt=0)
    """Longest wait for Redis on one call (connect or command) before serving without it."""

    # --- batch jobs: OpenAI's Files and Batches API, embed-file (issue 32, docs/batch.md) -----
    batch_api: bool = True
    """Serve /v1/files and /v1/batches and run batch jobs. false: those routes answer 404."""
    data_dir: Path = Path("embed-data")
    """Where batch jobs live: a SQLite database (files, jobs, each line's result) and the
    uploaded and produced files. Jobs survive restarts as long as this directory does: on
    Kubernetes mount a PersistentVolumeClaim here (deploy/kubernetes)."""
    batch_concurrency: int = Field(64, ge=1)
    """Input lines of batch jobs in flight at once (each one request to its route, in the
    bulk priority class). Enough to keep the bulk queue fed with lines of one input (16
    left the bulk batches of 1-6 inputs and the job 10% slower). They are bounded by this, not
    by max_concurrent_requests: a job's lines never take the slots of live requests."""
    batch_max_attempts: int = Field(5, ge=1)
    """Tries of a batch line that gets 429 or 503 (overload, restart) before its error is
    written to the job's error file; a wait of 1, 2, 4... seconds between them."""
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    """Largest file uploaded to POST /v1/files (a batch job's input), in bytes."""

    @field_validator(
        "models", "catalogue_files", "api_keys", "cors_origins", "fastembed_limits", mode="before"
    )
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)
