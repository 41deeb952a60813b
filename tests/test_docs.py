"""The documentation runs: every code snippet executes, and the site builds in strict mode.

Per page of ``docs/*.md``, in document order, in one namespace and a fresh working directory:

- every ```` ```python ```` block is executed;
- in every ```` ```bash ```` / ```` ```console ```` / ```` ```shell ```` block, every line that
  is a ``samrefine ...`` command (optionally after ``$ ``) is run through ``samrefine.cli.main``
  and must exit with 0. Other shell lines (``pip install``, ``python benchmarks/...``) are not
  run: they install packages or take minutes.

A block is skipped only when the line just before its opening fence (blank lines aside) is a
visible marker ``<!-- not-run: reason -->`` with a reason.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)")
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(\S.*?)\s*-->\s*$")
SHELL = {"bash", "console", "shell", "sh"}


@dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    skip: str | None  # the not-run reason, if any


def parse_blocks(text: str) -> list[Block]:
    """Fenced code blocks of a Markdown text, with their not-run markers."""
    lines = text.splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence):
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = NOT_RUN.match(lines[k].strip()) if k >= 0 else None
        out.append(
            Block(
                lang, "\n".join(lines[i + 1 : j]) + "\n", i + 1, marker.group(1) if marker else None
            )
        )
        i = j + 1
    return out


def samrefine_commands(code: str) -> list[str]:
    cmds = []
    for raw in code.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:].strip()
        if line.startswith("samrefine "):
            cmds.append(line.split(" #")[0].strip())
    return cmds


def runnable(block: Block) -> bool:
    return block.lang == "python" or (block.lang in SHELL and bool(samrefine_commands(block.code)))


PAGES = sorted(DOCS.glob("*.md"))
RUN_PAGES = [
    p
    for p in PAGES
    if any(runnable(b) and not b.skip for b in parse_blocks(p.read_text(encoding="utf-8")))
]


def test_parser_on_a_known_text():
    text = (
        "intro\n\n```python\nx = 1\n```\n\n<!-- not-run: needs a GPU -->\n\n```python\n"
        "y = 2\n```\n```bash\npip install samrefine\n$ samrefine audit --demo  # note\n```\n"
        "````markdown\n```python\nnested\n```\n````\n"
    )
    blocks = parse_blocks(text)
    assert [(b.lang, b.line, b.skip) for b in blocks] == [
        ("python", 3, None),
        ("python", 9, "needs a GPU"),
        ("bash", 12, None),
        ("markdown", 16, None),
    ]
    assert samrefine_commands(blocks[2].code) == ["samrefine audit --demo"]
    assert blocks[3].code == "```python\nnested\n```\n"


def test_there_are_pages_to_run():
    names = {p.name for p in RUN_PAGES}
    assert {"index.md", "quickstart.md", "concepts.md", "guide-your-loop.md", "audit.md"} <= names


def test_not_run_markers_are_rare_and_explained():
    skipped = [
        (p.name, b.line, b.skip)
        for p in PAGES
        for b in parse_blocks(p.read_text(encoding="utf-8"))
        if b.skip
    ]
    ran = [
        b
        for p in PAGES
        for b in parse_blocks(p.read_text(encoding="utf-8"))
        if runnable(b) and not b.skip
    ]
    assert all(len(reason) >= 10 for _, _, reason in skipped), skipped
    assert len(skipped) <= max(2, len(ran) // 4), f"too many not-run blocks: {skipped}"


@pytest.fixture
def one_thread():
    """Tiny torch models run faster on one thread than on a shared, busy machine's cores."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("page", RUN_PAGES, ids=[p.name for p in RUN_PAGES])
def test_page_snippets_run(page, tmp_path, monkeypatch, capsys, one_thread):
    from samrefine.cli import main

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for block in parse_blocks(page.read_text(encoding="utf-8")):
        if block.skip or not runnable(block):
            continue
        where = f"{page.name}:{block.line}"
        if block.lang == "python":
            exec(compile(block.code, where, "exec"), namespace)
        else:
            for cmd in samrefine_commands(block.code):
                argv = shlex.split(cmd)[1:]
                rc = main(argv)
                assert rc == 0, f"{where}: `{cmd}` exited with {rc}:\n{capsys.readouterr().err}"
        ran += 1
    assert ran > 0


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("material")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert 'id="samrefine.auditing.audit"' in api and 'id="samrefine.match.refine"' in api
