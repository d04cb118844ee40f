"""An OCI image layout directory (image-spec `image-layout.md`) as a destination.

Several runs may add images to one layout: blobs are content-addressed and shared, and
`index.json` is rewritten atomically under an exclusive `flock` on the layout directory, so
concurrent runs do not lose each other's entries.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from occystrap.errors import DestinationError
from occystrap.formats.base import (
    Writer,
    adopt,
    hex_of,
    remove_paths,
    update_json_locked,
    write_atomic,
)
from occystrap.mediatypes import OCI_INDEX
from occystrap.messages import ImagePlan, LayerDesc
from occystrap.reference import normalized_name
from occystrap.referrers import descriptor_for

REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def blob_path(root: str, digest: str) -> str:
    return os.path.join(root, "blobs", "sha256", hex_of(digest))


class OCILayoutWriter(Writer):
    def __init__(self, path: str, ref_name: str | None, token: str,
                 oci_media_types: bool = False) -> None:
        self.root = path
        self.oci_media_types = oci_media_types
        self.ref_name = ref_name
        self.token = token
        self._added: dict[int, list[str]] = {}
        self._created_root = not os.path.exists(path)
        self._published = 0
        try:
            os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
            layout = os.path.join(path, "oci-layout")
            if not os.path.exists(layout):
                write_atomic(layout, OCI_LAYOUT, token)
        except OSError as exc:
            raise DestinationError(f"cannot write OCI layout {path}: {exc.strerror}") from None

    @staticmethod
    def has_blob(path: str, digest: str, size: int) -> bool:
        try:
            return os.stat(blob_path(path, digest)).st_size == size
        except OSError:
            return False

    def _put_bytes(self, plan: ImagePlan, digest: str, data: bytes) -> None:
        target = blob_path(self.root, digest)
        if not os.path.exists(target):
            write_atomic(target, data, self.token)
            self._added.setdefault(plan.image_id, []).append(target)

    def begin_image(self, plan: ImagePlan) -> None:
        self._added[plan.image_id] = []

    def add_config(self, plan: ImagePlan) -> None:
        if plan.config:  # an index has none
            self._put_bytes(plan, plan.config_digest, plan.config)

    def add_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        if layer.present:
            return
        target = blob_path(self.root, layer.digest)
        if adopt(layer.path, target):
            self._added[plan.image_id].append(target)

    def stage_image(self, plan: ImagePlan) -> None:
        self._put_bytes(plan, plan.manifest_digest, plan.manifest)

    def finish_image(self, plan: ImagePlan, layers: list[str]) -> str:
        self._put_bytes(plan, plan.manifest_digest, plan.manifest)
        where = f"oci://{self.root}"
        if plan.referrer_of or plan.companion_tag:
            # A referrer: an index.json entry of its own, so a later copy out of the layout
            # finds it (by its subject, or by its cosign tag as ref name); no image name, so
            # no importer mistakes it for an image.
            entry = self._entry(plan)
            if plan.companion_tag:
                entry["annotations"] = {REF_NAME: plan.companion_tag}
                self._update_index(entry, REF_NAME, plan.companion_tag)
            else:
                self._update_index(entry, REF_NAME, None)
            self._added.pop(plan.image_id, None)
            return f"{where}@{plan.manifest_digest}"
        if plan.parent >= 0:
            # A platform image of an index: reachable through the index, not index.json.
            self._added.pop(plan.image_id, None)
            return f"{where}@{plan.manifest_digest}"
        ref = self.ref_name or plan.tag
        entry = self._entry(plan)
        annotations = {}
        if ref:
            annotations[REF_NAME] = ref
        full_name = normalized_name(plan.repo_tag) if plan.repo_tag else None
        if full_name:
            annotations[IMAGE_NAME] = full_name
        if annotations:
            entry["annotations"] = annotations
        # Which entry this one replaces: with an explicit oci://PATH:REF, the one holding REF;
        # otherwise the same image name (two repositories may share a tag in one layout),
        # also as earlier versions wrote it (the short form).
        if self.ref_name or not full_name:
            self._update_index(entry, REF_NAME, ref)
        else:
            self._update_index(entry, IMAGE_NAME, full_name, plan.repo_tag)
        self._added.pop(plan.image_id, None)
        self._published += 1
        return f"{where}:{ref}" if ref else f"{where}@{plan.manifest_digest}"

    @staticmethod
    def _entry(plan: ImagePlan) -> dict[str, object]:
        entry: dict[str, object] = {
            "mediaType": plan.manifest_media_type,
            "digest": plan.manifest_digest,
            "size": len(plan.manifest),
        }
        if plan.referrer_of or plan.companion_tag:
            # as a referrers index lists it: the manifest's artifactType, else its config's
            # media type
            kind = descriptor_for(plan.manifest, plan.manifest_media_type).get("artifactType")
            if kind:
                entry["artifactType"] = kind
        return entry

    def _update_index(self, entry: dict[str, object], annotation: str, key: str | None,
                      *also: str | None) -> None:
        def change(index: dict[str, Any]) -> None:
            kept = []
            for m in index.get("manifests", []):
                value = (m.get("annotations") or {}).get(annotation)
                if key is not None and value in (key, *also):
                    continue  # the name moves to the new image
                if key is None and value is None and m.get("digest") == entry["digest"]:
                    continue  # the same unnamed image again
                kept.append(m)
            index["manifests"] = [*kept, entry]

        update_json_locked(self.root, "index.json", lambda: {
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}, change, self.token)

    def fail_image(self, plan: ImagePlan) -> None:
        # Remove the blobs this image brought in. A concurrent run adding an image that
        # shares one of them in the same instant could lose it; that window is accepted in
        # exchange for not leaving a failed image's bytes behind.
        remove_paths(self._added.pop(plan.image_id, []))

    def close(self, ok: bool) -> None:
        if self._created_root and not self._published:
            # A layout this run created and never put an image in would look valid but empty.
            shutil.rmtree(self.root, ignore_errors=True)
