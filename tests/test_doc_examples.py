"""Every code example of README.md and of the documentation runs as pasted.

Each page's fenced ``python`` and shell blocks run in order, in a fresh temporary folder, in one subprocess per
page: the Python blocks share one namespace, as in a Python session a reader pastes them into, and the shell
blocks run in the same folder, with ``art-wdat`` meaning this checkout's command line. Blocks that cannot run here
(installing packages, downloads, several processes, minutes of work) match a rule of :data:`NOT_RUN`, which says
why; a shell block that matches no rule must be ``art-wdat`` commands only. A page whose runnable blocks are those
of an earlier page (the documentation repeats the README's quick start) is run once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELLS = ("bash", "sh", "shell", "console")

#: Blocks that are not run, each rule a pattern searched in the block and the reason.
NOT_RUN: dict[str, str] = {
    r"pip install|python3 -m venv": "installs packages: the set-up commands, which .ci/run runs in CI",
    r"(^|\s)(\.venv/bin/)?art-wdat demo\s*($|#)": "the full demo takes minutes; tests/test_cli.py runs demo --quick",
    r"torchrun": "several processes; tests/test_distributed*.py run torchrun on the CPU",
    r"rb:|--dataset cifar|load_robustbench|robustbench\.utils": "downloads RobustBench weights or CIFAR-10",
    r"download=True": "downloads CIFAR-10",
    r"python bench/|python examples/": "needs the studies' data and models, or minutes; tests/test_bench*.py and "
                                        "tests/test_examples.py run them in quick modes",
    r"sphinx-build": "builds the documentation, which tests/test_docs.py does",
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    index: int
    language: str
    code: str

    @property
    def shell(self) -> bool:
        return self.language in SHELLS

    def reason_not_run(self) -> str | None:
        for pattern, reason in NOT_RUN.items():
            if re.search(pattern, self.code, flags=re.MULTILINE):
                return reason
        return None


def blocks_of(page: Path) -> list[Block]:
    """The page's fenced ``python`` and shell blocks, in order."""
    name = page.relative_to(ROOT).as_posix()
    found = re.findall(r"^```([\w-]+)[^\n]*\n(.*?)^```[ \t]*$", page.read_text(encoding="utf-8"),
                       flags=re.MULTILINE | re.DOTALL)
    return [Block(name, i, lang, code) for i, (lang, code) in enumerate(found) if lang == "python" or lang in SHELLS]


def commands(block: Block) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = block.code.replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks_of(page) if b.reason_not_run() is None]


def _cases() -> list:
    cases, seen = [], {}
    for page in PAGES:
        blocks = runnable(page)
        if not blocks:
            continue
        key = tuple((b.language, b.code) for b in blocks)
        name = page.relative_to(ROOT).as_posix()
        marks = [pytest.mark.skip(reason=f"the same examples as {seen[key]}, run there")] if key in seen else []
        seen.setdefault(key, name)
        cases.append(pytest.param(page, id=name, marks=marks))
    return cases


#: Runs one page's blocks: ``python DRIVER BLOCKS.json`` in the page's folder.
DRIVER = textwrap.dedent('''
    import json, os, subprocess, sys
    sys.path.insert(0, os.getcwd())   # as in a Python session started in this folder
    namespace = {"__name__": "__main__"}
    for block in json.load(open(sys.argv[1])):
        where = f"{block['page']}, block {block['index']}"
        print(f"=== {where}", flush=True)
        if block["shell"]:
            script = 'art-wdat() { "$ART_WDAT_PYTHON" -m art_wdat "$@"; }\\nset -e\\n' + block["code"]
            if subprocess.run(["bash", "-c", script]).returncode != 0:
                sys.exit(f"{where}: the shell block failed")
        else:
            exec(compile(block["code"], where, "exec"), namespace)
''')


@pytest.mark.slow
@pytest.mark.parametrize("page", _cases())
def test_examples_run_as_pasted(page: Path, tmp_path: Path) -> None:
    blocks = runnable(page)
    (tmp_path / "blocks.json").write_text(json.dumps([{**vars(b), "shell": b.shell} for b in blocks]))
    (tmp_path / "driver.py").write_text(DRIVER)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "ART_WDAT_PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json")],
                            cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{page.name}:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_shell_block_runs_or_says_why_not(page: Path) -> None:
    for block in blocks_of(page):
        if block.shell and block.reason_not_run() is None:
            bad = [c for c in commands(block) if not c.startswith("art-wdat ")]
            assert not bad, f"{block.page} block {block.index}: {bad} is neither an art-wdat command nor listed " \
                            "in NOT_RUN with the reason it is not run"


def test_every_rule_of_not_run_is_used() -> None:
    """The list stays current: each rule keeps at least one block from running."""
    blocks = [b for page in PAGES for b in blocks_of(page)]
    unused = [p for p in NOT_RUN if not any(re.search(p, b.code, flags=re.MULTILINE) for b in blocks)]
    assert not unused, f"rules of NOT_RUN that match no block: {unused}"


def test_the_readme_has_a_quick_start_that_runs() -> None:
    blocks = blocks_of(ROOT / "README.md")
    assert any(b.language == "python" and b.reason_not_run() is None for b in blocks)
    assert any(c.startswith("art-wdat ") for b in blocks if b.shell for c in commands(b))


def test_getting_started_repeats_the_readme_quick_start() -> None:
    """The documentation's quick start is the README's, so that it is run once and says the same."""
    readme = [b.code for b in runnable(ROOT / "README.md") if b.language == "python"]
    docs = [b.code for b in runnable(ROOT / "docs" / "getting-started.md") if b.language == "python"]
    assert docs == readme
