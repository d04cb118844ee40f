"""`registry://` as a destination: blobs uploaded in parallel, the manifest last.

Byte-exact: the manifest bytes pushed are the source's, so the destination serves the same
digest and a pinned reference keeps working after a mirror. Per blob the cheapest path wins:
resolve has already HEADed the destination, a blob not yet met in the run (present layers never
reach here); a blob in another repository of the same registry is mounted (one resolve did
not HEAD, as this run sends it elsewhere, is HEADed here if that mount fails); the rest is
uploaded from the spool file, whose bytes fetch verified. A big blob is uploaded while it
downloads (`stream_layer`, destinations/inflight.py): one PATCH whose body follows the spool
file as it grows, and a committing PUT that waits for the layer's own message, which says
fetch verified it.

A blob in flight waits on the write stage's thread (for that message), and that thread waits
on uploads when it publishes an image. So a blob in flight has a thread of its own, never one
of the `-j` pool's, and no other upload ever waits on an unverified one: a second image
needing the same blob uploads (or mounts) it itself instead.

The registry client is made on first use, in the write process: connection pools are never
shared across a fork.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from occystrap.config import Config
from occystrap.destinations.base import Writer
from occystrap.destinations.inflight import BlobInFlight, StreamCancelled
from occystrap.destinations.referrerstags import ReferrersTags
from occystrap.errors import DestinationError, DigestError
from occystrap.files import unlink_quietly, write_atomic
from occystrap.messages import ImagePlan, LayerDesc
from occystrap.reference import ImageRef, hex_of
from occystrap.registry.client import RegistryClient
from occystrap.registry.clients import ClientPool


def target_reference(plan: ImagePlan) -> str:
    """The tag resolve chose (the destination's own, else the source's), else the digest.
    The platform images of an index and referrers are pushed by digest; the index takes the
    tag; a cosign companion keeps its `sha256-<hex>.sig` tag."""
    if plan.companion_tag:
        return plan.companion_tag
    if plan.parent >= 0:
        return plan.manifest_digest
    return plan.dest_tag or plan.manifest_digest


class RegistryWriter(Writer):
    takes_index = True
    # takes_many: a bulk source's images each go below the destination (Destination.target)

    def __init__(
        self, dest: ImageRef, config: Config, insecure: bool, spool: str, token: str
    ) -> None:
        self.dest = dest
        self.config = config
        self.insecure = insecure
        self.spool = spool
        self.token = token
        self._clients: ClientPool | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._uploads: dict[int, list[Future[None]]] = {}
        self._counts: dict[int, Counter[str]] = {}  # per top-level image: how blobs went
        # digest → the repository it went to this run; while it goes, (that repository to
        # come, the blob in flight when it is streamed). A settled entry is a plain string:
        # a Future (its Condition and locks) is 1.6 KB, 3 MB over a 1,000-image mirror.
        self._placed: dict[str, str | tuple[Future[str], BlobInFlight | None]] = {}
        self._tags = ReferrersTags()
        self._top: dict[int, int] = {}
        self._lock = threading.Lock()
        self._failed: list[tuple[ImagePlan, BaseException]] = []  # uploads, for failed_early
        # spool path → (image, blob in flight, its upload): announced, not yet verified
        self._inflight: dict[str, tuple[int, BlobInFlight, Future[None]]] = {}
        # image → every blob it streams, verified or not: cancelled when the image fails
        self._streaming: dict[int, list[BlobInFlight]] = {}
        self._streams: list[threading.Thread] = []

    def _client(self) -> RegistryClient:
        if self._clients is None:
            # the proxy transport's httpx pool (the direct one has no cap): -j uploads, and a
            # connection for each blob in flight (one PATCH holds it for the whole download;
            # fetch has up to -j × -J downloads at once)
            streams = self.config.parallel * self.config.image_parallel
            self._clients = ClientPool(self.config, self.config.parallel + streams, role="dest")
        return self._clients.get(self.dest.host, self.insecure)

    def _submit(self, plan: ImagePlan, fn: Callable[..., None], *args: object) -> Future[None]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.parallel, thread_name_prefix="upload")
        return self._track(plan, self._pool.submit(fn, *args))

    def _start_stream(
        self, plan: ImagePlan, fn: Callable[..., None], *args: object
    ) -> Future[None]:
        """Run `fn` on a thread of its own (see the module docstring: a pool's thread could
        be the one that a finished blob's upload needs while this one waits for bytes)."""
        fut: Future[None] = Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the future's reader
                fut.set_exception(exc)
            else:
                fut.set_result(None)

        thread = threading.Thread(target=run, name="stream", daemon=True)
        with self._lock:
            self._streams = [t for t in self._streams if t.is_alive()]
            self._streams.append(thread)
        thread.start()
        return self._track(plan, fut)

    def _track(self, plan: ImagePlan, fut: Future[None]) -> Future[None]:
        with self._lock:
            self._uploads.setdefault(plan.image_id, []).append(fut)
        fut.add_done_callback(lambda done: self._note_failure(plan, done))
        return fut

    def _note_failure(self, plan: ImagePlan, fut: Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            with self._lock:
                self._failed.append((plan, fut.exception()))  # type: ignore[arg-type]

    def failed_early(self) -> list[tuple[ImagePlan, BaseException]]:
        with self._lock:
            failed, self._failed = self._failed, []
        return failed

    def _push_blob(
        self,
        plan: ImagePlan,
        digest: str,
        size: int,
        path: str,
        offset: int,
        check_first: bool,
        growing: BlobInFlight | None = None,
    ) -> None:
        client = self._client()
        name = plan.dest_name or self.dest.name
        mine: Future[str] | None = None
        try:
            with self._lock:
                earlier = self._earlier(digest)
                if digest not in self._placed:
                    self._placed[digest] = (mine := Future(), growing)
            if earlier is not None and self._mount_from(client, name, digest, earlier):
                how = "mounted"
            elif growing is not None and growing.is_cancelled:  # failed while it waited
                raise StreamCancelled(f"blob {digest}: its image failed")
            elif check_first and client.blob_exists(name, digest) is not None:
                how = "present"
            elif (
                plan.host == self.dest.host
                and plan.name != name
                and client.mount_blob(name, digest, plan.name)
            ):
                how = "mounted"
            elif growing is not None:
                how = self._upload_growing(client, name, growing)
            else:
                client.upload_blob(name, digest, size, path, offset=max(offset, 0))
                how = "uploaded"
            if mine is not None:
                mine.set_result(name)
                with self._lock:
                    self._placed[digest] = name
        except BaseException as exc:
            if mine is not None:
                with self._lock:
                    self._placed.pop(digest, None)  # let the next one try on its own
                mine.set_exception(exc)
            raise
        finally:
            if offset < 0 and growing is None:  # a blob in flight: see add_layer
                unlink_quietly(path)
        with self._lock:
            self._counts.setdefault(self._top.get(plan.image_id, plan.image_id), Counter())[
                how
            ] += 1

    def _earlier(self, digest: str) -> Future[str] | str | None:
        """The upload of `digest` this run made or is making, if waiting for it cannot
        deadlock: not a blob in flight still unverified (its end waits on the write stage's
        thread, which may be waiting on the caller). Called with the lock held."""
        placed = self._placed.get(digest)
        if placed is None or isinstance(placed, str):
            return placed
        fut, stream = placed
        return fut if stream is None or stream.is_verified else None

    @staticmethod
    def _upload_growing(client: RegistryClient, name: str, blob: BlobInFlight) -> str:
        """Upload a blob while fetch downloads it; returns how it went ("streamed", or
        "uploaded" when it had to go up again). Should the bytes sent turn out not to be the
        blob's (fetch restarted a download whose server ignored Range, say: the registry
        then refuses the digest), the verified spool file goes up once more from its
        start."""
        try:
            client.upload_blob(name, blob.digest, blob.size, blob.path, growing=blob)
        except StreamCancelled:
            raise
        except DigestError:
            blob.verified()
            client.upload_blob(name, blob.digest, blob.size, blob.path)
            return "uploaded"
        return "streamed"

    def _mount_cached(self, plan: ImagePlan, layer: LayerDesc) -> None:
        """A re-encoded blob the layer cache placed in another repository of this registry
        (resolve HEADed it there): mount it; without bytes, a refusal fails the image."""
        name = plan.dest_name or self.dest.name
        if not self._client().mount_blob(name, layer.digest, layer.mount_from):
            raise DestinationError(
                f"layer {layer.digest}: {self.dest.host} would not mount it from "
                f"{layer.mount_from} (the layer cache's record); run again without "
                "--layer-cache to re-encode it"
            )
        with self._lock:
            self._counts.setdefault(self._top.get(plan.image_id, plan.image_id), Counter())[
                "mounted"
            ] += 1

    def place(self, plan: ImagePlan) -> str | None:
        return f"{self.dest.host}/{plan.dest_name or self.dest.name}"

    @staticmethod
    def _mount_from(
        client: RegistryClient, name: str, digest: str, earlier: Future[str] | str
    ) -> bool:
        """This run already put (or is putting) the blob into another repository of this
        registry: wait for that, then mount it instead of uploading it again. Many images
        sharing a base layer upload it once."""
        try:
            repo = earlier if isinstance(earlier, str) else earlier.result()
        except BaseException:
            return False
        return repo == name or client.mount_blob(name, digest, repo)

    def begin_image(self, plan: ImagePlan) -> None:
        self._uploads[plan.image_id] = []
        # the top-level image this one belongs to (parents arrive before their children)
        self._top[plan.image_id] = (
            self._top.get(plan.parent, plan.parent) if plan.parent >= 0 else plan.image_id
        )

    def add_config(self, plan: ImagePlan) -> None:
        if plan.up_to_date or not plan.config:  # nothing to do, or an index (no config)
            return
        path = os.path.join(self.spool, f"config-{plan.image_id}-{hex_of(plan.config_digest)}")
        write_atomic(path, plan.config, self.token)
        self._submit(
            plan,
            self._push_blob,
            plan,
            plan.config_digest,
            len(plan.config),
            path,
            -1,
            not plan.config_new,
        )

    def stream_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        """Fetch started downloading `layer` into `layer.path`: start its upload now (the
        checks of `_push_blob` first: a blob mounted or present needs none of its bytes)."""
        blob = BlobInFlight(layer.path, layer.digest, layer.size)
        fut = self._start_stream(
            plan,
            self._push_blob,
            plan,
            layer.digest,
            layer.size,
            layer.path,
            -1,
            self._check_first(layer),
            blob,
        )
        with self._lock:
            self._inflight[layer.path] = (plan.image_id, blob, fut)
            self._streaming.setdefault(plan.image_id, []).append(blob)

    def add_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        with self._lock:
            streamed = self._inflight.pop(layer.path, None) if layer.path else None
        if streamed is not None:
            # Announced before: its upload is under way; fetch (and verify) now vouch for
            # every byte, so it may commit. The spool file goes when the upload is done.
            _, blob, fut = streamed
            blob.verify()
            fut.add_done_callback(lambda _: unlink_quietly(layer.path))
            return
        with self._lock:
            siblings = [b for _, b, _ in self._inflight.values() if b.digest == layer.digest]
        for blob in siblings:
            # Another image's download of this blob, shared by fetch: this layer's message
            # vouches for the same bytes, complete in that blob's spool file (the check of
            # its size leaves alone a download of the same digest still under way, from
            # another source). Verified, the stream may commit, and the upload below can
            # wait for it and mount.
            if blob.complete:
                blob.verify()
        if layer.mount_from:
            self._submit(plan, self._mount_cached, plan, layer)
            return
        if layer.present:
            return
        self._submit(
            plan,
            self._push_blob,
            plan,
            layer.digest,
            layer.size,
            layer.path,
            layer.offset,
            self._check_first(layer),
        )

    def _check_first(self, layer: LayerDesc) -> bool:
        """Should `_push_blob` HEAD the layer's blob before an upload? resolve HEADed every
        layer already, except those re-encoded since (new digests), all of them when filters
        are given (they read every layer, present or not), and those it assumed this run
        sends elsewhere (a HEAD if the mount from there fails)."""
        return bool(layer.source_digest or self.config.filters or layer.assumed)

    def _wait_uploads(self, plan: ImagePlan) -> None:
        with self._lock:
            futures = self._uploads.pop(plan.image_id, [])
        for fut in futures:
            fut.result()  # the first failed upload fails the image
        with self._lock:
            self._streaming.pop(plan.image_id, None)  # its streams are done

    def stage_image(self, plan: ImagePlan) -> None:
        if plan.up_to_date:
            return
        self._wait_uploads(plan)
        self._client().put_manifest(
            plan.dest_name or self.dest.name,
            plan.manifest_digest,
            plan.manifest,
            plan.manifest_media_type,
        )

    def finish_image(self, plan: ImagePlan, layers: list[str]) -> str:
        reference = target_reference(plan)
        name = plan.dest_name or self.dest.name
        where = f"registry://{self.dest.host}/{name}"
        where += f"@{reference}" if reference.startswith("sha256:") else f":{reference}"
        top = self._top.get(plan.image_id, plan.image_id)
        if plan.parent < 0:  # the tree's referrers are up: list them before the tag goes up
            self._tags.known(top, plan.known_referrers)
            self._tags.flush(top, self._client(), name)
        if plan.up_to_date:
            return where
        self._wait_uploads(plan)
        _, indexed = self._client().put_manifest_acked(
            name, reference, plan.manifest, plan.manifest_media_type
        )
        subject = plan.referrer_of or plan.subject
        if subject:
            self._tags.pushed(top, subject, plan.manifest, plan.manifest_media_type, indexed)
            if plan.parent < 0:  # a referrer copied as an image of its own
                self._tags.flush(top, self._client(), name)
        return where

    def detail(self, plan: ImagePlan) -> str:
        with self._lock:
            counts = self._counts.pop(plan.image_id, Counter())
            self._top = {k: v for k, v in self._top.items() if v != plan.image_id}
        return ", ".join(
            [f"{n} blobs {how}" for how, n in sorted(counts.items())]
            + self._tags.notes(plan.image_id)
        )

    def fail_image(self, plan: ImagePlan) -> None:
        # Blobs already uploaded stay: unreferenced blobs are the registry's to collect, and a
        # re-run finds them with a HEAD instead of uploading them again.
        with self._lock:
            futures = self._uploads.pop(plan.image_id, [])
            for key in [k for k, v in self._inflight.items() if v[0] == plan.image_id]:
                del self._inflight[key]
            cancelled = self._streaming.pop(plan.image_id, [])
        self._tags.forget(plan.image_id)
        for blob in cancelled:  # fetch removes the spool file of a failed image
            blob.cancel()
        for fut in futures:
            fut.cancel()

    def close(self, ok: bool) -> None:
        with self._lock:
            left = [b for blobs in self._streaming.values() for b in blobs]
            self._inflight, self._streaming = {}, {}
        for blob in left:  # nothing may wait for it any more (the run is over)
            blob.cancel()
        with self._lock:
            streams, self._streams = self._streams, []
        for thread in streams:
            thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._clients is not None:
            self._clients.close()
