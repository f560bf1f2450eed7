"""The documentation: the Sphinx site builds with warnings as errors, and what users read speaks to users.

The site (``docs/``, MyST Markdown and an API reference generated from the docstrings) is built once per session
into a temporary folder. Nothing a user reads (README.md, the documentation's sources, the built pages, the
docstrings the API reference shows) may mention the developers' ``../shared`` folder, ``METHOD.md``, or issue numbers.
"""

from __future__ import annotations

import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

#: Words that speak to the developers, not to users.
NOT_FOR_USERS = {
    "an issue number": re.compile(r"\bissues? #?\d", re.IGNORECASE),
    "the developers' shared folder": re.compile(r"\.\./shared"),
    "the developers' notes": re.compile(r"METHOD\.md"),
}


def doc_sources() -> list[Path]:
    """README.md and every source of the site (Markdown, reST, its configuration and extensions)."""
    return [README, *sorted(p for p in DOCS.rglob("*") if p.suffix in (".md", ".rst", ".py")
                            and "_build" not in p.parts)]


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built from docs/ with ``-W --keep-going``: any warning fails the build."""
    for module in ("sphinx", "myst_parser", "furo"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                             str(out / "html"), "-d", str(out / "doctrees")],
                            capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    warnings = [line for line in (result.stdout + result.stderr).splitlines()
                if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0, "the documentation does not build cleanly:\n" + "\n".join(
        warnings or [result.stdout[-3000:], result.stderr[-3000:]])
    return out / "html"


def test_the_site_builds_without_warnings(built_site: Path) -> None:
    pages = {p.relative_to(built_site).as_posix() for p in built_site.rglob("*.html")}
    for page in ("index.html", "maths.html", "attacks.html", "autoattack.html", "training.html", "cli.html",
                 "api/attacks.html", "experiments/strength.html"):
        assert page in pages, f"{page} was not built"


def test_the_api_reference_documents_the_public_api(built_site: Path) -> None:
    import art_wdat

    html = "".join(p.read_text(encoding="utf-8") for p in (built_site / "api").glob("*.html"))
    for name in art_wdat.__all__:
        if name == "__version__":
            continue
        obj = getattr(art_wdat, name)
        assert f'id="{obj.__module__}.{obj.__qualname__}"' in html, f"{name} is missing from the API reference"


def test_every_subpackage_has_an_api_page() -> None:
    import art_wdat

    documented = set(re.findall(r"^\.\. apipackage:: (\S+)", "\n".join(
        p.read_text(encoding="utf-8") for p in (DOCS / "api").glob("*.rst")), flags=re.MULTILINE))
    packages = {"art_wdat"} | {f"art_wdat.{m.name}" for m in pkgutil.iter_modules(art_wdat.__path__) if m.ispkg}
    assert packages <= documented, f"subpackages without an API page: {sorted(packages - documented)}"


@pytest.mark.parametrize("source", doc_sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_sources_speak_to_users(source: Path) -> None:
    text = source.read_text(encoding="utf-8")
    found = [f"{what}: {m.group(0)!r}" for what, pattern in NOT_FOR_USERS.items() for m in pattern.finditer(text)]
    assert not found, f"{source.relative_to(ROOT)} mentions " + "; ".join(found)


def test_built_pages_and_docstrings_speak_to_users(built_site: Path) -> None:
    """The built pages include every docstring the API reference shows (not the highlighted source code)."""
    found = []
    for page in built_site.rglob("*.html"):
        if page.relative_to(built_site).parts[0] == "_modules":
            continue
        text = re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8"))
        found += [f"{page.relative_to(built_site)}: {m.group(0)!r}" for pattern in NOT_FOR_USERS.values()
                  for m in pattern.finditer(text)]
    assert not found, "built pages speak to the developers:\n" + "\n".join(found)


def _relative_links(text: str) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]


@pytest.mark.parametrize("source", [README, *sorted(DOCS.rglob("*.md"))], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files(source: Path) -> None:
    """Links between pages resolve on GitHub too (Sphinx checks the documentation's; README is not part of it)."""
    missing = [link for link in _relative_links(source.read_text(encoding="utf-8"))
               if not (source.parent / link.split("#")[0]).exists()]
    assert not missing, f"{source.relative_to(ROOT)} links to missing files: {missing}"


def test_readme_is_a_landing_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 210, f"README.md has {len(lines)} lines; the details belong in docs/"
