"""Resolve's planning of referrers (`--referrers`): what points at the manifests of an image.

For every manifest copied (each child of an index too), the source is asked for its
referrers (`occystrap.referrers`); each one is fetched, checked (its `subject` must be the
manifest it was listed for; a cosign companion is taken by its tag), filtered by
`--referrers-type`, skipped when the destination already has it, and planned like any other
manifest, as a child of the top-level image. Referrers of referrers follow, breadth first,
at most `referrers.MAX_DEPTH` levels; a digest is visited once, so a listing that loops ends.

What cannot be copied at the source (a listed manifest or blob the registry does not have, a
malformed listing, a loop) is left out and said in the image's result line; the image and
its other referrers go on.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from occystrap.errors import OccystrapError
from occystrap.mediatypes import ImageManifest
from occystrap.messages import ImagePlan, LayerDesc
from occystrap.referrers import MAX_DEPTH, Found, wanted
from occystrap.sources import serves
from occystrap.stages.plan import Job, TreePlanner

log = logging.getLogger(__name__)

Planned = list[tuple[ImagePlan, list[LayerDesc]]]


def short(digest: str) -> str:
    return digest[:19]


class Referrals:
    """Plans referrers with the resolver's tree planner (same probe and ids)."""

    def __init__(self, tree: TreePlanner) -> None:
        self.tree = tree
        self.types = tree.config.referrer_types

    def plan(self, job: Job, top: ImagePlan, subjects: Sequence[str]) -> Planned:
        """Plans for the referrers of `subjects` (the manifests of `top`'s tree), as children
        of `top`: `top.referrers` lists the roots in the order they are to be published,
        `top.known_referrers` those the destination has already, `top.notes` what was left
        out."""
        find = getattr(job.source, "find_referrers", None)
        if find is None:
            log.info("%s: this kind of source holds no referrers", job.text)
            return []
        out: Planned = []
        seen = set(subjects)
        queue = deque((subject, 1) for subject in subjects)
        while queue:
            subject, depth = queue.popleft()
            try:
                found: list[Found] = find(subject)
            except OccystrapError as exc:
                top.notes.append(f"referrers of {short(subject)} not listed: {exc}")
                continue
            if found and depth > MAX_DEPTH:
                top.notes.append(
                    f"referrers of {short(subject)} not copied: more than "
                    f"{MAX_DEPTH} levels of referrers"
                )
                continue
            for f in found:
                planned = self._one(job, top, f, seen)
                if planned is None:
                    continue
                queue.append((planned[1], depth + 1))
                if planned[0]:
                    top.referrers.append(planned[0][0][0].image_id)
                    out += planned[0]
        return out

    def _one(
        self, job: Job, top: ImagePlan, f: Found, seen: set[str]
    ) -> tuple[Planned, str] | None:
        """Plans for one referrer (empty when the destination has it) and its digest, or
        None when it is filtered out, seen already or cannot be copied (said in a note)."""
        if f.reference in seen:
            log.info(
                "%s: %s listed again (or as a referrer of itself): skipped", job.text, f.reference
            )
            return None
        if not wanted(self.types, f.artifact_type):
            return None
        seen.add(f.reference)
        what = f"referrer {f.tag or short(f.reference)} of {short(f.subject)}"
        tree = self.tree
        try:
            if (
                not f.tag
                and f.descriptor is not None
                and tree.probe.has_manifest(job.target, f.reference)
            ):
                # There already: nothing to fetch, but its subject's referrers tag must list
                # it (a run that died before updating the tag is repaired here).
                top.known_referrers.setdefault(f.subject, []).append(json.dumps(f.descriptor))
                return [], f.reference
            got = job.source.fetch_manifest(f.reference)
            if got.digest in seen and f.tag:
                return None
            seen.add(got.digest)
            if not wanted(self.types, f.artifact_type, got.parsed):
                return None
            subject = got.parsed.subject
            if not f.tag and (subject is None or subject.digest != f.subject):
                raise OccystrapError(f"its subject is {subject.digest if subject else 'none'}")
            if f.tag and tree.probe.has_manifest(job.target, got.digest, f.tag):
                return [], got.digest
            if isinstance(got.parsed, ImageManifest):
                for d in got.parsed.layers:
                    if not serves(job.source, d.digest):
                        raise OccystrapError(f"blob {d.digest} is not served by the source")
            extra: dict[str, Any] = (
                {"companion_tag": f.tag} if f.tag else {"referrer_of": f.subject}
            )
            return tree.plan_tree(job, got, parent=top.image_id, depth=1, **extra), got.digest
        except OccystrapError as exc:
            top.notes.append(f"{what} not copied: {exc}")
            return None
