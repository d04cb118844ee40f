"""`docker save` archives in the shapes real Docker versions write them, built from seeded images.

The reader of `tar://` has to cope with what Docker actually wrote, bugs included, and copied
fixtures would be neither deterministic nor small. This module builds each shape from
:mod:`tools.imagebuilder`'s images, byte for byte the same on every run:

- `legacy_members`: Docker < 25 (`<id>/layer.tar` uncompressed, `<config-hex>.json`,
  `manifest.json`, `repositories`), also what `GET /images/{name}/get` returns;
- `docker25_members`: Docker ≥ 25 with the classic image store (an OCI layout whose layers are
  the uncompressed tars, plus `manifest.json`), with switches for the bugs Docker 25.0.x
  shipped: `"manifests": null` and `"RepoTags": null` (`docker save IMAGE_ID`), an OCI
  manifest that lists fewer layers, other sizes or another order than `manifest.json`
  (25.0.0 listed only foreign layers), an `index.json` that lists fewer images;
- `containerd_members`: Docker with the containerd image store: `index.json` names an index
  holding each platform's manifest and its attestation manifest, with only the platforms
  asked for present in `blobs/`, layers compressed as pulled;
- empty layers (`make_image(..., empty=...)`): a 0-byte `layer.tar` (Bazel's rules_docker,
  some Windows images) and the 32-byte gzip stream of an empty tar that BuildKit and
  containerd write.

Media types and annotation names are spelled out here, not imported from occystrap, for the
same reason imagebuilder spells them out: a typo in the product must not be confirmed by the
test rig. Member order follows Docker's (blobs first, metadata last, as `archive.Tar` walks
the directory); every member has mtime 0, uid and gid 0.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.imagebuilder import (
    DEFAULT_PLATFORM,
    OCI_INDEX,
    OCI_MANIFEST,
    Platform,
    build_image,
    sha256_digest,
)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
IN_TOTO = "application/vnd.in-toto+json"
IMAGE_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"

#: BuildKit's and containerd's empty layer: gzip (mtime 0) of an empty tar, 1024 zero bytes.
EMPTY_GZIP = bytes(
    [
        31,
        139,
        8,
        0,
        0,
        0,
        0,
        0,
        0,
        255,
        98,
        24,
        5,
        163,
        96,
        20,
        140,
        88,
        0,
        8,
        0,
        0,
        255,
        255,
        46,
        175,
        181,
        239,
        0,
        4,
        0,
        0,
    ]
)
EMPTY_GZIP_DIGEST = "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1"
EMPTY_TAR_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
EMPTY_FILE_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

_MEDIA_TYPES = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}


@dataclass(frozen=True)
class Layer:
    """A layer blob as the archive holds it."""

    path: str
    digest: str
    size: int
    diff_id: str
    compression: str  # none, gzip, zstd

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES[self.compression]

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclass(frozen=True)
class Image:
    """One single-platform image: its config bytes, its layers in rootfs order, its tags."""

    config: bytes
    layers: list[Layer]
    tags: list[str] = field(default_factory=list)
    platform: Platform = DEFAULT_PLATFORM

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config)

    @property
    def config_hex(self) -> str:
        return self.config_digest.split(":", 1)[1]

    @property
    def diff_ids(self) -> list[str]:
        return list(json.loads(self.config)["rootfs"]["diff_ids"])

    def manifest(self, layers: list[dict[str, object]] | None = None) -> bytes:
        """The OCI manifest Docker writes (Go's compact JSON), `layers` replacing the true
        list when a test wants a manifest that disagrees."""
        return compact(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": self.config_digest,
                    "size": len(self.config),
                    "platform": platform_doc(self.platform),
                },
                "layers": [x.descriptor() for x in self.layers] if layers is None else layers,
            }
        )


def compact(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def platform_doc(platform: Platform) -> dict[str, str]:
    os_, arch, variant = platform
    return {"architecture": arch, "os": os_, **({"variant": variant} if variant else {})}


def _platform_text(platform: Platform) -> str:
    return "/".join(p for p in platform if p)


def _blob_file(workdir: Path, data: bytes) -> str:
    path = workdir / "blobs" / hashlib.sha256(data).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def empty_layer(workdir: str | os.PathLike[str], kind: str) -> Layer:
    """`file`: a 0-byte layer.tar; `gzip`: the 32-byte gzip stream of an empty tar."""
    if kind == "file":
        return Layer(
            _blob_file(Path(workdir), b""), EMPTY_FILE_DIGEST, 0, EMPTY_FILE_DIGEST, "none"
        )
    if kind == "gzip":
        return Layer(
            _blob_file(Path(workdir), EMPTY_GZIP),
            EMPTY_GZIP_DIGEST,
            len(EMPTY_GZIP),
            EMPTY_TAR_DIFF_ID,
            "gzip",
        )
    raise ValueError(f"unknown empty layer kind {kind!r}")


def make_image(
    workdir: str | os.PathLike[str],
    seed: int,
    sizes: Sequence[int],
    *,
    compression: str = "none",
    tags: Sequence[str] = ("app:1",),
    platform: Platform = DEFAULT_PLATFORM,
    empty: dict[int, str] | None = None,
    compressible: float = 0.3,
    special_entries: bool = True,
) -> Image:
    """A seeded image (imagebuilder's layers and config), its layers `compression` encoded,
    with empty layers inserted at the positions `empty` names ({position: "file"|"gzip"}):
    the config gets their diff_ids and a history entry each."""
    built = build_image(
        workdir,
        seed,
        sizes,
        oci=True,
        compression=compression,
        platform=platform,
        compressible=compressible,
        special_entries=special_entries,
    )
    layers = [Layer(b.path, b.digest, b.size, b.diff_id or "", compression) for b in built.layers]
    config = Path(built.config.path).read_bytes()
    if empty:
        doc = json.loads(config)
        history = doc["history"]
        for position in sorted(empty):
            layer = empty_layer(workdir, empty[position])
            layers.insert(position, layer)
            # history: the first entry is an empty_layer ENV, then one entry per layer
            history.insert(
                position + 1,
                {
                    "created": history[0]["created"],
                    "created_by": f"empty layer ({empty[position]})",
                },
            )
        doc["rootfs"]["diff_ids"] = [x.diff_id for x in layers]
        config = compact(doc)
    return Image(config, layers, list(tags), platform)


# --------------------------------------------------------------------------------------------
# Archive shapes: each returns the members [(name, bytes or a file path)] in Docker's order

Member = tuple[str, bytes | str]


def _legacy_id(image: Image, position: int) -> str:
    """A v1 layer id: only has to be stable and distinct per image and position."""
    return hashlib.sha256(f"{image.config_digest}:{position}".encode()).hexdigest()


def _repositories(images: Iterable[Image], top: Callable[[Image], str]) -> bytes:
    repos: dict[str, dict[str, str]] = {}
    for image in images:
        for tag in image.tags:
            name, _, version = tag.rpartition(":")
            repos.setdefault(name, {})[version] = top(image)
    return compact(repos)


def legacy_members(images: Sequence[Image]) -> list[Member]:
    """What Docker < 25 `docker save` writes (and an engine's export before 25)."""
    members: list[Member] = []
    manifest = []
    for image in images:
        ids = []
        for position, layer in enumerate(image.layers):
            layer_id = _legacy_id(image, position)
            ids.append(layer_id)
            members += [
                (f"{layer_id}/VERSION", b"1.0"),
                (
                    f"{layer_id}/json",
                    compact({"id": layer_id, **({"parent": ids[-2]} if len(ids) > 1 else {})}),
                ),
                (f"{layer_id}/layer.tar", layer.path),
            ]
        members.append((f"{image.config_hex}.json", image.config))
        manifest.append(
            {
                "Config": f"{image.config_hex}.json",
                "RepoTags": image.tags or None,
                "Layers": [f"{i}/layer.tar" for i in ids],
            }
        )
    members.append(("manifest.json", compact(manifest)))
    members.append(
        ("repositories", _repositories(images, lambda im: _legacy_id(im, len(im.layers) - 1)))
    )
    return members


def _index(descriptors: list[dict[str, object]] | None) -> bytes:
    return compact({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})


def _full_name(tag: str) -> str:
    """docker.io/library/NAME:TAG for a familiar name, as Docker annotates it."""
    # A first component with a dot or a port, or localhost, is a registry host.
    if re.match(r"^(localhost|[^/]*[.:][^/]*)/", tag):
        return tag
    return "docker.io/" + ("" if "/" in tag.rsplit(":", 1)[0] else "library/") + tag


def docker25_members(
    images: Sequence[Image],
    *,
    index_null: bool = False,
    repo_tags_null: bool = False,
    blob_manifest: Callable[[Image], list[dict[str, object]]] | None = None,
    indexed: Callable[[Image], bool] | None = None,
) -> list[Member]:
    """Docker ≥ 25, classic image store: an OCI layout (uncompressed layers, digest = diff_id)
    plus manifest.json. The Docker 25.0.x bugs, each on request:

    `index_null`: `"manifests": null` (what `docker save IMAGE_ID` or `IMAGE@DIGEST` wrote);
    `repo_tags_null`: `"RepoTags": null` in manifest.json (same cause);
    `blob_manifest(image)`: the layer list written into the OCI manifest in blobs/ (25.0.0
    wrote only the foreign layers: `lambda im: []`);
    `indexed(image)`: whether index.json lists the image (else manifest.json only).
    """
    members: list[Member] = []
    seen: set[str] = set()
    manifest = []
    descriptors = []
    for image in images:
        for layer in image.layers:
            if layer.digest not in seen:
                seen.add(layer.digest)
                members.append((f"blobs/sha256/{layer.hex}", layer.path))
        members.append((f"blobs/sha256/{image.config_hex}", image.config))
        body = image.manifest(blob_manifest(image) if blob_manifest else None)
        members.append((f"blobs/sha256/{sha256_digest(body)[7:]}", body))
        tags = [] if repo_tags_null else image.tags
        manifest.append(
            {
                "Config": f"blobs/sha256/{image.config_hex}",
                "RepoTags": tags or None,
                "Layers": [f"blobs/sha256/{x.hex}" for x in image.layers],
            }
        )
        if indexed is None or indexed(image):
            for tag in tags:
                descriptors.append(
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": sha256_digest(body),
                        "size": len(body),
                        "platform": platform_doc(image.platform),
                        "annotations": {
                            IMAGE_NAME: _full_name(tag),
                            REF_NAME: tag.rsplit(":", 1)[1],
                        },
                    }
                )
    members.append(("index.json", _index(None if index_null else descriptors)))
    members.append(("manifest.json", compact(manifest)))
    members.append(("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'))
    members.append(("repositories", _repositories(images, lambda im: im.layers[-1].hex)))
    return members


def attestation(image: Image, manifest_digest: str) -> tuple[bytes, list[Member]]:
    """BuildKit's attestation manifest for `image`: an in-toto statement as its one layer."""
    statement = compact(
        {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://spdx.dev/Document",
            "subject": [{"name": "app", "digest": {"sha256": manifest_digest[7:]}}],
            "predicate": {"spdxVersion": "SPDX-2.3"},
        }
    )
    config = compact(
        {
            "architecture": "unknown",
            "os": "unknown",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(statement)]},
        }
    )
    body = compact(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": IN_TOTO,
                    "digest": sha256_digest(statement),
                    "size": len(statement),
                    "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"},
                }
            ],
        }
    )
    blobs = [(f"blobs/sha256/{sha256_digest(x)[7:]}", x) for x in (statement, config, body)]
    return body, blobs


def containerd_members(
    images: Sequence[Image],
    tag: str,
    *,
    present: Callable[[Image], bool] | None = None,
    attestations: bool = True,
) -> list[Member]:
    """Docker with the containerd image store: index.json names one OCI index (all of
    `images`, one per platform, each followed by its attestation manifest); blobs/ holds
    the index and, for the platforms `present` says were saved, their manifests, configs,
    layers (as pulled, usually gzip) and attestations. manifest.json lists the present
    platforms' images."""
    members: list[Member] = []
    seen: set[str] = set()
    descriptors: list[dict[str, object]] = []
    manifest = []
    for image in images:
        body = image.manifest()
        digest = sha256_digest(body)
        descriptors.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(body),
                "platform": platform_doc(image.platform),
            }
        )
        saved = present is None or present(image)
        if attestations:
            att, att_blobs = attestation(image, digest)
            descriptors.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sha256_digest(att),
                    "size": len(att),
                    "platform": {"architecture": "unknown", "os": "unknown"},
                    "annotations": {
                        REFERENCE_DIGEST: digest,
                        REFERENCE_TYPE: "attestation-manifest",
                    },
                }
            )
            if saved:
                members += att_blobs
        if not saved:
            continue
        for layer in image.layers:
            if layer.digest not in seen:
                seen.add(layer.digest)
                members.append((f"blobs/sha256/{layer.hex}", layer.path))
        members += [
            (f"blobs/sha256/{image.config_hex}", image.config),
            (f"blobs/sha256/{digest[7:]}", body),
        ]
        manifest.append(
            {
                "Config": f"blobs/sha256/{image.config_hex}",
                "RepoTags": [tag],
                "Layers": [f"blobs/sha256/{x.hex}" for x in image.layers],
            }
        )
    index = _index(descriptors)
    members.append((f"blobs/sha256/{sha256_digest(index)[7:]}", index))
    members.append(
        (
            "index.json",
            _index(
                [
                    {
                        "mediaType": OCI_INDEX,
                        "digest": sha256_digest(index),
                        "size": len(index),
                        "annotations": {
                            IMAGE_NAME: _full_name(tag),
                            REF_NAME: tag.rsplit(":", 1)[1],
                        },
                    }
                ]
            ),
        )
    )
    members.append(("manifest.json", compact(manifest)))
    members.append(("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'))
    return members


def index_digest(members: Sequence[Member]) -> str:
    """The digest index.json names first (a containerd-store archive's index)."""
    for name, data in members:
        if name == "index.json":
            assert isinstance(data, bytes)
            return str(json.loads(data)["manifests"][0]["digest"])
    raise ValueError("no index.json")


# --------------------------------------------------------------------------------------------
# Writing


def _info(name: str, kind: bytes, size: int = 0, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, 0
    info.uid = info.gid = 0
    return info


def write_archive(path: str | os.PathLike[str], members: Sequence[Member]) -> str:
    """Write `members` as a tar (each parent directory first, as Docker's archive has them);
    returns the path. Same members, same bytes."""
    dirs: set[str] = set()
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            parent = os.path.dirname(name)
            chain = []
            while parent and parent not in dirs:
                chain.append(parent)
                parent = os.path.dirname(parent)
            for d in reversed(chain):
                dirs.add(d)
                tar.addfile(_info(d + "/", tarfile.DIRTYPE, mode=0o755))
            if isinstance(data, bytes):
                tar.addfile(_info(name, tarfile.REGTYPE, len(data)), io.BytesIO(data))
            else:
                with open(data, "rb") as f:
                    tar.addfile(_info(name, tarfile.REGTYPE, os.path.getsize(data)), f)
    return str(path)


def platform_name(image: Image) -> str:
    return _platform_text(image.platform)
