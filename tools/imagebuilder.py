"""Deterministic, seeded container images built from scratch and pushed over the real HTTP API.

Tests and benchmarks need images whose every byte is known in advance: the same seed must give
the same digests on every machine, so a test can assert byte-exact copies and a benchmark can be
repeated. Pulling images from the internet would give neither, and would break the rule that
tests only talk to 127.0.0.1.

The layers are real tar files with the awkward entries real images have (symlinks, hard links,
long and non-ASCII names, whiteouts, opaque directories), so format writers and filters meet
them in tests rather than in production. Everything streams through files in a work directory:
building or pushing a multi-GiB benchmark image never holds a whole layer in memory.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
import zstandard

# Media types, spelled out here on purpose: the test rig must not share constants with the code
# it checks, or a typo in occystrap.mediatypes would be confirmed rather than caught.
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

#: Fixed timestamp for tar entries, the config and history, so digests never depend on the clock.
EPOCH = 1704067200  # 2024-01-01T00:00:00Z
# security.capability of a file with cap_setuid,cap_net_bind_service+ep (VFS_CAP_REVISION_2):
# binary, not UTF-8, as real capability values are
FILE_CAPABILITY = bytes.fromhex("0100000280040000000000000000000000000000")
CREATED = "2024-01-01T00:00:00Z"

Platform = tuple[str, str, str | None]
DEFAULT_PLATFORM: Platform = ("linux", "amd64", None)
DEFAULT_PLATFORMS: tuple[Platform, ...] = (
    ("linux", "amd64", None),
    ("linux", "arm64", "v8"),
    ("linux", "arm", "v7"),
)

_CHUNK = 1 << 20
_TEXT = b"occystrap imagebuilder: compressible filler text 0123456789\n"


@dataclass(frozen=True)
class Blob:
    """A blob on disk in the work directory, with the descriptor fields a manifest needs."""

    digest: str
    size: int
    path: str
    media_type: str
    diff_id: str | None = None  # sha256 of the uncompressed tar, for layers only

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


@dataclass(frozen=True)
class BuiltImage:
    """One single-platform image: the exact manifest bytes as pushed, and its blobs."""

    manifest: bytes
    manifest_media_type: str
    manifest_digest: str
    config: Blob
    layers: list[Blob]
    platform: Platform = DEFAULT_PLATFORM

    @property
    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers]


@dataclass(frozen=True)
class BuiltIndex:
    """An OCI index or Docker manifest list over several :class:`BuiltImage` children."""

    manifest: bytes
    media_type: str
    digest: str
    images: list[BuiltImage]


Built = BuiltImage | BuiltIndex


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_size(text: str) -> int:
    """Parse ``10M``, ``512K``, ``2G`` or plain bytes (binary multiples, as ``dd`` does)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(float(match.group(1)) * scale[match.group(2).upper()])


def parse_platform(text: str) -> Platform:
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"not a platform (os/arch[/variant]): {text!r}")
    return (parts[0], parts[1], parts[2] if len(parts) == 3 else None)


# --------------------------------------------------------------------------------------------
# Layer tar generation


class _HashingWriter(io.RawIOBase):
    """Hash and count bytes on their way to ``sink``, so a single pass yields digest and size."""

    def __init__(self, sink: BinaryIO | io.RawIOBase | gzip.GzipFile | None) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.size += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


class _RandomReader(io.RawIOBase):
    """File content made on demand, so a 1 GiB file is never in memory at once.

    Random bytes defeat compression (real layers are mostly compressed binaries); the
    ``compressible`` fraction of each chunk is repetitive text so that compression work and
    ratios can be exercised too.
    """

    def __init__(self, rng: random.Random, size: int, compressible: float) -> None:
        self.rng = rng
        self.remaining = size
        self.compressible = compressible

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.remaining
        n = min(n, self.remaining, _CHUNK)
        if n <= 0:
            return b""
        self.remaining -= n
        easy = int(n * self.compressible)
        filler = (_TEXT * (easy // len(_TEXT) + 1))[:easy]
        return filler + self.rng.randbytes(n - easy)


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    cuts = sorted(rng.randrange(total + 1) for _ in range(parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def _info(
    name: str, kind: bytes, *, mode: int = 0o644, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = link
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _write_layer_tar(
    tar: tarfile.TarFile,
    rng: random.Random,
    index: int,
    size: int,
    compressible: float,
    special_entries: bool,
) -> None:
    """Write one layer's entries; ``size`` is the total of regular file contents."""

    def directory(name: str) -> None:
        tar.addfile(_info(name, tarfile.DIRTYPE, mode=0o755))

    def regular(
        name: str, length: int, mode: int = 0o644, pax: dict[str, str] | None = None
    ) -> None:
        info = _info(name, tarfile.REGTYPE, mode=mode, size=length)
        info.pax_headers = pax or {}
        tar.addfile(info, _RandomReader(rng, length, compressible))

    def small(name: str, text: bytes) -> None:
        tar.addfile(_info(name, tarfile.REGTYPE, size=len(text)), io.BytesIO(text))

    nfiles = max(1, min(16, size // (256 << 10)))
    sizes = _split(rng, size, nfiles)
    if index == 0:
        directory("etc")
        small("etc/os-release", b"NAME=occystrap-test\nID=occystrap\n")
        directory("data")
        if special_entries:
            small("etc/motd", b"deleted by a whiteout in layer 1\n")
            directory("usr")
            directory("usr/bin")
            # What a real base image carries and filters must keep: a file capability
            # (binary xattr value), an SELinux label, and access/change times.
            regular(
                "usr/bin/busybox",
                sizes.pop(0) if len(sizes) > 1 else 4096,
                mode=0o755,
                pax={
                    "SCHILY.xattr.security.capability": FILE_CAPABILITY.decode(
                        "utf-8", "surrogateescape"
                    ),
                    "SCHILY.xattr.security.selinux": "system_u:object_r:bin_t:s0",
                    "atime": f"{EPOCH + 3600}.25",
                    "ctime": f"{EPOCH + 7200}.5",
                },
            )
            tar.addfile(_info("usr/bin/sh", tarfile.SYMTYPE, mode=0o777, link="busybox"))
            tar.addfile(_info("usr/bin/ls", tarfile.LNKTYPE, mode=0o755, link="usr/bin/busybox"))
            directory("var")
            directory("var/cache")
            small("var/cache/old.txt", b"hidden by an opaque whiteout in layer 1\n")
            directory("data/" + "deeply-nested-directory-name/" * 4)
            small(
                "data/" + "deeply-nested-directory-name/" * 4 + "long-name-" + "x" * 60 + ".txt",
                b"a path longer than 100 bytes needs a PAX header\n",
            )
            small("data/ünïcödé-名前.txt", b"non-ASCII member name\n")
        for n, length in enumerate(sizes):
            regular(f"data/base-{n:02d}.bin", length)
        return

    directory("data")
    directory(f"data/layer-{index:02d}")
    if special_entries and index == 1:
        directory("etc")
        tar.addfile(_info("etc/.wh.motd", tarfile.REGTYPE, mode=0o600))
        directory("var")
        directory("var/cache")
        tar.addfile(_info("var/cache/.wh..wh..opq", tarfile.REGTYPE, mode=0o600))
        small("var/cache/new.txt", b"written after an opaque whiteout\n")
    if special_entries:
        tar.addfile(
            _info(
                f"data/layer-{index:02d}/link", tarfile.SYMTYPE, mode=0o777, link="../base-00.bin"
            )
        )
    for n, length in enumerate(sizes):
        regular(f"data/layer-{index:02d}/file-{n:02d}.bin", length)


def build_layer(
    workdir: str | os.PathLike[str],
    rng_key: str,
    index: int,
    size: int,
    *,
    compression: str = "gzip",
    media_type: str = DOCKER_LAYER_GZIP,
    compressible: float = 0.0,
    special_entries: bool = True,
    gzip_level: int = 1,
) -> Blob:
    """Stream one layer: tar → (hash diff_id) → compressor → (hash digest) → file.

    One pass and constant memory whatever the size. gzip level 1 keeps building fast and
    ``mtime=0`` and an empty file name keep the gzip header deterministic.
    """
    blobdir = Path(workdir) / "blobs"
    blobdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"occystrap-imagebuilder:{rng_key}:{index}")
    fd, tmp = tempfile.mkstemp(dir=blobdir, prefix=".layer-")
    try:
        with os.fdopen(fd, "wb", buffering=_CHUNK) as out:
            outer = _HashingWriter(out)
            compressor: BinaryIO
            if compression == "gzip":
                compressor = gzip.GzipFile(  # type: ignore[assignment]
                    filename="", mode="wb", fileobj=outer, compresslevel=gzip_level, mtime=0
                )
            elif compression == "zstd":
                compressor = zstandard.ZstdCompressor(level=3).stream_writer(  # type: ignore[assignment]
                    outer, closefd=False
                )
            elif compression == "none":
                compressor = outer  # type: ignore[assignment]
            else:
                raise ValueError(f"unknown compression {compression!r}")
            inner = _HashingWriter(compressor)
            with tarfile.open(
                fileobj=inner,
                mode="w",
                format=tarfile.PAX_FORMAT,
                encoding="utf-8",
                copybufsize=_CHUNK,
            ) as tar:
                _write_layer_tar(tar, rng, index, size, compressible, special_entries)
            if compressor is not outer:
                compressor.close()
        path = blobdir / outer.sha.hexdigest()
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return Blob(outer.digest, outer.size, str(path), media_type, inner.digest)


def _write_json_blob(workdir: str | os.PathLike[str], data: bytes, media_type: str) -> Blob:
    blobdir = Path(workdir) / "blobs"
    blobdir.mkdir(parents=True, exist_ok=True)
    digest = sha256_digest(data)
    path = blobdir / digest.split(":", 1)[1]
    path.write_bytes(data)
    return Blob(digest, len(data), str(path), media_type)


def _encode(doc: dict[str, object]) -> bytes:
    # Indented on purpose: a copier that re-serialises a manifest instead of keeping its bytes
    # changes the digest, and byte-exact tests then catch it.
    return json.dumps(doc, indent=3, ensure_ascii=False).encode()


def _platform_doc(platform: Platform) -> dict[str, str]:
    os_, arch, variant = platform
    doc = {"architecture": arch, "os": os_}
    if variant:
        doc["variant"] = variant
    return doc


def build_image(
    workdir: str | os.PathLike[str],
    seed: int,
    layer_sizes: Sequence[int],
    *,
    oci: bool = False,
    compression: str = "gzip",
    platform: Platform = DEFAULT_PLATFORM,
    special_entries: bool = True,
    compressible: float = 0.0,
    gzip_level: int = 1,
    jobs: int | None = None,
    shared_base_key: str | None = None,
) -> BuiltImage:
    """Build a single-platform image from ``seed``; same arguments, same digests.

    ``layer_sizes`` are the bytes of regular-file content per layer (the tar adds headers).
    Layers are built in threads: zlib, zstd and sha256 release the GIL, which matters for the
    multi-GiB benchmark images. ``shared_base_key`` makes layer 0 independent of the platform, so
    the children of an index share a blob as real multi-platform images often do.
    """
    if compression == "zstd" and not oci:
        raise ValueError("zstd layers need OCI media types (Docker schema 2 has none)")
    if compression == "zstd":
        layer_type = OCI_LAYER_ZSTD
    else:
        layer_type = OCI_LAYER_GZIP if oci else DOCKER_LAYER_GZIP
    key = f"{seed}:{'/'.join(p or '' for p in platform)}"

    def one(i: int) -> Blob:
        rng_key = shared_base_key if (i == 0 and shared_base_key) else key
        return build_layer(
            workdir,
            rng_key,
            i,
            layer_sizes[i],
            compression=compression,
            media_type=layer_type,
            compressible=compressible,
            special_entries=special_entries,
            gzip_level=gzip_level,
        )

    workers = jobs or min(len(layer_sizes), os.cpu_count() or 1) or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        layers = list(pool.map(one, range(len(layer_sizes))))

    history: list[dict[str, object]] = [
        {
            "created": CREATED,
            "created_by": "/bin/sh -c #(nop) ENV OCCYSTRAP_TEST=1",
            "empty_layer": True,
        }
    ]
    history += [
        {"created": CREATED, "created_by": f"imagebuilder seed={seed} layer={i}"}
        for i in range(len(layers))
    ]
    config_doc: dict[str, object] = {
        **_platform_doc(platform),
        "created": CREATED,
        "config": {
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "OCCYSTRAP_TEST=1",
            ],
            "Entrypoint": ["/usr/bin/sh"],
            "Cmd": ["-c", "echo hello"],
            "WorkingDir": "/",
            "Labels": {
                "org.opencontainers.image.title": "occystrap-test",
                "occystrap.test.seed": str(seed),
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": history,
    }
    config = _write_json_blob(
        workdir,
        json.dumps(config_doc, separators=(",", ":")).encode(),
        OCI_CONFIG if oci else DOCKER_CONFIG,
    )
    manifest_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = _encode(
        {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
    )
    return BuiltImage(manifest, manifest_type, sha256_digest(manifest), config, layers, platform)


def build_index(
    workdir: str | os.PathLike[str],
    seed: int,
    platforms: Sequence[Platform],
    layer_sizes: Sequence[int],
    *,
    oci: bool = True,
    compression: str = "gzip",
    special_entries: bool = True,
    shared_base: bool = True,
) -> BuiltIndex:
    """Build an OCI index (``oci=True``) or Docker manifest list over one image per platform."""
    images = [
        build_image(
            workdir,
            seed,
            layer_sizes,
            oci=oci,
            compression=compression,
            platform=platform,
            special_entries=special_entries,
            shared_base_key=f"{seed}:shared" if shared_base else None,
        )
        for platform in platforms
    ]
    media_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
    manifest = _encode(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [
                {
                    "mediaType": img.manifest_media_type,
                    "size": len(img.manifest),
                    "digest": img.manifest_digest,
                    "platform": _platform_doc(img.platform),
                }
                for img in images
            ],
        }
    )
    return BuiltIndex(manifest, media_type, sha256_digest(manifest), images)


# --------------------------------------------------------------------------------------------
# Pushing over the registry HTTP API


def _file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _client(registry_url: str, auth: tuple[str, str] | None) -> httpx.Client:
    # trust_env=False: a proxy from the environment must never see loopback test traffic.
    return httpx.Client(base_url=registry_url, auth=auth, timeout=120.0, trust_env=False)


def _check(response: httpx.Response, *expected: int) -> httpx.Response:
    if response.status_code not in expected:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: "
            f"{response.text[:500]}"
        )
    return response


def push_blob(client: httpx.Client, name: str, blob: Blob) -> bool:
    """HEAD, then POST + monolithic PUT streamed from the file. Returns False if it existed."""
    if client.head(f"/v2/{name}/blobs/{blob.digest}").status_code == 200:
        return False
    start = _check(client.post(f"/v2/{name}/blobs/uploads/"), 202)
    location = httpx.URL(str(client.base_url)).join(start.headers["Location"])
    location = location.copy_merge_params({"digest": blob.digest})
    _check(
        client.put(
            location,
            content=_file_chunks(blob.path),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
        ),
        201,
    )
    return True


def push_manifest(
    client: httpx.Client, name: str, reference: str, data: bytes, media_type: str
) -> None:
    response = _check(
        client.put(
            f"/v2/{name}/manifests/{reference}", content=data, headers={"Content-Type": media_type}
        ),
        201,
    )
    expected = sha256_digest(data)
    got = response.headers.get("Docker-Content-Digest")
    if got and got != expected:
        raise RuntimeError(f"registry stored {name} as {got}, expected {expected}")


def _push_image(client: httpx.Client, name: str, tag: str | None, image: BuiltImage) -> None:
    for blob in image.layers + [image.config]:
        push_blob(client, name, blob)
    push_manifest(client, name, image.manifest_digest, image.manifest, image.manifest_media_type)
    if tag:
        push_manifest(client, name, tag, image.manifest, image.manifest_media_type)


def push_image(
    registry_url: str,
    name: str,
    tag: str | None,
    image: BuiltImage,
    *,
    auth: tuple[str, str] | None = None,
) -> None:
    """Push blobs, then the manifest by digest and (if given) by tag."""
    with _client(registry_url, auth) as client:
        _push_image(client, name, tag, image)


def push_index(
    registry_url: str,
    name: str,
    tag: str | None,
    index: BuiltIndex,
    *,
    auth: tuple[str, str] | None = None,
) -> None:
    """Push each child by digest (the registry insists they exist first), then the index."""
    with _client(registry_url, auth) as client:
        for image in index.images:
            _push_image(client, name, None, image)
        push_manifest(client, name, index.digest, index.manifest, index.media_type)
        if tag:
            push_manifest(client, name, tag, index.manifest, index.media_type)


# --------------------------------------------------------------------------------------------
# The sample set shared by tests and the demo


@dataclass(frozen=True)
class Sample:
    """One pushed sample: where it lives and exactly what was pushed."""

    name: str
    tag: str
    host: str  # 127.0.0.1:PORT
    built: Built

    @property
    def digest(self) -> str:
        b = self.built
        return b.manifest_digest if isinstance(b, BuiltImage) else b.digest

    @property
    def media_type(self) -> str:
        b = self.built
        return b.manifest_media_type if isinstance(b, BuiltImage) else b.media_type

    @property
    def manifest(self) -> bytes:
        return self.built.manifest

    @property
    def ref(self) -> str:
        """``127.0.0.1:PORT/name:tag``, for skopeo's ``docker://`` and similar."""
        return f"{self.host}/{self.name}:{self.tag}"

    @property
    def uri(self) -> str:
        """``registry://127.0.0.1:PORT/name:tag``, for occystrap."""
        return f"registry://{self.ref}"


#: key → (name, tag, kind, seed, layer sizes). Small so the whole set builds and pushes in ~1 s.
SAMPLES: dict[str, tuple[str, str, str, int, tuple[int, ...]]] = {
    "docker": ("library/app", "1.0", "docker", 1, (2 << 20, 512 << 10, 128 << 10)),
    "oci": ("library/oci-app", "1.0", "oci", 2, (1 << 20, 256 << 10)),
    "zstd": ("library/zstd-app", "1.0", "zstd", 3, (1 << 20, 256 << 10)),
    "index": ("library/multi", "1.0", "oci-index", 4, (512 << 10, 128 << 10)),
    "manifest_list": ("library/multi-docker", "1.0", "docker-list", 5, (512 << 10, 128 << 10)),
}


def build_samples(workdir: str | os.PathLike[str]) -> dict[str, tuple[str, str, Built]]:
    """Build (but do not push) the sample set: key → (name, tag, built)."""
    out: dict[str, tuple[str, str, Built]] = {}
    for key, (name, tag, kind, seed, sizes) in SAMPLES.items():
        built: Built
        if kind == "docker":
            built = build_image(workdir, seed, sizes, compressible=0.3)
        elif kind == "oci":
            built = build_image(workdir, seed, sizes, oci=True, compressible=0.3)
        elif kind == "zstd":
            built = build_image(
                workdir, seed, sizes, oci=True, compression="zstd", compressible=0.3
            )
        elif kind == "oci-index":
            built = build_index(workdir, seed, DEFAULT_PLATFORMS, sizes, oci=True)
        else:
            built = build_index(workdir, seed, DEFAULT_PLATFORMS[:2], sizes, oci=False)
        out[key] = (name, tag, built)
    return out


def push_samples(
    registry_url: str,
    workdir: str | os.PathLike[str],
    *,
    auth: tuple[str, str] | None = None,
) -> dict[str, Sample]:
    """Build and push the sample set; the demo and the ``sample_images`` fixture both use it."""
    host = httpx.URL(registry_url).netloc.decode()
    samples: dict[str, Sample] = {}
    for key, (name, tag, built) in build_samples(workdir).items():
        if isinstance(built, BuiltImage):
            push_image(registry_url, name, tag, built, auth=auth)
        else:
            push_index(registry_url, name, tag, built, auth=auth)
        samples[key] = Sample(name, tag, host, built)
    return samples


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.imagebuilder",
        description="Build deterministic test images and push them to a (loopback) registry.",
    )
    parser.add_argument("--registry", required=True, help="e.g. http://127.0.0.1:5000")
    parser.add_argument("--name", default=None, help="repository (default library/app)")
    parser.add_argument("--tag", default=None, help="tag (default 1.0; 'latest' for --big)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--layers", default="10M,5M,1M", help="comma-separated layer sizes")
    parser.add_argument("--oci", action="store_true", help="OCI media types (default Docker v2)")
    parser.add_argument("--zstd", action="store_true", help="zstd layers (implies --oci)")
    parser.add_argument(
        "--index",
        action="store_true",
        help="multi-platform: OCI index with --oci, else Docker manifest list",
    )
    parser.add_argument(
        "--platform", action="append", default=None, help="os/arch[/variant]; repeat for --index"
    )
    parser.add_argument(
        "--compressible",
        type=float,
        default=0.0,
        help="fraction of file content that compresses well (0..1)",
    )
    parser.add_argument("--gzip-level", type=int, default=1)
    parser.add_argument(
        "--no-special", action="store_true", help="only directories and regular files"
    )
    parser.add_argument("--sample", action="store_true", help="push the demo sample set")
    parser.add_argument(
        "--big",
        default=None,
        metavar="SIZE",
        help="10 incompressible layers summing to SIZE (e.g. 2G), for benchmarks",
    )
    parser.add_argument("--workdir", default=None, help="where blobs are built (kept if given)")
    args = parser.parse_args(argv)

    workdir = args.workdir or tempfile.mkdtemp(prefix="occystrap-images-")
    try:
        if args.sample:
            for key, sample in push_samples(args.registry, workdir).items():
                print(f"{key:14} {sample.ref}  {sample.digest}  {sample.media_type}")
            return 0
        if args.big:
            total = parse_size(args.big)
            sizes = [total // 10] * 10
            sizes[-1] += total - sum(sizes)
            name, tag, compressible = args.name or "bench/big", args.tag or "latest", 0.0
        else:
            sizes = [parse_size(s) for s in args.layers.split(",") if s.strip()]
            name, tag = args.name or "library/app", args.tag or "1.0"
            compressible = args.compressible
        oci = args.oci or args.zstd
        compression = "zstd" if args.zstd else "gzip"
        platforms = [parse_platform(p) for p in args.platform or []]
        if args.index:
            index = build_index(
                workdir,
                args.seed,
                platforms or DEFAULT_PLATFORMS,
                sizes,
                oci=oci,
                compression=compression,
                special_entries=not args.no_special,
            )
            push_index(args.registry, name, tag, index)
            digest, media_type = index.digest, index.media_type
        else:
            image = build_image(
                workdir,
                args.seed,
                sizes,
                oci=oci,
                compression=compression,
                platform=platforms[0] if platforms else DEFAULT_PLATFORM,
                special_entries=not args.no_special,
                compressible=compressible,
                gzip_level=args.gzip_level,
            )
            push_image(args.registry, name, tag, image)
            digest, media_type = image.manifest_digest, image.manifest_media_type
        host = httpx.URL(args.registry).netloc.decode()
        print(f"{host}/{name}:{tag}  {digest}  {media_type}")
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
