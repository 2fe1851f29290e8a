"""The README is the front door: its settings table is current and its examples run."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from service.ops.settings_doc import BEGIN, END, table
from tests.conftest import ROOT
from tests.prod_server import live_server

README = (ROOT / "README.md").read_text()
NAME = "sentence-transformers/all-MiniLM-L6-v2"


def blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def section(heading: str) -> str:
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


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


ANY_LANGUAGE = section("Calling it from any language")
JS_DIR = ROOT / "tests" / "js"  # `make js-deps` installs the openai package here


def run_block(language: str, code: str, workdir: Path) -> str:
    """Run one README block with its language's toolchain; its standard output."""
    if language == "python":
        command = [sys.executable, "-c", code]
    elif language == "javascript":
        script = workdir / "example.mjs"
        script.write_text(code)
        command = ["node", str(script)]
    else:
        (workdir / "main.go").write_text(code)
        command = ["go", "run", str(workdir / "main.go")]
    cache = ROOT / ".cache" / "go"  # git-ignored: later runs reuse the compiled packages
    env = {**os.environ, "GOCACHE": str(cache / "build"), "GOPATH": str(cache / "path")}
    ran = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir, env=env)
    assert ran.returncode == 0, (language, ran.stderr[-2000:])
    return ran.stdout


def test_the_any_language_section_shows_each_language() -> None:
    counts = {
        lang: len(blocks(lang, ANY_LANGUAGE)) for lang in ("bash", "python", "javascript", "go")
    }
    assert counts == {"bash": 1, "python": 1, "javascript": 2, "go": 1}
    assert "fetch(" in blocks("javascript", ANY_LANGUAGE)[1]


@pytest.mark.slow
def test_the_any_language_examples_run_against_the_real_service(real_minilm: Path) -> None:
    assert (JS_DIR / "node_modules" / "openai" / "package.json").is_file(), "run `make js-deps`"
    with live_server({"EMBED_MODELS": f"{NAME}@{real_minilm}"}) as url:
        for language in ("python", "javascript", "go"):
            for code in blocks(language, ANY_LANGUAGE):
                local = code.replace("http://localhost:8000", url)
                assert local != code, language
                parent = JS_DIR if language == "javascript" else None  # node_modules above it
                with tempfile.TemporaryDirectory(dir=parent) as scratch:
                    output = run_block(language, local, Path(scratch))
                assert output.split() == ["384", "4"], (language, output)
