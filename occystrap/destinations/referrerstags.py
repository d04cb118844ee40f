"""A registry destination's referrers tags (distribution-spec 1.1, "Pushing Manifests with
Subject"): for a registry that does not index referrers itself (it answers a pushed
referrer without `OCI-Subject`; distribution 2.8 is one), the client keeps the index under
the subject's tag `sha256-<hex>` up to date by read-modify-write.

Two kinds of entries are kept: referrers this run pushed (the registry's answer says whether
it indexed them), and referrers found at the destination already (a re-run after a run that
died between pushing a referrer and updating the tag repairs the tag). For the second kind
the registry is asked once per run whether it has the referrers API.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from occystrap import referrers
from occystrap.errors import NotFoundError
from occystrap.mediatypes import ACCEPT, OCI_INDEX
from occystrap.registry.client import RegistryClient


class ReferrersTags:
    """Per top-level image, the entries its subjects' referrers tags must list."""

    def __init__(self) -> None:
        self._pushed: dict[int, dict[str, list[dict[str, Any]]]] = {}
        self._known: dict[int, dict[str, list[dict[str, Any]]]] = {}
        self._notes: dict[int, list[str]] = {}
        self._api: bool | None = None  # does the registry index referrers itself?
        self._lock = threading.Lock()

    def pushed(
        self, top: int, subject: str, manifest: bytes, media_type: str, indexed: bool
    ) -> None:
        """A manifest with a `subject` was pushed; `indexed`: the answer had OCI-Subject."""
        with self._lock:
            if indexed:
                self._api = True
                return
            entry = referrers.descriptor_for(manifest, media_type)
            self._pushed.setdefault(top, {}).setdefault(subject, []).append(entry)

    def known(self, top: int, found: dict[str, list[str]]) -> None:
        """Referrers resolve found at the destination already (descriptors as JSON)."""
        with self._lock:
            for subject, entries in found.items():
                self._known.setdefault(top, {}).setdefault(subject, []).extend(
                    json.loads(e) for e in entries
                )

    def forget(self, top: int) -> None:
        with self._lock:
            self._pushed.pop(top, None)
            self._known.pop(top, None)
            self._notes.pop(top, None)

    def notes(self, top: int) -> list[str]:
        with self._lock:
            return self._notes.pop(top, [])

    def flush(self, top: int, client: RegistryClient, name: str) -> None:
        """Bring the referrers tags of `top`'s subjects up to date at `name`."""
        with self._lock:
            pending = self._pushed.pop(top, {})
            known = self._known.pop(top, {})
        if known and self._api is None:
            any_subject = next(iter(known))
            api = client.get_referrers(name, any_subject) is not None
            with self._lock:
                self._api = api
        if not self._api:
            for subject, entries in known.items():
                pending.setdefault(subject, []).extend(entries)
        for subject, entries in pending.items():
            tag = referrers.fallback_tag(subject)
            try:
                # Accept everything: a registry hides what the Accept header does not name
                # (distribution answers 404), and whatever is there must be seen to be kept.
                existing: bytes | None = client.get_manifest(name, tag, ACCEPT).body
            except NotFoundError:
                existing = None
            try:
                body = referrers.merged_index(existing, entries)
            except ValueError as exc:
                with self._lock:
                    self._notes.setdefault(top, []).append(f"referrers tag {tag}: {exc}")
                continue
            if body is not None:
                client.put_manifest(name, tag, body, OCI_INDEX)
