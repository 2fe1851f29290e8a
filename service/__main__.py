"""Command line: `python -m service [serve] [--host H] [--port P] [--model M ...]` and
`python -m service convert SOURCE OUT [options]`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _serve(argv: Sequence[str]) -> int:
    import uvicorn

    from service.app import create_app
    from service.engine.scaling import available_cores
    from service.ops.logs import configure_logging
    from service.ops.memory import limit_malloc_arenas, tune_malloc
    from service.ops.shutdown import DrainingServer
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
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    tune_malloc(settings.malloc_mmap_threshold, settings.malloc_trim_threshold)
    limit_malloc_arenas(settings.malloc_arena_max or available_cores())
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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "convert":
        from service.convert.cli import main as convert_main

        return convert_main(args[1:])
    if args and args[0] == "settings":
        from pathlib import Path

        from service.ops.settings_doc import rewrite, table

        if args[1:] == ["--write-readme"]:
            readme = Path("README.md")
            readme.write_text(rewrite(readme.read_text()))
        else:
            print(table())
        return 0
    if args and args[0] == "serve":
        args = args[1:]
    return _serve(args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
