#!/usr/bin/env bash
# Build the occystrap container image (deploy/Containerfile) from this checkout.
#
#   tools/build-image.sh [--tag TAG] [--base IMAGE]
#
# With --base (e.g. debian:bookworm-slim on a machine that can pull it) this is a plain
# `docker build`. Without it, the base is made here from Debian's packages, because no base image
# can be pulled where the only network is the package mirrors: mmdebstrap writes a minimal
# bookworm root filesystem (with python3 and python3-venv, so the build needs nothing from apt)
# into a tarball, `docker import` turns it into an image, and the Containerfile builds on it.
#
# The tarball is cached, keyed by its recipe (suite, packages, options), in
# $OCCYSTRAP_IMAGE_CACHE (default ~/.cache/occystrap), so repeated runs do not debootstrap again;
# concurrent runs take a lock and the tarball appears atomically (written, then renamed).
# Apt sources: the host's own (/etc/apt/sources.list.d/debian.sources, else
# /etc/apt/sources.list), or $OCCYSTRAP_DEBIAN_SOURCES.
#
# The wheels (occystrap's, built from the checkout, and its dependencies' for the image's
# Python 3.11 on x86_64) are collected with this machine's pip into the build context, so the
# build itself installs from them with no index. The Docker engine is $DOCKER_HOST (unix://...)
# or the default socket; builds run with `--network host` (the test suite's engine has no
# bridge, and a base without python3 installs it from apt).
# Prints the image ID on stdout as its last line; progress goes to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "build-image: $*" >&2; }
die() { echo "build-image: error: $*" >&2; exit 1; }

tag=occystrap:dev
base=
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag=${2:?--tag needs a value}; shift 2 ;;
        --base) base=${2:?--base needs a value}; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-image: usage: tools/build-image.sh [--tag TAG] [--base IMAGE]" >&2; exit 2 ;;
    esac
done

command -v docker >/dev/null 2>&1 || die "no docker client (tools/setup.sh installs docker.io)"

if [ -z "$base" ]; then
    suite=bookworm
    packages=python3,python3-venv
    opts=(--variant=minbase --format=tar --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
          --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
          --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*'
          --dpkgopt='path-include=/usr/share/doc/*/copyright')
    key=$(printf '%s\n' "$suite" "$packages" "${opts[@]}" | sha256sum | cut -c1-16)
    cache=${OCCYSTRAP_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/occystrap}
    tarball=$cache/base-$suite-$key.tar
    base=occystrap-base:$suite-$key
    sources=${OCCYSTRAP_DEBIAN_SOURCES:-}
    if [ -z "$sources" ]; then
        for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
            if [ -s "$f" ]; then sources=$f; break; fi
        done
    fi
    mkdir -p "$cache"
    exec 9>"$cache/base-$suite-$key.lock"
    flock 9
    if [ ! -s "$tarball" ]; then
        command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is missing (tools/setup.sh installs it)"
        [ -n "$sources" ] || die "no apt sources found; set OCCYSTRAP_DEBIAN_SOURCES to a sources file"
        log "making the $suite base ($packages) with mmdebstrap into $tarball"
        start=$SECONDS
        mmdebstrap --quiet --include="$packages" "${opts[@]}" "$suite" "$tarball.tmp" "$sources" >&2 \
            || { rm -f "$tarball.tmp"; die "mmdebstrap failed"; }
        mv "$tarball.tmp" "$tarball"
        log "base made in $((SECONDS - start)) s"
    fi
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        log "importing $tarball as $base"
        docker import "$tarball" "$base" >/dev/null
    fi
    exec 9>&-
fi

# The build context: the package's files from this checkout plus wheels/ (occystrap's wheel
# and its dependencies' wheels for the image's Python, fetched with this machine's pip and its
# settings), so nothing inside the build talks to PyPI.
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
ctx=$(mktemp -d "${TMPDIR:-/tmp}/occystrap-image-XXXXXX")
trap 'rm -rf "$ctx"' EXIT
tar -c --exclude=__pycache__ --exclude='*.pyc' setup.cfg pyproject.toml README.md occystrap \
    | tar -x -C "$ctx"
log "collecting wheels with $python -m pip"
"$python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$ctx/wheels" . >&2
"$python" -m pip download -q --disable-pip-version-check --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    --platform manylinux_2_36_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$ctx/wheels" "$ctx"/wheels/occystrap-*.whl >&2

log "building $tag from deploy/Containerfile on $base"
start=$SECONDS
docker build --network host --build-arg "BASE=$base" -f "$PWD/deploy/Containerfile" -t "$tag" \
    "$ctx" >&2
log "built $tag in $((SECONDS - start)) s"
docker image inspect --format '{{.Id}}' "$tag"
