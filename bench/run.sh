#!/bin/bash
# One command for the side-by-side benchmark: installs what it needs, then runs
# `python -m bench` (bench/harness.py) with the arguments given.
#
#   bench/run.sh                                     # the default sets, every workflow, 5 runs
#   bench/run.sh --images 1g --runs 3 --write-docs   # and regenerate docs/benchmarks.md
#   bench/run.sh --images small,bulk100,bulk1k       # issue 16: small copies, fixed costs,
#                                                    # 1,000 images (cached in bench/.cache)
#   bench/run.sh --images 1g,2g,bulk --profiles loopback,wan   # issue 17: and over a WAN
# (bench/README.md lists every option; python -m bench.h2compare is separate.)
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
