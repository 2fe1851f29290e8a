"""Every request an app answers, from its own route table: for checks that must cover a
route the day it is added (the API-key walk in test_guard.py and test_workers.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from service.front.http.guard import PAGE_FILES, public_requests
from service.settings import Settings


def every_request(app: Any) -> list[tuple[str, str]]:
    """(method, path) for every route of the app and every method it accepts, from the app's
    own route table (path parameters filled in), and a file of each static mount."""
    requests = []
    for route in iter_route_contexts(app.routes):
        if isinstance(route.route, Mount):
            directory = Path(route.route.app.directory)  # type: ignore[attr-defined]
            first = sorted(p.name for p in directory.iterdir() if p.is_file())[0]
            requests += [("GET", f"{route.path}/{first}"), ("HEAD", f"{route.path}/{first}")]
            continue
        path = re.sub(r"{[^}]+}", "some-id", route.path)
        requests += [(method, path) for method in sorted(route.methods or ())]
    return requests


def declared_public(settings: Settings, method: str, path: str) -> bool:
    """Whether the guard's declared public requests (service/front/http/guard.py) name this
    one: the pairs, and the page's files while the page is on."""
    prefix, methods = PAGE_FILES
    page_file = settings.ui and method in methods and path.startswith(prefix)
    return page_file or (method, path) in public_requests(settings)
