#!/bin/bash
# Sweep occystrap's -j (1/4/8/16) and -J (1/3/6) on small images against a loopback registry,
# as the original occystrap's tools/benchmark.sh did. TSV by default, --json for JSON lines;
# columns workflow, j, J, wall_s (median of --runs), exit_code, peak_mem_mb (peak PSS of the
# whole process tree). A few minutes with the defaults.
#
#   tools/benchmark.sh                               # starts (and stops) a local test registry
#   tools/benchmark.sh --registry 127.0.0.1:5000 --runs 5 --json
#
# Needs the dev venv and Debian's docker-registry (tools/setup.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    echo "no .venv: run tools/setup.sh first" >&2
    exit 2
fi
exec .venv/bin/python -m bench.sweep "$@"
