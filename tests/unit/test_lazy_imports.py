"""What a run loads before it forks its stages (issue 16: import only what a run uses).

A fresh interpreter imports the command line and the pipeline, as `occystrap process` does
for a registry → oci:// copy, and must not have loaded the modules that only other kinds of
run need: filters, the archive and Quay sources, the Docker engine client, the codecs, YAML,
httpx, and what only they pull in. A module that comes back means a top-level import crept in
somewhere; make it lazy where it is used.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Loaded by a run only when it needs them.
ON_DEMAND = [
    "occystrap.filters.exclude",
    "occystrap.filters.inspect",
    "occystrap.filters.search",
    "occystrap.filters.normalize_timestamps",
    "occystrap.filters.parse",
    "occystrap.filters.layer",
    "occystrap.sources.quay",
    "occystrap.sources.tarball",
    "occystrap.sources.dockersave",
    "occystrap.sources.directory",
    "occystrap.sources.ocilayout",
    "occystrap.sources.bulk",
    "occystrap.engine",
    "occystrap.registry.proxy",
    "isal",
    "zstandard",
    "yaml",
    "httpx",
    "tarfile",
    "urllib.request",
    "statistics",  # the stats table of many images
]

# Imported by the supervisor after the stages fork (stats/sampler.py), never before it.
AFTER_THE_FORK = ["psutil"]

_PROBE = """
import json, sys
import occystrap.cli
import occystrap.pipeline
import occystrap.mirrorspec, occystrap.cli.progress, occystrap.cli.report, occystrap.outcome
from occystrap.destinations import writer_class
writer_class("oci")
import occystrap.sources.registry
print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def loaded() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module", ON_DEMAND + AFTER_THE_FORK)
def test_not_loaded_by_a_registry_to_oci_run(loaded: set[str], module: str) -> None:
    assert module not in loaded


def test_the_probe_sees_what_a_run_needs(loaded: set[str]) -> None:
    # The probe is real: what every run needs is there.
    for module in ("occystrap.stages.fetch", "occystrap.registry.client", "msgspec", "click"):
        assert module in loaded


def test_the_command_line_alone_loads_no_run_machinery() -> None:
    """`--help` and `--version` import the command line only: not msgspec, the pipeline,
    psutil or the HTTP stack (the ≤ 80 ms of issue 16)."""
    probe = "import json, sys; import occystrap.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert "click" in loaded
    for module in ("msgspec", "occystrap.pipeline", "psutil", "http.client", "ssl"):
        assert module not in loaded


def test_the_report_of_a_run_without_search_loads_no_filter() -> None:
    """The end of a run (last byte → exit, issue 16): no search filter, no search module."""
    probe = (
        "import sys; from occystrap.cli import report; from occystrap.filters import FilterChain;"
        " report._print_search_results(FilterChain(()), []);"
        " print('occystrap.filters.search' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
