#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian (bookworm) machine or a developer's checkout.
#
# Installs the real tools the tests run against (a CNCF distribution registry; skopeo, umoci and
# containerd, independent readers of our outputs; a docker credential helper), then a venv
# with occystrap in editable mode. Re-running is cheap: apt is only consulted for what is
# missing, and pip only when the packaging metadata changed since the last successful install,
# so tools/test.sh can call this every time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "setup: $*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

missing=()
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
[ -x /usr/bin/skopeo ] || missing+=(skopeo)
# A real Docker engine for the docker:// tests (started by the tests in a temp dir).
[ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v podman >/dev/null 2>&1 || missing+=(podman)
# containerd's own importer (ctr) reads our tar:// output; umoci is an OCI-only reader of
# oci:// layouts; docker-credential-pass with pass (and GnuPG) is a real credential helper.
command -v ctr >/dev/null 2>&1 || missing+=(containerd)
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
command -v docker-credential-pass >/dev/null 2>&1 || missing+=(golang-docker-credential-helpers)
command -v pass >/dev/null 2>&1 || missing+=(pass)
command -v gpg >/dev/null 2>&1 || missing+=(gnupg)
# Makes the container image's Debian base where no base image can be pulled (tools/build-image.sh).
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Only refresh the package lists when apt does not know a package yet (fresh images ship
    # with none); an update costs tens of seconds and needs the network.
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
        "${SUDO[@]}" apt-get update -qq
    fi
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
fi

stamp=.venv/.occystrap-setup-stamp
want="$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1) $(.venv/bin/python -V 2>&1) compat"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
        || ! .venv/bin/python -c 'import occystrap, pytest, xdist' >/dev/null 2>&1 \
        || [ ! -x .venv/bin/occystrap ]; then
    log "installing occystrap (editable) with test extras into .venv"
    # editable_mode=compat: a plain path in a .pth file, as cheap at start-up as a wheel
    # install. setuptools' default editable finder imports pathlib, urllib.parse and
    # importlib.util from site.py in every interpreter: 20 ms of each start, which no user's
    # install pays and which the benchmarks (they run .venv/bin/occystrap) would count.
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' \
        --config-settings editable_mode=compat
    echo "$want" > "$stamp"
fi

# Byte-compile the package, as a non-editable pip install does: with PYTHONDONTWRITEBYTECODE
# set (some CI images and sandboxes set it), every run would otherwise compile ~100 modules
# from source (~0.12 s of each start). Only changed files are recompiled.
.venv/bin/python -m compileall -q occystrap >/dev/null
