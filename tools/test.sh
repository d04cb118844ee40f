#!/usr/bin/env bash
# THE test command: set up what is missing, then run the whole suite in parallel (a module's
# tests on one worker, so module fixtures such as the container image are made once).
# Extra arguments go to pytest, e.g. `bash tools/test.sh tests/unit -k reference`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .  # `ruff format .` fixes it
.venv/bin/mypy occystrap  # settings in pyproject.toml
exec .venv/bin/python -m pytest -n auto --dist loadscope -q "$@"
