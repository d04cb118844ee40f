#!/bin/bash
# One command for the side-by-side benchmark: installs what it needs, then runs
# `python -m bench` (bench/harness.py) with the arguments given.
#
#   bench/run.sh                                     # every image and workflow, 5 runs
#   bench/run.sh --images 1g --runs 3 --write-docs   # and regenerate docs/benchmarks.md
#
# Sets up: Debian's docker-registry and skopeo (apt-get, when missing and we are root), the
# dev venv (tools/setup.sh, when missing) and occystrap 0.4.17 in bench/.venv-orig. Safe to
# re-run; the registries it starts live on 127.0.0.1 and are stopped when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
command -v skopeo >/dev/null || need_apt+=(skopeo)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing ${need_apt[*]}: run as root, or: sudo apt-get install -y ${need_apt[*]}" >&2
        exit 2
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi
if [ ! -x .venv/bin/occystrap ]; then
    tools/setup.sh
fi
if [ ! -x bench/.venv-orig/bin/occystrap ]; then
    python3 -m venv bench/.venv-orig
    bench/.venv-orig/bin/pip install -q occystrap==0.4.17
fi
exec .venv/bin/python -m bench "$@"
