"""`tar://`: a tarball that `docker load`, `podman load` and skopeo accept.

The default is the shape Docker ≥25 `docker save` writes: an OCI image layout (`oci-layout`,
`index.json`, `blobs/sha256/…` holding the blobs exactly as fetched, so every digest is kept)
plus the legacy `manifest.json` and `repositories`, written last. `?format=v1.2` writes the
older layout instead: `<config-hex>.json` and uncompressed `<layer-hex>/layer.tar`.

The archive is one sequential stream to a temp name beside the destination and is renamed
into place only when complete.
"""

from __future__ import annotations

import json
import os

from occystrap.errors import DestinationError
from occystrap.formats.base import Writer, hex_of
from occystrap.formats.ocilayout import IMAGE_NAME, OCI_LAYOUT, REF_NAME
from occystrap.formats.tarstream import TarStream
from occystrap.messages import ImagePlan, LayerDesc


def temp_name(path: str, token: str) -> str:
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(head, f".{tail}.occystrap-{token}.tmp")


class DockerArchiveWriter(Writer):
    def __init__(self, path: str, legacy: bool, token: str) -> None:
        self.path = path
        self.legacy = legacy
        self.needs_uncompressed = legacy
        self.tmp = temp_name(path, token)
        if os.path.isdir(path):
            raise DestinationError(f"cannot write tarball {path}: it is a directory")
        try:
            self._file = open(self.tmp, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise DestinationError(f"cannot write tarball {path}: {exc.strerror}") from None
        self._tar = TarStream(self._file)
        self._members: set[str] = set()
        self._images: list[tuple[ImagePlan, list[str]]] = []
        self._broken: OSError | None = None  # a failed write leaves the stream unusable

    def _blob_name(self, digest: str) -> str:
        return f"blobs/sha256/{hex_of(digest)}"

    def _layer_name(self, digest: str) -> str:
        if self.legacy:
            return f"{hex_of(digest)}/layer.tar"
        return self._blob_name(digest)

    def _config_name(self, plan: ImagePlan) -> str:
        if self.legacy:
            return f"{hex_of(plan.config_digest)}.json"
        return self._blob_name(plan.config_digest)

    def _guard(self) -> None:
        if self._broken is not None:
            raise DestinationError(
                f"cannot write tarball {self.path}: an earlier write failed "
                f"({self._broken.strerror})")

    def _add_bytes(self, name: str, data: bytes) -> None:
        self._guard()
        if name not in self._members:
            try:
                self._tar.add_bytes(name, data)
            except OSError as exc:
                self._broken = exc
                raise
            self._members.add(name)

    def begin_image(self, plan: ImagePlan) -> None:
        self._add_bytes(self._config_name(plan), plan.config)

    def add_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        self._guard()
        name = self._layer_name(layer.digest)
        if name not in self._members:
            try:
                self._tar.add_file(name, layer.path)
            except OSError as exc:
                self._broken = exc
                raise
            self._members.add(name)
        os.unlink(layer.path)

    def finish_image(self, plan: ImagePlan, layers: list[str]) -> str:
        if not self.legacy:
            self._add_bytes(self._blob_name(plan.manifest_digest), plan.manifest)
        self._images.append((plan, list(layers)))
        return f"tar://{self.path}"

    def fail_image(self, plan: ImagePlan) -> None:
        # Bytes already streamed cannot be taken back; they stay as unreferenced members,
        # and the image is absent from index.json and manifest.json.
        pass

    def _metadata(self) -> None:
        manifest_json = []
        repositories: dict[str, dict[str, str]] = {}
        index_entries = []
        for plan, layers in self._images:
            tags = [plan.repo_tag] if plan.repo_tag else []
            manifest_json.append({
                "Config": self._config_name(plan),
                "RepoTags": tags,
                "Layers": [self._layer_name(d) for d in layers],
            })
            if plan.repo_tag and layers:
                repo, _, tag = plan.repo_tag.rpartition(":")
                repositories.setdefault(repo, {})[tag] = hex_of(layers[-1])
            annotations = {}
            if plan.repo_tag:
                annotations[IMAGE_NAME] = plan.repo_tag
            if plan.tag:
                annotations[REF_NAME] = plan.tag
            entry: dict[str, object] = {
                "mediaType": plan.manifest_media_type,
                "digest": plan.manifest_digest,
                "size": len(plan.manifest),
            }
            if annotations:
                entry["annotations"] = annotations
            index_entries.append(entry)
        if not self.legacy:
            self._add_bytes("oci-layout", OCI_LAYOUT)
            index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                     "manifests": index_entries}
            self._add_bytes("index.json", json.dumps(index).encode())
        if repositories:
            self._add_bytes("repositories", json.dumps(repositories).encode())
        self._add_bytes("manifest.json", json.dumps(manifest_json).encode())

    def close(self, ok: bool) -> None:
        try:
            self._guard()
            if ok and self._images:
                self._metadata()
                self._tar.close()
                os.fsync(self._file.fileno())
                self._file.close()
                os.replace(self.tmp, self.path)
                return
        except OSError as exc:
            self._discard()
            raise DestinationError(f"cannot write tarball {self.path}: {exc.strerror}") from None
        except DestinationError:
            self._discard()
            raise
        self._discard()

    def _discard(self) -> None:
        self._file.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass
