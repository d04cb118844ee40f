"""`occystrap check`: is this image sound?

Metadata checks read only the manifest and config: the schema, layer count against
`rootfs.diff_ids`, history against the layers. The full check then streams every layer once
(never whole in memory): the compressed bytes against the blob digest, the decompressed bytes
against the diff_id, the tar stream parsed member by member, and the whiteouts in it.
Every problem is a Finding with a severity; any error makes the exit code 1.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from occystrap import mediatypes
from occystrap.commands.images import (
    Image,
    LayerFile,
    images_of,
    layer_file,
    opened,
    parse_config,
    scratch,
)
from occystrap.config import Config
from occystrap.errors import OccystrapError
from occystrap.layers import codec
from occystrap.layers.tarread import ChunkReader, HashingReader, members, normalize, open_stream
from occystrap.mediatypes import Descriptor
from occystrap.reference import Location
from occystrap.sources import serves

ERROR, WARNING, INFO = "error", "warning", "info"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass
class Finding:
    severity: str
    check: str
    message: str
    image: str = ""
    layer: str | None = None  # the layer's digest, when the finding is about one

    def text(self) -> str:
        where = f"{self.image}: " if self.image else ""
        if self.layer:
            where += f"layer {self.layer}: "
        return f"{self.severity}: {where}{self.message}"


# -- metadata ----------------------------------------------------------------------------------


def check_metadata(config_doc: dict[str, Any], layers: list[Descriptor]) -> list[Finding]:
    """Checks on the config against the manifest's layers (schemaVersion and media types are
    enforced when the manifest is parsed)."""
    found: list[Finding] = []
    rootfs = config_doc.get("rootfs")
    if not isinstance(rootfs, dict):
        return [Finding(ERROR, "rootfs", "image config has no rootfs")]
    if rootfs.get("type") != "layers":
        found.append(
            Finding(WARNING, "rootfs", f"rootfs.type is {rootfs.get('type')!r}, expected 'layers'")
        )
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        found.append(Finding(ERROR, "rootfs", "image config has no rootfs.diff_ids list"))
    elif len(diff_ids) != len(layers):
        found.append(
            Finding(
                ERROR,
                "layer-count",
                f"manifest has {len(layers)} layers but the config lists {len(diff_ids)} diff_ids",
            )
        )
    history = config_doc.get("history")
    if history is None:
        found.append(Finding(INFO, "history", "image config has no history"))
    elif not isinstance(history, list):
        found.append(Finding(WARNING, "history", "history is not a list"))
    else:
        non_empty = sum(1 for h in history if not (isinstance(h, dict) and h.get("empty_layer")))
        if non_empty != len(layers):
            found.append(
                Finding(
                    WARNING,
                    "history",
                    f"history has {non_empty} non-empty entries for {len(layers)} layers",
                )
            )
    for key in ("os", "architecture"):
        if not config_doc.get(key):
            found.append(Finding(WARNING, "platform", f"image config has no {key!r}"))
    return found


# -- layer contents ----------------------------------------------------------------------------


class WhiteoutChecker:
    """Whiteout sanity within one layer: `.wh.NAME` must name something, `.wh..wh..opq` is
    only a (regular file) marker inside a directory, other `.wh..wh.` names are AUFS
    internals, and a whiteout may not hide a path the same layer adds."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.hidden: dict[str, str] = {}  # hidden path -> the whiteout entry
        self.findings: list[Finding] = []
        self.whiteouts = 0
        self.opaques = 0

    def add(self, name: str, member: tarfile.TarInfo) -> None:
        self.names.add(name)
        base = posixpath.basename(name)
        if not base.startswith(WHITEOUT):
            return
        parent = posixpath.dirname(name)
        if base == OPAQUE:
            self.opaques += 1
            if not member.isfile():
                self.findings.append(
                    Finding(WARNING, "whiteout", f"{name}: opaque marker is not a regular file")
                )
            return
        if base.startswith(WHITEOUT + WHITEOUT):
            self.findings.append(
                Finding(
                    ERROR,
                    "whiteout",
                    f"{name}: unknown whiteout metadata (only {OPAQUE} is "
                    "allowed, as a directory marker)",
                )
            )
            return
        self.whiteouts += 1
        target = base[len(WHITEOUT) :]
        if not target or target in (".", ".."):
            self.findings.append(Finding(ERROR, "whiteout", f"{name}: whiteout names nothing"))
            return
        if member.isdir():
            self.findings.append(Finding(WARNING, "whiteout", f"{name}: whiteout is a directory"))
        self.hidden[posixpath.join(parent, target)] = name

    def finish(self) -> list[Finding]:
        for path, whiteout in sorted(self.hidden.items()):
            if path in self.names:
                self.findings.append(
                    Finding(
                        WARNING,
                        "whiteout",
                        f"{whiteout} hides {path}, which the same layer "
                        "adds (only an opaque whiteout may)",
                    )
                )
        return self.findings


def check_path(name: str, raw: str) -> Finding | None:
    if ".." in raw.split("/"):
        return Finding(ERROR, "path", f"{raw}: path leaves the root ('..')")
    if raw.startswith("/"):
        return Finding(WARNING, "path", f"{raw}: absolute path in a layer")
    return None


def check_layer_stream(
    f: Any, layer: Descriptor, diff_id: str | None, blob_verified: bool
) -> list[Finding]:
    """Stream one layer file: blob digest (unless already verified), diff_id, tar, whiteouts."""
    found: list[Finding] = []
    raw = HashingReader(f)
    compression = mediatypes.compression_of(layer.media_type)
    plain = ChunkReader(codec.decompressed_chunks(raw, compression))  # type: ignore[arg-type]
    whiteouts = WhiteoutChecker()
    entries = 0
    decompressed = True
    try:
        with open_stream(plain) as tar:
            for member in members(tar):
                entries += 1
                name = normalize(member.name)
                bad = check_path(name, member.name)
                if bad:
                    found.append(bad)
                if name:
                    whiteouts.add(name, member)
    except Exception as exc:  # noqa: BLE001 - tarfile, zlib and zstd each raise their own
        found.append(
            Finding(ERROR, "tar", f"not a valid tar stream after {entries} entries: {exc}")
        )
    try:
        plain.drain()  # the end-of-archive padding counts for the diff_id
    except Exception as exc:  # noqa: BLE001
        decompressed = False
        found.append(Finding(ERROR, "compression", f"cannot decompress as {compression}: {exc}"))
    raw.drain()
    if not blob_verified:
        if raw.digest != layer.digest:
            found.append(
                Finding(ERROR, "digest", f"blob bytes hash to {raw.digest}, not {layer.digest}")
            )
        if raw.count != layer.size:
            found.append(
                Finding(ERROR, "size", f"blob is {raw.count} bytes, the manifest says {layer.size}")
            )
    if diff_id is not None and decompressed:
        if plain.digest != diff_id:
            found.append(
                Finding(
                    ERROR,
                    "diff_id",
                    f"decompressed layer hashes to {plain.digest}, the config's "
                    f"diff_id is {diff_id}",
                )
            )
    found.extend(whiteouts.finish())
    found.append(
        Finding(
            INFO,
            "contents",
            f"{entries} entries, {whiteouts.whiteouts} whiteouts, "
            f"{whiteouts.opaques} opaque markers, {plain.count} bytes "
            "uncompressed",
        )
    )
    return found


# -- driver ------------------------------------------------------------------------------------


def check_artifact(image: Image, kind: str, fast: bool, tmpdir: str) -> list[Finding]:
    """An artifact has no root filesystem: its blobs are checked against their digests
    (unless --fast), and nothing is decompressed or parsed."""
    manifest = image.manifest
    found = [
        Finding(
            INFO,
            "artifact",
            f"an OCI artifact ({kind}), not a container image: "
            "blobs are checked against their digests; no "
            "diff_id, tar or whiteout checks apply",
        )
    ]
    if fast:
        return found
    for blob in (manifest.config, *manifest.layers):
        with _blob_file(image, blob, tmpdir, found) as lf:
            if lf is None or lf.verified:
                continue
            with open(lf.path, "rb") as f:
                raw = HashingReader(f)
                raw.drain()
            if raw.digest != blob.digest or raw.count != blob.size:
                found.append(
                    Finding(
                        ERROR,
                        "digest",
                        f"blob bytes hash to {raw.digest} "
                        f"({raw.count} bytes), not {blob.digest} "
                        f"({blob.size} bytes)",
                        layer=blob.digest,
                    )
                )
    return found


@contextmanager
def _blob_file(
    image: Image, blob: Descriptor, tmpdir: str, found: list[Finding]
) -> Iterator[LayerFile | None]:
    """The blob in a file for the block (None, with an error finding, when it cannot be
    had); a downloaded temporary file is removed afterwards."""
    try:
        lf = layer_file(image, blob, tmpdir)
    except OccystrapError as exc:
        found.append(Finding(ERROR, "digest", str(exc), layer=blob.digest))
        yield None
        return
    try:
        yield lf
    finally:
        lf.discard()


def check_plain_layers(config_doc: dict[str, Any], layers: list[Descriptor]) -> list[Finding]:
    """An uncompressed layer's digest is its diff_id: a mismatch is found without reading it."""
    rootfs = config_doc.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        return []  # check_metadata says so
    found = []
    for n, (layer, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
        if mediatypes.layer_compression(layer.media_type) == "none" and layer.digest != diff_id:
            found.append(
                Finding(
                    ERROR,
                    "diff_id",
                    f"layer {n} is an uncompressed tar, but the config's diff_id is {diff_id}",
                    layer=layer.digest,
                )
            )
    return found


def check_image(image: Image, fast: bool, tmpdir: str) -> list[Finding]:
    manifest = image.manifest
    kind = mediatypes.artifact_type(manifest)
    if kind is not None:
        return check_artifact(image, kind, fast, tmpdir)
    found: list[Finding] = []
    try:
        config_doc = parse_config(image.source.get_blob(manifest.config.digest))
    except OccystrapError as exc:
        return [Finding(ERROR, "config", str(exc))]
    found.extend(check_metadata(config_doc, manifest.layers))
    if fast:  # (the full check finds the same when it hashes the layer)
        return found + check_plain_layers(config_doc, manifest.layers)
    rootfs = config_doc.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    for i, layer in enumerate(manifest.layers):
        diff_id = diff_ids[i] if isinstance(diff_ids, list) and i < len(diff_ids) else None
        if mediatypes.is_foreign(layer) and not serves(image.source, layer.digest):
            found.append(
                Finding(
                    INFO,
                    "foreign",
                    "a foreign layer the source does not serve "
                    "(its publisher does, from its urls): not checked",
                    layer=layer.digest,
                )
            )
            continue
        with _blob_file(image, layer, tmpdir, found) as lf:
            if lf is None:
                continue
            with open(lf.path, "rb") as f:
                layer_found = check_layer_stream(f, layer, diff_id, lf.verified)
        for x in layer_found:
            x.layer = layer.digest
        found.extend(layer_found)
    return found


def run(location: Location, config: Config, fast: bool) -> list[Finding]:
    """Every finding for every image the source holds."""
    found: list[Finding] = []
    with scratch(config, "check") as tmp, opened(location, config, tmp) as source:
        entries = source.entries()
        # how an archive was read around its faults (dockersave's notes)
        found += [Finding(INFO, "archive", note) for note in getattr(source, "notes", ())]
        for entry in entries:
            label = str(entry.ref.repo_tag or entry.ref)
            try:
                images = list(images_of(entry, config))
            except OccystrapError as exc:
                found.append(Finding(ERROR, "manifest", str(exc), image=label))
                continue
            for image in images:
                for x in check_image(image, fast, tmp):
                    x.image = image.label
                    found.append(x)
    return found


def counts(found: Iterable[Finding]) -> dict[str, int]:
    out = {ERROR: 0, WARNING: 0, INFO: 0}
    for x in found:
        out[x.severity] += 1
    return out


def to_dict(location: Location, found: list[Finding], fast: bool) -> dict[str, Any]:
    c = counts(found)
    return {
        "source": location.text,
        "fast": fast,
        "ok": c[ERROR] == 0,
        "errors": c[ERROR],
        "warnings": c[WARNING],
        "infos": c[INFO],
        "findings": [asdict(x) for x in found],
    }


def to_text(found: list[Finding], quiet: bool) -> str:
    c = counts(found)
    lines = [x.text() for x in found if not quiet or x.severity == ERROR]
    verdict = "FAILED" if c[ERROR] else "OK"
    lines.append(f"{verdict}: {c[ERROR]} errors, {c[WARNING]} warnings.")
    return "\n".join(lines)
