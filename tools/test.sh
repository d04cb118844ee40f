#!/usr/bin/env bash
# THE test command: set up what is missing, then run the whole suite in parallel.
# Extra arguments go to pytest, e.g. `bash tools/test.sh tests/unit -k reference`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n auto -q "$@"
