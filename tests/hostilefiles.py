"""Hand-made images whose layers hold what a hostile publisher would put there: bytes that
are not what their media type says, a tar of a setuid binary, sizes that do not fit 64 bits.
Digests are always right (so every check before the hostile part passes); what is wrong is
the content. Images go to the real test registry (`push_image`) or into an OCI layout on
disk (`write_layout`)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from tools.imagebuilder import Blob, BuiltImage

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(*members: tuple[str, int, bytes | None]) -> bytes:
    """A tar of (name, mode, data) members; data None makes a directory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, mode, data in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 0
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def image(
    work: Path,
    layers: list[tuple[bytes, str, bytes]],
    sizes: list[int] | None = None,
    config: bytes | None = None,
) -> BuiltImage:
    """An image of `layers`: (blob bytes, media type, uncompressed bytes for the diff_id).
    `sizes` overrides the sizes the manifest states (a lie about a blob's length), `config`
    the image config's bytes."""
    work.mkdir(parents=True, exist_ok=True)
    blobs = []
    for data, media_type, plain in layers:
        path = work / digest(data)[7:]
        path.write_bytes(data)
        blobs.append(Blob(digest(data), len(data), str(path), media_type, digest(plain)))
    if config is None:
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in blobs]},
            }
        ).encode()
    (work / "config.json").write_bytes(config)
    config_blob = Blob(digest(config), len(config), str(work / "config.json"), OCI_CONFIG)
    descriptors = [b.descriptor() for b in blobs]
    for d, size in zip(descriptors, sizes or [], strict=False):
        d["size"] = size
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_blob.descriptor(),
            "layers": descriptors,
        }
    ).encode()
    return BuiltImage(manifest, OCI_MANIFEST, digest(manifest), config_blob, blobs)


def write_layout(root: Path, built: BuiltImage, ref: str = "1.0") -> str:
    """`built` as an OCI layout at `root`; returns the oci:// URI."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in built.blobs:
        target = blobs / blob.digest[7:]
        if not target.exists():
            target.write_bytes(Path(blob.path).read_bytes())
    (blobs / built.manifest_digest[7:]).write_bytes(built.manifest)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": built.manifest_digest,
                        "size": len(built.manifest),
                        "annotations": {"org.opencontainers.image.ref.name": ref},
                    }
                ],
            }
        )
    )
    return f"oci://{root}:{ref}"
