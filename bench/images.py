"""The benchmark's source images: built with our deterministic image builder and pushed into a
loopback registry, or (``cached`` sets) kept in a registry under bench/.cache between runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor

from bench import limits
from bench.specs import BULK_TAG, ROOT, ImageSpec
from tools.imagebuilder import (
    BuiltImage,
    BuiltIndex,
    build_image,
    build_index,
    push_image,
    push_index,
)
from tools.testregistry import TestRegistry

CACHE = os.path.join(ROOT, "bench", ".cache")
CACHE_FORMAT = 1  # bump when what a cached set holds changes meaning


def build_and_push(
    spec: ImageSpec, registry: TestRegistry, workdir: str
) -> tuple[list[BuiltImage], BuiltIndex | None]:
    """Build the image (deterministic: same spec, same digests) and push it as REPO:1.0; a
    bulk set as REPO/app-NN:1.0, every image on the same base layer, four pushes at a time."""
    if spec.count > 1:

        def one(i_name: tuple[int, str]) -> BuiltImage:
            i, name = i_name
            # One blob directory for the set: files are named by digest, so the shared base
            # is stored once (each build replaces it atomically with the same bytes).
            image = build_image(
                workdir,
                spec.seed + i,
                spec.layers,
                compressible=spec.compressible,
                special_entries=False,
                shared_base_key=f"{spec.key}-base",
                jobs=1,
            )
            push_image(registry.url, name, BULK_TAG, image)
            return image

        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(one, enumerate(spec.names()))), None
    if spec.platforms > 1:
        platforms = [("linux", "amd64", None), ("linux", "arm64", None)][: spec.platforms]
        index = build_index(
            workdir, spec.seed, platforms, spec.layers, oci=True, special_entries=False
        )
        push_index(registry.url, spec.repo, "1.0", index)
        return index.images, index
    image = build_image(
        workdir, spec.seed, spec.layers, compressible=spec.compressible, special_entries=False
    )
    push_image(registry.url, spec.repo, "1.0", image)
    return [image], None


def blob_refs(images: list[BuiltImage], repos: list[str] | None = None) -> list[limits.BlobRef]:
    """Unique blobs of ``images`` (an index's children and a bulk set share their base
    layer); ``repos[i]``, when given, is where image i lives in the source registry."""
    seen: dict[str, limits.BlobRef] = {}
    for i, img in enumerate(images):
        for b in img.blobs:
            seen.setdefault(
                b.digest,
                limits.BlobRef(
                    b.digest, b.size, b.path, "gzip" in b.media_type, repos[i] if repos else ""
                ),
            )
    return list(seen.values())


def layer_regions(tarball: str) -> list[tuple[str, int, int]]:
    """(path, offset, length) of every layer member of a `docker save` tarball."""
    with tarfile.open(tarball) as tf:
        return [
            (tarball, m.offset_data, m.size)
            for m in tf.getmembers()
            if m.isfile()
            and (m.name.endswith("layer.tar") or m.name.startswith("blobs/"))
            and m.size > 1 << 16
        ]


def write_sync_yaml(path: str, host: str, names: list[str], cert_dir: str = "") -> None:
    """skopeo sync's own list of the set (one process, every image, one after another)."""
    with open(path, "w") as f:
        f.write(f"{host}:\n")
        f.write(f"  cert-dir: {cert_dir}\n" if cert_dir else "  tls-verify: false\n")
        f.write("  images:\n")
        for name in names:
            f.write(f"    {name}: ['{BULK_TAG}']\n")


# ------------------------------------------------------------------------------------------
# Sets kept between runs


def cache_dir(spec: ImageSpec) -> str:
    """bench/.cache/KEY-HASH: the hash covers everything that changes the pushed bytes, so
    a changed spec gets a new directory and never a stale registry. A subset shares its
    set's directory (the subset is not part of the hash)."""
    params = {
        "format": CACHE_FORMAT,
        "repo": spec.repo,
        "layers": spec.layers,
        "compressible": spec.compressible,
        "seed": spec.seed,
        "count": spec.count,
        "base_key": f"{spec.repo}-base",
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(CACHE, f"{spec.repo.replace('/', '_')}-{digest}")


def _ref_to_json(ref: limits.BlobRef, base: str) -> dict[str, object]:
    return {
        "digest": ref.digest,
        "size": ref.size,
        "path": os.path.relpath(ref.path, base),
        "gzip": ref.gzip,
        "repo": ref.repo,
    }


def open_cached(spec: ImageSpec, log: bool = True) -> tuple[TestRegistry, list[limits.BlobRef]]:
    """Start the registry of a cached set, building and pushing it first when bench/.cache
    has no complete copy (``complete.json`` is written last, so an interrupted push is
    started over, never reused). Returns the started registry (its storage is kept when it
    stops) and the set's distinct blobs, whose files stay in the cache for the limits."""
    where = cache_dir(spec)
    marker = os.path.join(where, "complete.json")
    reg_dir = os.path.join(where, "registry")
    if not os.path.exists(marker):
        shutil.rmtree(where, ignore_errors=True)
        os.makedirs(where)
        if log:
            print(
                f"   {spec.repo}: building and pushing {spec.count} images once into "
                f"{os.path.relpath(where, ROOT)}",
                flush=True,
            )
        with TestRegistry(directory=reg_dir) as reg:
            images, _ = build_and_push(spec, reg, os.path.join(where, "build"))
        refs = blob_refs(images, spec.names())
        with open(os.path.join(where, "blobs.json"), "w") as f:
            json.dump([_ref_to_json(r, where) for r in refs], f)
        with open(marker, "w") as f:
            json.dump({"spec": spec.key, "count": spec.count}, f)
    with open(os.path.join(where, "blobs.json")) as f:
        refs = [
            limits.BlobRef(
                d["digest"], d["size"], os.path.join(where, d["path"]), d["gzip"], d["repo"]
            )
            for d in json.load(f)
        ]
    return TestRegistry(directory=reg_dir).start(), refs


class Twin:
    """A TLS registry serving the same storage as ``plain`` (a symlink to its data
    directory): the WAN profile's source, without pushing every image twice. It only reads;
    distribution's storage is safe to share between two readers. ``ca_file`` and
    ``cert_dir`` (a directory holding ``ca.crt``, as skopeo's ``--src-cert-dir`` wants it)
    trust its throwaway CA."""

    def __init__(self, plain: TestRegistry, work: str) -> None:
        assert plain.dir is not None
        self.dir = os.path.join(work, f"tls-twin-{plain.port}")
        os.makedirs(self.dir)
        os.symlink(os.path.join(plain.dir, "data"), os.path.join(self.dir, "data"))
        self.registry = TestRegistry(directory=self.dir, tls=True).start()
        assert self.registry.ca_file is not None
        self.ca_file = self.registry.ca_file
        self.cert_dir = os.path.join(self.dir, "certs.d")
        os.makedirs(self.cert_dir)
        shutil.copy(self.ca_file, os.path.join(self.cert_dir, "ca.crt"))

    def stop(self) -> None:
        """Stop it and remove its files; rmtree unlinks the symlink, never what it points to."""
        self.registry.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
