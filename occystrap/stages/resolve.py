"""Resolve: references → plans. Fetches manifests and configs (small, verified), picks the
platform, asks the destination what it already holds, and emits one ImagePlan followed by
its LayerDescs per image. Admits a new image only while fewer than -J are in flight; an
image found up to date is not in flight and takes no slot. The images of a registry source
are planned 2 × -J at a time (the next ones' manifests are fetched while they wait for a
slot); a local source, a tar:// destination or -J 1 plans one image after another.

This module opens the sources and sends the plans; the planning of one image's tree is
`stages/plan.py`, of its referrers `stages/referrals.py`."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.synchronize import Semaphore

from occystrap.config import Config
from occystrap.destinations import Destination, Planner
from occystrap.errors import NotFoundError, OccystrapError, UsageError, from_library
from occystrap.layers.cache import LayerCache
from occystrap.mediatypes import ImageIndex
from occystrap.messages import ImagePlan, LayerDesc, Notice
from occystrap.reference import DIGEST_RE, ImageRef, Location
from occystrap.registry.clients import ClientPool
from occystrap.sources import Entry, ImageSource, open_source, platform_manifest
from occystrap.sources.registry import RegistryReferrers
from occystrap.stages.base import Stage, Wiring
from occystrap.stages.plan import Job, TreePlanner, copies_whole_index, layerless_plan
from occystrap.stages.referrals import Referrals


def planner_threads(config: Config) -> int:
    """Images of one registry source planned at once: twice -J (module docstring)."""
    return 2 * config.image_parallel


def wants_referrers(config: Config, location: Location) -> bool:
    """--referrers, or `?referrers=true` on this source (a mirror spec's `referrers`)."""
    return config.referrers or bool(location.option("referrers", False))


# plan_one's arguments: image id, source text, entry, source, insecure, target, referrers.
_Work = tuple[int, str, Entry, ImageSource, bool, ImageRef | None, bool]


class Resolver:
    """Turns each source into plans (see the module docstring)."""

    def __init__(
        self,
        stage: Stage,
        dest: Destination,
        config: Config,
        admit: Semaphore,
        spool: str,
        planner: Planner | None,
        cache: LayerCache | None,
    ) -> None:
        self.stage = stage
        self.dest = dest
        self.config = config
        self.admit = admit
        self.spool = spool
        self.clients = ClientPool(config, pool_size=max(4, planner_threads(config)), role="src")
        self.ids = itertools.count()
        self.tree = TreePlanner(dest, config, spool, planner, cache, self.ids)
        self.discovery = RegistryReferrers()
        self.emitting = threading.Lock()  # also guards `absent`
        self.absent = 0  # optional entries of this source whose tag was not there
        self.crashed: list[BaseException] = []
        self.referrals = Referrals(self.tree)

    def close(self) -> None:
        self.tree.close()
        self.clients.close()

    def emit(self, plan: ImagePlan, layers: list[LayerDesc]) -> None:
        self.stage.put(plan)
        # Largest first: the long downloads start early and the short ones fill in.
        for layer in sorted(layers, key=lambda lay: -lay.size):
            self.stage.put(layer)

    def run(self, sources: Sequence[Location]) -> None:
        for location in sources:
            try:
                source, insecure = open_source(
                    location,
                    self.config,
                    self.clients,
                    self.spool,
                    self.discovery if wants_referrers(self.config, location) else None,
                )
                entries = source.entries()
                for text in getattr(source, "notes", ()):  # an archive read around its faults
                    self.stage.tell(Notice(source=location.text, text=text, verbose=True))
                split = getattr(source, "platform_entries", None)  # an archive's platforms
                if (
                    split
                    and self.config.all_platforms
                    and self.dest.takes_many
                    and not self.dest.takes_index
                ):
                    entries = split(entries)
                if (
                    not (self.dest.takes_many or self.dest.is_registry)
                    and len(entries) > 1
                    and len({(e.source, e.reference) for e in entries}) == 1
                    and DIGEST_RE.match(entries[0].reference)
                ):
                    entries = entries[:1]  # one image under several tags: the first names it
                if len(entries) > 1 and not self.dest.takes_many and not self.dest.is_registry:
                    names = ", ".join(str(e.ref.repo_tag) for e in entries)
                    raise UsageError(
                        f"{location}: holds {len(entries)} images ({names}); "
                        f"pick one with #NAME:TAG or write to tar:// or oci://"
                    )
            except Exception as exc:  # noqa: BLE001 - a library's verdict fails the source
                self.fail_source(location, _mapped(exc))
                continue
            bulk = (
                len(entries) > 1
                or location.pattern is not None
                or self.config.bulk
                or location.scheme == "quay"
            )
            # Images of a registry are planned side by side (their HEADs and manifest GETs
            # overlap; admission bounds the images in flight to -J); a tar:// destination
            # is planned one image after another, so its layout does not depend on timing.
            overlap = (
                not source.local and self.tree.planner is None and self.config.image_parallel > 1
            )
            # Twice -J planners: up to -J images hold a slot (in flight), the others look
            # ahead (their manifests fetched, waiting for a slot) or find an image up to date,
            # which needs no slot; a bulk re-run's HEADs then overlap twice as much.
            planners = planner_threads(self.config)
            images = ThreadPoolExecutor(planners, thread_name_prefix="image") if overlap else None
            queued = threading.BoundedSemaphore(planners)  # no backlog of 1,000 futures
            self.absent = 0  # optional entries whose tag was not there (plan_one)
            mine = self.shard(entries)
            try:
                for entry in mine:
                    image_id = next(self.ids)
                    # An image of a pattern is named by itself, not by the pattern, so its
                    # result line, its failure and its stats entry say which image it was.
                    text = (
                        f"registry://{entry.ref}"
                        if location.pattern is not None or location.scheme == "quay"
                        else location.text
                    )
                    work: _Work = (
                        image_id,
                        text,
                        entry,
                        entry.source,
                        insecure,
                        self.dest.target(entry.ref, bulk),
                        wants_referrers(self.config, location),
                    )
                    if images is None:
                        self.plan_one(*work)
                    else:
                        queued.acquire()
                        images.submit(self._plan_queued, queued, work)
            finally:
                if images is not None:
                    images.shutdown(wait=True)
            if self.crashed:
                raise self.crashed[0]
            if (
                mine
                and self.absent == len(mine)
                and location.pattern is not None
                and self.config.shard is None  # another shard's repositories may have it
            ):
                # Every repository lacked the tag: as when tag lists find none.
                from occystrap.sources.bulk import no_match

                self.fail_source(location, no_match(location.pattern))

    def fail_source(self, location: Location, error: OccystrapError) -> None:
        """The source itself failed (not one of its images): a result of its own, which
        holds an admission slot until write reports it, like an image."""
        self.admit.acquire()
        self.stage.fail(next(self.ids), location.text, str(error), error.kind)

    def _plan_queued(self, queued: threading.BoundedSemaphore, work: _Work) -> None:
        """plan_one on a planner thread, then make room for the next image's work."""
        try:
            self.plan_one(*work)
        finally:
            queued.release()

    def plan_one(
        self,
        image_id: int,
        text: str,
        entry: Entry,
        source: ImageSource,
        insecure: bool,
        target: ImageRef | None,
        referrers: bool,
    ) -> None:
        """Plan one image; what fails it is its failure, not the run's. A bug is kept for
        the run to raise once the other images are out."""
        slot = _Slot(self.admit)
        try:
            self.one_image(image_id, text, entry, source, insecure, target, referrers, slot)
        except _Absent:
            with self.emitting:
                self.absent += 1
            slot.give_back()  # no image: nothing is sent, no result
            self.stage.tell(
                Notice(
                    source=text,
                    text=f"registry://{entry.ref}: no such manifest (404); skipped",
                    verbose=True,
                )
            )
        except Exception as exc:  # noqa: BLE001 - fails this image, not the run
            slot.take()  # write gives it back when it hears of the failure
            error = from_library(exc)
            if error is not None:
                self.stage.fail(image_id, text, str(error), error.kind)
                return
            # A bug: on a planner thread it would stay in a future nobody reads, and the
            # image would have no result. Fail the image now; run() raises it at the end.
            self.crashed.append(exc)
            reason = f"internal error in the resolve stage: {type(exc).__name__}: {exc}"
            self.stage.fail(image_id, text, reason, type(exc).__name__)
        except BaseException as exc:
            self.crashed.append(exc)
            raise

    def shard(self, entries: list[Entry]) -> list[Entry]:
        """--shard K/N: a stable, hash-based share of the images, so N machines can split a
        mirror and together cover it exactly once."""
        if self.config.shard is None:
            return entries
        k, n = self.config.shard
        return [
            e
            for e in entries
            if int(hashlib.sha256(str(e.ref).encode()).hexdigest()[:12], 16) % n == k
        ]

    def one_image(
        self,
        image_id: int,
        text: str,
        entry: Entry,
        source: ImageSource,
        insecure: bool,
        target: ImageRef | None,
        referrers: bool,
        slot: _Slot,
    ) -> None:
        job = Job(image_id, entry.ref, text, source, insecure, target)
        try:
            got = source.fetch_manifest(entry.reference)  # digest verified
        except NotFoundError:
            if entry.optional:  # a bulk pattern's literal tag this repository lacks
                raise _Absent() from None
            raise
        whole_index = isinstance(got.parsed, ImageIndex) and copies_whole_index(
            self.config, self.dest
        )
        if not whole_index and isinstance(got.parsed, ImageIndex):
            got = platform_manifest(source, got, self.config.platform)
        if whole_index and not self.dest.takes_index:
            raise UsageError(
                f"{self.dest.location}: copying every platform of an index needs "
                "a registry:// or oci:// destination; pick one with --platform"
            )
        plans: list[tuple[ImagePlan, list[LayerDesc]]]
        released = False
        if not self.config.filters and self.tree.probe.up_to_date(target, got.digest):
            # One HEAD, and the whole image is skipped: this is what makes a re-run cheap.
            # Without referrers to look for, nothing of it will be in flight: it takes no
            # admission slot (a bulk re-run's images overlap instead of each waiting for an
            # image before it to reach write), and write gives none back (`released`).
            released = not referrers
            if not released:
                slot.take()
            plans = [
                (
                    layerless_plan(
                        image_id,
                        job.ref,
                        text,
                        got,
                        insecure,
                        target,
                        up_to_date=True,
                        released=released,
                    ),
                    [],
                )
            ]
            subjects = self.tree.tree_digests(job, got, 0) if referrers else []
        else:
            slot.take()  # one slot per image: an index and its children
            plans = self.tree.plan_tree(job, got, parent=-1, depth=0, image_id=image_id)
            subjects = [plan.manifest_digest for plan, _ in plans]
        if referrers:
            plans += self.referrals.plan(job, plans[0][0], subjects)
        with self.emitting:  # an image's plans travel together, parents first
            for plan, layers in plans:
                self.emit(plan, layers)


class _Slot:
    """One image's admission slot (-J), taken once the image turns out to have something to
    move (or a failure to report: write gives a slot back for every result but an up-to-date
    image's, ImagePlan.released)."""

    def __init__(self, admit: Semaphore) -> None:
        self.admit = admit
        self.held = False

    def take(self) -> None:
        if not self.held:
            self.admit.acquire()
            self.held = True

    def give_back(self) -> None:
        if self.held:
            self.admit.release()
            self.held = False


class _Absent(Exception):
    """An optional entry (sources.base.Entry) whose manifest is not there: no image."""


def _mapped(exc: Exception) -> OccystrapError:
    """`exc` as the one-line error it fails an image with; a bug is raised again, to end
    the stage with its traceback."""
    mapped = from_library(exc)
    if mapped is None:
        raise exc
    return mapped


class Resolve(Stage):
    """The resolve stage: no inbox; it plans `sources` one image at a time."""

    def __init__(
        self,
        wiring: Wiring,
        sources: Sequence[Location],
        dest: Destination,
        config: Config,
        admit: Semaphore,
        spool: str,
        planner: Planner | None,
        cache: LayerCache | None,
    ) -> None:
        super().__init__(wiring)
        self.plan_sources = list(sources)
        self.resolver = Resolver(self, dest, config, admit, spool, planner, cache)

    def run(self) -> None:
        try:
            self.resolver.run(self.plan_sources)
        finally:
            self.resolver.close()
