"""An OCI image layout directory (image-spec `image-layout.md`) as a destination.

Several runs may add images to one layout: blobs are content-addressed and shared, and
`index.json` is rewritten atomically under an exclusive `flock` on the layout directory, so
concurrent runs do not lose each other's entries. A failed image's clean-up removes only the
blobs it added that no published entry (index.json read under the lock at that moment) and
no other run in progress relies on (`destinations/shared.py`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from occystrap.destinations.base import Writer
from occystrap.destinations.shared import SharedDir, rely_on
from occystrap.errors import DestinationError
from occystrap.files import update_json_locked, write_atomic
from occystrap.messages import ImagePlan, LayerDesc
from occystrap.oci import (
    BLOBS,
    IMAGE_NAME,
    INDEX_FILE,
    LAYOUT_FILE,
    OCI_LAYOUT,
    REF_NAME,
    blob_path,
    blob_rel,
    empty_index,
    index_entry,
)
from occystrap.reference import DIGEST_RE, normalized_name
from occystrap.referrers import descriptor_for

MAX_WALKED = 4 * 2**20  # a manifest or index read to learn what it references


def referenced(root: str) -> set[str] | None:
    """Every blob (path relative to `root`) that the entries of `root/index.json` reach:
    their manifests, an index's manifests (walked), configs, layers, `blobs` and `subject`.
    None when index.json cannot be read; call with the layout's lock held."""
    try:
        with open(os.path.join(root, INDEX_FILE), "rb") as f:
            index = json.loads(f.read())
    except FileNotFoundError:
        return set()
    except (OSError, ValueError):
        return None
    found: set[str] = set()
    todo = [m for m in (index.get("manifests") if isinstance(index, dict) else None) or []]
    while todo:
        desc = todo.pop()
        digest = desc.get("digest") if isinstance(desc, dict) else None
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            continue
        rel = blob_rel(digest)
        if rel in found:
            continue
        found.add(rel)
        try:
            with open(os.path.join(root, rel), "rb") as f:
                doc = json.loads(f.read(MAX_WALKED))
        except (OSError, ValueError):
            continue  # a missing or unreadable manifest references nothing we can see
        if not isinstance(doc, dict):
            continue
        todo += [m for m in doc.get("manifests") or [] if isinstance(m, dict)]
        for d in [
            doc.get("config"),
            doc.get("subject"),
            *(doc.get("layers") or []),
            *(doc.get("blobs") or []),
        ]:
            digest = d.get("digest") if isinstance(d, dict) else None
            if isinstance(digest, str) and DIGEST_RE.match(digest):
                found.add(blob_rel(digest))
    return found


def _needed(plan: ImagePlan) -> list[str]:
    """The blobs that must be in the layout to publish `plan`: its manifest and what that
    names directly, except foreign layers (their bytes stay with their publisher)."""
    found = [plan.manifest_digest]
    try:
        doc = json.loads(plan.manifest)
    except ValueError:
        return found
    if not isinstance(doc, dict):
        return found
    for d in [
        doc.get("config"),
        *(doc.get("layers") or []),
        *(doc.get("blobs") or []),
        *(doc.get("manifests") or []),
    ]:
        if (
            not isinstance(d, dict)
            or d.get("urls")
            or any(word in str(d.get("mediaType", "")) for word in ("foreign", "nondistributable"))
        ):
            continue
        digest = d.get("digest")
        if isinstance(digest, str) and DIGEST_RE.match(digest):
            found.append(digest)
    return found


class OCILayoutWriter(Writer):
    takes_index = True
    takes_many = True

    def __init__(
        self, path: str, ref_name: str | None, token: str, oci_media_types: bool = False
    ) -> None:
        self.root = path
        self.oci_media_types = oci_media_types
        self.ref_name = ref_name
        self.token = token
        self._added: dict[int, list[str]] = {}
        self.shared = SharedDir(path, token)
        self._wrote_layout = False
        try:
            os.makedirs(os.path.join(path, BLOBS), exist_ok=True)
            layout = os.path.join(path, LAYOUT_FILE)
            if not os.path.exists(layout):
                write_atomic(layout, OCI_LAYOUT, token)
                self._wrote_layout = True
        except OSError as exc:
            raise DestinationError(f"cannot write OCI layout {path}: {exc.strerror}") from None

    @staticmethod
    def has_blob(path: str, digest: str, size: int, token: str = "") -> bool:
        """Whether the layout holds the blob; with the run's `token`, the run then relies on
        it (noted in its journal), so another run's clean-up leaves it in place."""

        def present() -> bool:
            try:
                return os.stat(blob_path(path, digest)).st_size == size
            except OSError:
                return False

        if not token:
            return present()
        return rely_on(path, token, blob_rel(digest), present)

    def _put_bytes(self, plan: ImagePlan, digest: str, data: bytes) -> None:
        rel = blob_rel(digest)
        if self.shared.put_bytes(rel, data):
            self._added.setdefault(plan.image_id, []).append(rel)

    def begin_image(self, plan: ImagePlan) -> None:
        self._added[plan.image_id] = []

    def add_config(self, plan: ImagePlan) -> None:
        if plan.config:  # an index has none
            self._put_bytes(plan, plan.config_digest, plan.config)

    def add_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        if layer.present:
            return
        rel = blob_rel(layer.digest)
        if self.shared.adopt(layer.path, rel, rel):
            self._added[plan.image_id].append(rel)

    def stage_image(self, plan: ImagePlan) -> None:
        self._put_bytes(plan, plan.manifest_digest, plan.manifest)

    def finish_image(self, plan: ImagePlan, layers: list[str]) -> str:
        self._put_bytes(plan, plan.manifest_digest, plan.manifest)
        where = f"oci://{self.root}"
        if plan.referrer_of or plan.companion_tag:
            # A referrer: an index.json entry of its own, so a later copy out of the layout
            # finds it (by its subject, or by its cosign tag as ref name); no image name, so
            # no importer mistakes it for an image.
            if plan.companion_tag:
                entry = self._entry(plan, {REF_NAME: plan.companion_tag})
                self._update_index(entry, REF_NAME, plan.companion_tag, _needed(plan))
            else:
                self._update_index(self._entry(plan), REF_NAME, None, _needed(plan))
            self._added.pop(plan.image_id, None)
            return f"{where}@{plan.manifest_digest}"
        if plan.parent >= 0:
            # A platform image of an index: reachable through the index, not index.json.
            self._added.pop(plan.image_id, None)
            return f"{where}@{plan.manifest_digest}"
        ref = self.ref_name or plan.tag
        annotations = {}
        if ref:
            annotations[REF_NAME] = ref
        full_name = normalized_name(plan.repo_tag) if plan.repo_tag else None
        if full_name:
            annotations[IMAGE_NAME] = full_name
        entry = self._entry(plan, annotations)
        # Which entry this one replaces: with an explicit oci://PATH:REF, the one holding REF;
        # otherwise the same image name (two repositories may share a tag in one layout),
        # also as earlier versions wrote it (the short form).
        needed = _needed(plan)
        if self.ref_name or not full_name:
            self._update_index(entry, REF_NAME, ref, needed)
        else:
            self._update_index(entry, IMAGE_NAME, full_name, needed, plan.repo_tag)
        self._added.pop(plan.image_id, None)
        return f"{where}:{ref}" if ref else f"{where}@{plan.manifest_digest}"

    @staticmethod
    def _entry(plan: ImagePlan, annotations: dict[str, str] | None = None) -> dict[str, object]:
        kind = None
        if plan.referrer_of or plan.companion_tag:
            # as a referrers index lists it: the manifest's artifactType, else its config's
            # media type
            kind = descriptor_for(plan.manifest, plan.manifest_media_type).get("artifactType")
        return index_entry(
            plan.manifest_media_type,
            plan.manifest_digest,
            len(plan.manifest),
            annotations,
            str(kind) if kind else None,
        )

    def _update_index(
        self,
        entry: dict[str, object],
        annotation: str,
        key: str | None,
        needed: list[str],
        *also: str | None,
    ) -> None:
        def change(index: dict[str, Any]) -> None:
            # Under the lock: an entry never points at a blob that is not there.
            missing = [d for d in needed if not os.path.exists(blob_path(self.root, d))]
            if missing:
                raise DestinationError(
                    f"{self.root}: blob {missing[0]} is missing from the "
                    "layout; the image is not published"
                )
            layout = os.path.join(self.root, LAYOUT_FILE)
            if not os.path.exists(layout):
                write_atomic(layout, OCI_LAYOUT, self.token)
            kept = []
            for m in index.get("manifests", []):
                value = (m.get("annotations") or {}).get(annotation)
                if key is not None and value in (key, *also):
                    continue  # the name moves to the new image
                if key is None and value is None and m.get("digest") == entry["digest"]:
                    continue  # the same unnamed image again
                kept.append(m)
            index["manifests"] = [*kept, entry]

        update_json_locked(self.root, INDEX_FILE, empty_index, change, self.token)

    def fail_image(self, plan: ImagePlan) -> None:
        """Remove the blobs this image added that no published entry and no run in progress
        relies on, decided under the layout's lock (see `destinations/shared.py`)."""
        self.shared.remove_unreferenced(
            self._added.pop(plan.image_id, []), lambda: referenced(self.root)
        )

    def close(self, ok: bool) -> None:
        # A layout this run created and nobody put an image in would look valid but empty:
        # it goes, unless another run is writing to it (see SharedDir.close).
        self.shared.close(
            lambda: referenced(self.root),
            lambda: os.path.exists(os.path.join(self.root, INDEX_FILE)),
            own_files=[LAYOUT_FILE] if self._wrote_layout else [],
            dirs=[BLOBS, os.path.dirname(BLOBS)],
        )
