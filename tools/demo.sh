#!/usr/bin/env bash
# A end-to-end demo on loopback only: start a real registry, push deterministic sample images,
# copy one with occystrap to a docker-archive tarball, an OCI layout and a directory, and let
# skopeo (an independent implementation) read the results back.
#
# Outputs go to $OUT (default: a new /tmp/occystrap-demo.XXXXXX); the registry is stopped on
# exit, whatever happens.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tools/setup.sh

OUT="${OUT:-$(mktemp -d /tmp/occystrap-demo.XXXXXX)}"
mkdir -p "$OUT"
REG_PID=""
cleanup() {
    if [ -n "$REG_PID" ] && kill -0 "$REG_PID" 2>/dev/null; then
        kill -TERM "$REG_PID" 2>/dev/null || true
        wait "$REG_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "starting a test registry on 127.0.0.1"
.venv/bin/python -m tools.testregistry --port 0 --dir "$OUT/registry" \
    >"$OUT/registry.url" 2>"$OUT/registry.err" &
REG_PID=$!
for _ in $(seq 1 300); do
    [ -s "$OUT/registry.url" ] && break
    if ! kill -0 "$REG_PID" 2>/dev/null; then
        cat "$OUT/registry.err" >&2
        exit 1
    fi
    sleep 0.1
done
URL="$(head -n1 "$OUT/registry.url")"
[ -n "$URL" ] || { echo "registry did not start" >&2; cat "$OUT/registry.err" >&2; exit 1; }
HOST="${URL#http://}"
echo "registry: $URL"

step "pushing the sample images"
.venv/bin/python -m tools.imagebuilder --registry "$URL" --sample

step "registry -> tar (docker-archive)"
.venv/bin/occystrap --insecure --stats text process \
    "registry://$HOST/library/app:1.0" "tar://$OUT/app.tar"
ls -l "$OUT/app.tar"
if [ -x /usr/bin/skopeo ]; then
    step "skopeo reads the tarball"
    skopeo inspect "docker-archive:$OUT/app.tar"
fi

step "registry -> oci:// (OCI image layout)"
.venv/bin/occystrap --insecure --stats text process \
    "registry://$HOST/library/oci-app:1.0" "oci://$OUT/oci-layout"
if [ -x /usr/bin/skopeo ]; then
    skopeo inspect "oci:$OUT/oci-layout" || echo "(skopeo could not pick an image from the layout)"
fi

step "registry -> dir://"
.venv/bin/occystrap --insecure --stats text process \
    "registry://$HOST/library/app:1.0" "dir://$OUT/dir"
ls -l "$OUT/dir"

step "done"
cat <<EOT
Outputs are in $OUT:
  $OUT/app.tar       docker-archive of library/app:1.0
  $OUT/oci-layout    OCI image layout of library/oci-app:1.0
  $OUT/dir           occystrap directory layout of library/app:1.0
The registry at $URL has been stopped (its storage is kept in $OUT/registry).
EOT
