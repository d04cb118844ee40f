"""`RegistryClient`: what occystrap asks of one registry host (distribution-spec 1.1).

Manifests (get, head, put), small blobs, blob existence, tags and the catalog, referrers,
and another API on the host (Quay's); blob downloads and uploads are their own modules
(`download.py`, `upload.py`) driven from here. Every request goes through one path,
`RegistrySession._request` → `flow.RequestFlow` (auth → redirects → retries → the transport
seam; `session.py`), so auth, retry and rate-limit behaviour cannot drift apart between
kinds of request.

Nothing here logs or raises with a token, a password, or a URL query string (pre-signed
storage URLs and upload `_state` carry secrets in the query).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import msgspec

from occystrap.errors import (
    DestinationError,
    DigestError,
    ManifestError,
    RegistryError,
)
from occystrap.reference import DIGEST_RE, digest_of
from occystrap.registry.answers import MAX_ERROR_BODY, check_status, refuse
from occystrap.registry.download import BlobDownload
from occystrap.registry.paging import PageGuard
from occystrap.registry.retry import Budget
from occystrap.registry.session import RegistrySession
from occystrap.registry.upload import Growing, Progress, UploadSession
from occystrap.registry.urls import (
    CATALOG,
    blob_url,
    check_name,
    manifest_url,
    media_type,
    next_link,
    redact,
)

MAX_MANIFEST_SIZE = 4 * 2**20


class ManifestResponse(msgspec.Struct, frozen=True):
    """A manifest as served: `body` byte-exact (b"" for a HEAD), its media type, digest
    (ours for a GET, the registry's Docker-Content-Digest for a HEAD) and size in bytes."""

    body: bytes
    media_type: str
    digest: str
    size: int


class RegistryClient(RegistrySession):
    """A thread-safe client for one registry host; share one instance between fetch threads.

    `transport` replaces the network (tests pass a mock one); by default a pooled
    http.client transport, httpx for proxied URLs (`transport.open_transport`). The request
    path and the reading of small answers are `session.RegistrySession`'s."""

    # -- manifests -------------------------------------------------------------------------

    def get_manifest(self, name: str, reference: str, accept: Sequence[str]) -> ManifestResponse:
        """GET a manifest, byte-exact, and check it against every digest that names it."""
        url = manifest_url(self.base_url, name, reference)
        image = f"{name}:{reference}"
        response, body = self._get_small(
            url,
            name,
            {"Accept": ", ".join(accept)},
            MAX_MANIFEST_SIZE,
            f"manifest {image} not found on {self.host}",
        )
        if len(body) > MAX_MANIFEST_SIZE:
            raise ManifestError(
                f"manifest {image} on {self.host} is larger than {MAX_MANIFEST_SIZE // 2**20} MiB",
                host=self.host,
                image=image,
            )
        digest = digest_of(body)
        if DIGEST_RE.match(reference) and digest != reference:
            raise DigestError(
                f"manifest {name}@{reference} from {self.host}: got {digest}",
                host=self.host,
                image=image,
            )
        served = response.headers.get("docker-content-digest")
        if served and served.startswith("sha256:") and served != digest:
            raise DigestError(
                f"manifest {image} from {self.host}: body hashes to {digest}, "
                f"registry says {served}",
                host=self.host,
                image=image,
            )
        return ManifestResponse(
            body=body,
            media_type=media_type(response.headers.get("content-type")),
            digest=digest,
            size=len(body),
        )

    def head_manifest(
        self, name: str, reference: str, accept: Sequence[str]
    ) -> ManifestResponse | None:
        """HEAD a manifest: cheap existence and digest check (not counted by Docker Hub)."""
        url = manifest_url(self.base_url, name, reference)
        response = self._request("HEAD", url, name=name, headers={"Accept": ", ".join(accept)})
        response.close()
        if response.status == 404:
            return None
        check_status(
            response,
            "HEAD",
            url,
            self.host,
            f"manifest {name}:{reference} not found on {self.host}",
        )
        digest = response.headers.get("docker-content-digest") or ""
        if digest and not DIGEST_RE.match(digest):
            raise RegistryError(
                f"HEAD {redact(url)}: registry sent a malformed Docker-Content-Digest",
                host=self.host,
                image=f"{name}:{reference}",
            )
        return ManifestResponse(
            body=b"",
            media_type=media_type(response.headers.get("content-type")),
            digest=digest,
            size=_int(response.headers.get("content-length")),
        )

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest byte-exact under a tag or digest; return its digest.

        The digest is ours (sha256 of the exact bytes); a registry that reports another one
        has rewritten the manifest, which would break every pinned reference, so it is an error.
        """
        return self.put_manifest_acked(name, reference, body, media_type)[0]

    def put_manifest_acked(
        self, name: str, reference: str, body: bytes, media_type: str
    ) -> tuple[str, bool]:
        """`put_manifest`, also saying whether the registry answered with an `OCI-Subject`
        header (it maintains the referrers of the manifest's subject itself; otherwise the
        client keeps the referrers tag, distribution-spec 1.1 "Pushing Manifests with
        Subject")."""
        url = manifest_url(self.base_url, name, reference)
        digest = digest_of(body)
        what = f"manifest {name}:{reference} to {self.host}"
        if DIGEST_RE.match(reference) and reference != digest:
            raise DigestError(f"{what}: the manifest hashes to {digest}", host=self.host)
        response = self._request(
            "PUT", url, name=name, push=True, headers={"Content-Type": media_type}, body=body
        )
        try:
            if response.status not in (200, 201):
                refuse(response, "PUT", url, self.host, what)
            served = response.headers.get("docker-content-digest")
            subject = bool(response.headers.get("oci-subject"))
        finally:
            response.close()
        if served and served != digest:
            raise DigestError(
                f"{what}: the registry stored it as {served}, expected {digest}", host=self.host
            )
        return digest, subject

    # -- blobs -----------------------------------------------------------------------------

    def get_blob(self, name: str, digest: str, max_size: int = 16 * 2**20) -> bytes:
        """Fetch a small blob (an image config) into memory, verified against its digest."""
        url = blob_url(self.base_url, name, digest)
        where = f"blob {digest} from {self.host}/{name}"
        _, body = self._get_small(
            url,
            name,
            {"Accept-Encoding": "identity"},
            max_size,
            f"blob {digest} not found in {self.host}/{name}",
        )
        if len(body) > max_size:
            raise DigestError(f"{where}: larger than {max_size} bytes", host=self.host)
        got = digest_of(body)
        if got != digest:
            raise DigestError(f"{where}: got {got}", host=self.host)
        return body

    def download_blob(
        self,
        name: str,
        digest: str,
        size: int | None,
        dest: str,
        on_progress: Callable[[int], None] | None = None,
        offset: int | None = None,
        writeback: bool = False,
    ) -> int:
        """Stream a blob to `dest`, hashing inline; resume a broken stream with Range.

        With `offset`, `dest` is an existing file (a tarball being assembled) and the blob
        goes into the region that starts there: nothing outside it is written or truncated,
        so `size` must be given. Its writeback to disk starts once it is verified, as with
        `writeback` for a file that is kept as it is (`files.start_writeback`).

        Returns the number of bytes written. `on_progress(n)` is called after each chunk; when
        the server ignores Range and the download restarts from zero, it is called once with
        the negative count already reported, so a progress total stays honest.
        On a size or digest mismatch the file is truncated to zero before DigestError.
        """
        url = blob_url(self.base_url, name, digest)
        return BlobDownload(
            self._request,
            self.host,
            name,
            digest,
            url,
            size,
            dest,
            Budget(self._retries),
            on_progress,
            offset,
            writeback=writeback,
        ).run(self._waits.pause)

    def blob_exists(self, name: str, digest: str) -> int | None:
        """HEAD a blob: its size when the repository has it, None when it does not.

        The cheapest way to skip an upload; a size of 0 means the registry did not say.
        """
        url = blob_url(self.base_url, name, digest)
        response = self._request("HEAD", url, name=name)
        response.close()
        if response.status == 404:
            return None
        check_status(
            response, "HEAD", url, self.host, f"blob {digest} not found in {self.host}/{name}"
        )
        return _int(response.headers.get("content-length"))

    def mount_blob(self, name: str, digest: str, from_name: str) -> bool:
        """Ask the registry to link a blob from another repository instead of uploading it.

        True when mounted (201). A 202 means the registry declined (the source lacks the blob,
        or we may not read it) and opened an upload session instead; that session is deleted
        at once so it does not linger, and the caller falls back to an upload.
        """
        blob_url(self.base_url, name, digest)
        check_name(from_name)
        return self._upload_session(name, digest).mount(from_name)

    def upload_blob(
        self,
        name: str,
        digest: str,
        size: int,
        src: str,
        offset: int = 0,
        on_progress: Callable[[int], None] | None = None,
        growing: Growing | None = None,
    ) -> None:
        """Upload bytes [offset, offset+size) of `src` as blob `digest`, streaming from disk.

        The digest is not recomputed: the caller verified these bytes when it fetched them, and
        the registry checks them again on the final PUT (a refusal becomes DigestError).

        Small blobs take one POST and one monolithic PUT. Big blobs, and a small one whose PUT
        broke mid-body, go up in chunks; after a failure the registry is asked how much it
        holds (GET on the session) and the upload continues from there rather than from zero.
        Every failure spends the one `--retries` budget of this blob. An abandoned session is
        deleted (best effort) so registries with quotas do not count it.

        `on_progress(n)` gets the bytes sent; after a resume from an earlier point it gets the
        negative difference, so a progress total stays honest.

        `growing`: `src` is still being downloaded (upload.Growing): one PATCH sends its
        bytes as they arrive, and the final PUT waits until the download is verified.
        """
        blob_url(self.base_url, name, digest)
        what = f"blob {digest} to {self.host}/{name}"
        if size < 0 or offset < 0:
            raise ValueError("size and offset must not be negative")
        if growing is None:  # a file still growing is checked by the digest at the end
            try:
                available = os.stat(src).st_size
            except OSError as exc:
                raise DestinationError(f"cannot read {src}: {exc.strerror}") from None
            if available < offset + size:
                raise DigestError(
                    f"{what}: {src} holds {available} bytes, fewer than the blob's "
                    f"end at byte {offset + size}",
                    host=self.host,
                )
        self._upload_session(name, digest).upload(size, src, offset, Progress(on_progress), growing)

    def _upload_session(self, name: str, digest: str) -> UploadSession:
        return UploadSession(
            self._request,
            self._registry,
            name,
            digest,
            Budget(self._retries),
            self._waits.pause,
            self.blob_exists,
        )

    # -- listings --------------------------------------------------------------------------

    def list_repositories(self, page_size: int = 1000, limit: int = 100_000) -> list[str]:
        """Every repository in `/v2/_catalog`, following `Link: <…>; rel="next"` pages."""
        return self._paged(
            f"{self.base_url}/v2/_catalog?n={page_size}", CATALOG, "repositories", limit
        )

    def list_tags(self, name: str, limit: int = 100_000) -> list[str]:
        """Every tag of `name` in `/v2/<name>/tags/list`, following Link pages."""
        check_name(name)
        return self._paged(f"{self.base_url}/v2/{name}/tags/list?n=1000", name, "tags", limit)

    def _paged(self, url: str, scope_name: str, key: str, limit: int) -> list[str]:
        found: list[str] = []
        what = (
            f"the catalog of {self.host}"
            if scope_name == CATALOG
            else f"the tags of {self.host}/{scope_name}"
        )
        guard = PageGuard(what, url)
        while url and len(found) < limit:
            response, body = self._get_page(
                url, scope_name, {}, f"{key} not found on {self.host}", MAX_ERROR_BODY * 64
            )
            try:
                items = json.loads(body).get(key) or []
            except (ValueError, AttributeError):
                items = None
            if not isinstance(items, list):
                raise RegistryError(
                    f"GET {redact(url)}: not a JSON {key} list", host=self.host
                ) from None
            found.extend(str(i) for i in items)
            url = next_link(response.headers.get("link"), url)
            if url:
                guard.next_page(url, len(items))
        return found

    def get_referrers(self, name: str, digest: str, max_pages: int = 100) -> list[bytes] | None:
        """`GET /v2/<name>/referrers/<digest>` (distribution-spec 1.1, "Listing Referrers"),
        following `Link: <…>; rel="next"` pages: the index bodies, or None when the registry
        has no referrers API (404 or 405 on the first page; a registry that has it never
        answers 404). RegistryError for a page seen twice or more than `max_pages`."""
        blob_url(self.base_url, name, digest)  # validates both
        url = f"{self.base_url}/v2/{name}/referrers/{digest}"
        what = f"referrers of {name}@{digest}"
        pages: list[bytes] = []
        seen: set[str] = set()
        while url:
            if url in seen or len(pages) >= max_pages:
                raise RegistryError(
                    f"{what} on {self.host}: the pages loop or run past {max_pages}", host=self.host
                )
            seen.add(url)
            response, body = self._get_page(
                url,
                name,
                {"Accept": "application/vnd.oci.image.index.v1+json"},
                what,
                MAX_MANIFEST_SIZE,
                absent=() if pages else (404, 405),
            )
            if response.status in (404, 405):
                return None
            if len(body) > MAX_MANIFEST_SIZE:
                raise ManifestError(
                    f"{what} on {self.host}: a page larger than {MAX_MANIFEST_SIZE // 2**20} MiB",
                    host=self.host,
                )
            pages.append(body)
            url = next_link(response.headers.get("link"), url)
        return pages


def _int(value: str | None) -> int:
    """A Content-Length as a number; 0 when absent or malformed (the registry did not say)."""
    try:
        return int(value or 0)
    except ValueError:
        return 0
