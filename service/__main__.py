"""Command line: `python -m service [serve] [--host H] [--port P] [--model M ...]`,
`python -m service convert SOURCE OUT [options]` and `python -m service embed-file INPUT.jsonl
OUTPUT` (a batch job over a local file, docs/batch.md).

`serve` runs one process (``EMBED_WORKERS=1``), or a supervisor with several
request-handling processes and one engine process (docs/scaling.md); the supervisor starts
those as `python -m service _front ...` and `python -m service _engine ...`, internal
commands that take the same serve arguments."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.settings import Settings


def _settings(argv: Sequence[str]) -> Settings:
    """The settings, with the serve command's flags over the environment; logging and
    glibc's allocator configured from them (every process of the service does this)."""
    from service.engine.scaling import available_cores
    from service.ops.logs import configure_logging
    from service.ops.memory import limit_malloc_arenas, tune_malloc
    from service.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m service", description="Run the service.")
    parser.add_argument("--host", help="address to bind (EMBED_HOST)")
    parser.add_argument("--port", type=int, help="port (EMBED_PORT)")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        help="model to serve; repeat for several (EMBED_MODELS, comma separated)",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--workers", type=int, help="request-handling processes (EMBED_WORKERS; 0: auto)"
    )
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    tune_malloc(settings.malloc_mmap_threshold, settings.malloc_trim_threshold)
    limit_malloc_arenas(settings.malloc_arena_max or available_cores())
    return settings


def _serve(argv: Sequence[str]) -> int:
    settings = _settings(argv)
    from service.launch.workers import worker_count

    workers = worker_count(settings)
    if workers > 1:
        from service.launch.supervisor import Supervisor

        return Supervisor(settings, list(argv), workers).run()
    import uvicorn

    from service.app import create_app
    from service.launch.shutdown import DrainingServer

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    DrainingServer(config, app.state.registry).run()
    return 0


def _child(role: str, argv: Sequence[str]) -> int:
    """A process the supervisor started: `_engine` or `_front`."""
    from service.launch.children import engine_socket, follow_parent

    parser = argparse.ArgumentParser(prog=f"python -m service {role}", add_help=False)
    parser.add_argument("--runtime", type=Path, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--when-ready", action="store_true")
    own, rest = parser.parse_known_args(argv)
    follow_parent(own.parent)
    settings = _settings(rest)
    if role == "_engine":
        import uvloop

        from service.engine.main import run_engine

        uvloop.run(run_engine(settings, str(engine_socket(own.runtime))))
        return 0
    from service.launch.front import run_front

    run_front(settings, own.runtime, own.when_ready)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "convert":
        from service.convert.cli import main as convert_main

        return convert_main(args[1:])
    if args and args[0] == "embed-file":
        from service.bulk.cli import main as embed_file

        _settings([])  # logging and the allocator, as for serving
        return embed_file(args[1:])
    if args and args[0] == "settings":
        from service.ops.settings_doc import rewrite, table

        if args[1:] == ["--write-readme"]:
            readme = Path("README.md")
            readme.write_text(rewrite(readme.read_text()))
        else:
            print(table())
        return 0
    if args and args[0] in ("_engine", "_front"):
        return _child(args[0], args[1:])
    if args and args[0] == "serve":
        args = args[1:]
    return _serve(args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
