"""The README is the front door: its settings table is current and its examples run."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.ops.settings_doc import BEGIN, END, table
from tests.conftest import ROOT
from tests.prod_server import live_server

README = (ROOT / "README.md").read_text()
NAME = "sentence-transformers/all-MiniLM-L6-v2"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_settings_table_is_generated_from_the_settings_class() -> None:
    current = README[README.index(BEGIN) : README.index(END) + len(END)]
    assert current == table(), "run `make settings-doc`"


def test_the_quick_start_names_the_two_commands() -> None:
    quick = blocks("bash")[0]
    assert "make run" in quick and "make test" in quick
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def curl_requests() -> list[tuple[str, dict[str, object]]]:
    found = []
    for block in blocks("bash"):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip().startswith("curl"):
                words = shlex.split(command)
                url = next(w for w in words if w.startswith("localhost:8000"))
                body = json.loads(words[words.index("-d") + 1])
                found.append((url.removeprefix("localhost:8000"), body))
    return found


@pytest.mark.slow
def test_the_readme_examples_run_against_the_real_service(real_minilm: Path) -> None:
    requests = curl_requests()
    assert len(requests) >= 2
    with live_server({"EMBED_MODELS": f"{NAME}@{real_minilm}"}) as url:
        for path, body in requests:
            response = httpx.post(url + path, json=body, timeout=30)
            assert response.status_code == 200, (path, response.text)
        python = blocks("python")[0].replace("http://localhost:8000", url)
        ran = subprocess.run(
            [sys.executable, "-c", python], capture_output=True, text=True, timeout=60, check=True
        )
    assert ran.stdout.split() == ["384", "8"]
