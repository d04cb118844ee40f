"""The docs and `--help` must agree: every option `occystrap --help` and `occystrap process
--help` show is documented in docs/, with its environment variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from occystrap.cli import cli

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _help(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def _options(text: str) -> set[str]:
    """Long options (and `--x / --no-x` pairs, each half) from the Options section."""
    section = text.split("Options:", 1)[1].split("Commands:", 1)[0]
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", section))


def _docs() -> str:
    return "\n".join(p.read_text() for p in sorted(DOCS.glob("*.md")))


@pytest.mark.parametrize(
    "command",
    [(), ("process",), ("info",), ("check",), ("search",)],
    ids=["occystrap", "process", "info", "check", "search"],
)
def test_every_option_is_documented(command: tuple[str, ...]) -> None:
    docs = _docs()
    options = _options(_help(*command))
    assert "--help" in options and len(options) > 1  # parsing found the option list
    missing = sorted(
        o for o in options if f"`{o}" not in docs and f" {o}" not in docs and f"/ {o}" not in docs
    )
    assert not missing, f"options in --help but not in docs/: {missing}"


def test_every_env_var_is_documented() -> None:
    docs = _docs()
    env = set(re.findall(r"OCCYSTRAP_[A-Z_]+", _help()))
    assert "OCCYSTRAP_PARALLEL" in env
    missing = sorted(v for v in env if v not in docs)
    assert not missing, f"environment variables in --help but not in docs/: {missing}"


def test_docs_link_to_files_that_exist() -> None:
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([\w.-]+\.md)\)", page.read_text()):
            assert (DOCS / target).exists(), f"{page.name} links to missing {target}"


ROOT = DOCS.parent


def _named_files(text: str) -> set[str]:
    """The `*.py` files a page names in backticks (`stages/fetch.py`, `flow.py`)."""
    return set(re.findall(r"`(?:[\w.]+ )?([\w/.-]+\.py)\b", text))


def _exists(name: str) -> bool:
    if "/" in name:
        return (ROOT / name).is_file() or (ROOT / "occystrap" / name).is_file()
    return any(ROOT.glob(f"occystrap/**/{name}")) or any(
        (ROOT / top).glob(f"**/{name}") for top in ("tests", "tools", "bench")
    )


def test_docs_name_modules_that_exist() -> None:
    """A module moved or renamed is renamed in the docs too."""
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    missing = sorted(
        f"{page.name}: {name}"
        for page in pages
        for name in _named_files(page.read_text())
        if not _exists(name)
    )
    assert not missing, f"the docs name files that do not exist: {missing}"
