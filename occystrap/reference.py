"""Parsing of occystrap URIs and image references.

Pure: no I/O. Every string that later becomes part of a URL or a file name (names, tags,
digests) is validated here with the distribution spec's grammar, so the rest of the code can
trust it.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl

import msgspec

from occystrap.errors import UsageError
from occystrap.redaction import redact_uri

# The distribution spec's grammar (docker/distribution reference/regexp.go).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)

DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_REGISTRY = "registry-1.docker.io"

SOURCE_SCHEMES = frozenset({"registry", "tar", "oci", "dir", "docker", "quay"})
DESTINATION_SCHEMES = frozenset({"dir", "tar", "oci", "registry", "docker"})
_ALIASES = {"file": "tar", "directory": "dir", "docker-registry": "registry"}
_KNOWN_SCHEMES = frozenset({"registry", "dir", "tar", "oci", "docker", "quay"})


def digest_of(data: bytes) -> str:
    """The sha256 digest of `data`, as `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of_hash(hasher: hashlib._Hash) -> str:
    """The digest a running sha256 (`hashlib.sha256()` fed piece by piece) has reached, as
    `sha256:<hex>`: `digest_of` for streamed data."""
    return "sha256:" + hasher.hexdigest()


def hex_of(digest: str) -> str:
    """The hex part of `sha256:<hex>` (the file and member name of a blob)."""
    return digest.split(":", 1)[1]


def validate_digest(digest: str) -> str:
    """Return `digest` if it is a well-formed sha256 digest; it will become a path."""
    if not DIGEST_RE.match(digest):
        raise UsageError(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return digest


def normalized_name(name: str) -> str:
    """The full name docker's `ParseNormalizedNamed` gives `name`, which containerd and the
    kubelet look images up by: `busybox:1.36` → `docker.io/library/busybox:1.36`, `org/app:1`
    → `docker.io/org/app:1`, `registry-1.docker.io/x/y:1` → `docker.io/x/y:1`; a name whose
    first component is a registry host (holds `.` or `:`, is `localhost`, or has upper case)
    is already full."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if first.lower() not in DOCKER_HUB_HOSTS:
            return name
        name = rest
    return "docker.io/" + ("" if "/" in name else "library/") + name


class ImageRef(msgspec.Struct, frozen=True):
    """A registry image: host, repository name, and a tag and/or a digest."""

    host: str
    name: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest wins over the tag, as in docker."""
        return self.digest or self.tag or "latest"

    @property
    def display_host(self) -> str:
        return "docker.io" if self.host == DOCKER_HUB_REGISTRY else self.host

    @property
    def repo_tag(self) -> str | None:
        """`host/name:tag` as docker shows it in RepoTags, or None for digest-only references."""
        if self.tag is None:
            return None
        if not self.host:  # a local image known only by name, e.g. "app:1.0" in a tarball
            return f"{self.name}:{self.tag}"
        name = self.name
        if self.host == DOCKER_HUB_REGISTRY:
            name = name.removeprefix("library/")
            return f"{name}:{self.tag}"
        return f"{self.host}/{name}:{self.tag}"

    def __str__(self) -> str:
        text = f"{self.host}/{self.name}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


class BulkPattern(msgspec.Struct, frozen=True):
    """registry://HOST/NAMESPACE/GLOB[:TAG_GLOB][?tag_regex=RE]: every matching repository
    (from /v2/_catalog) at every matching tag. The tag defaults to `latest`."""

    host: str
    name_glob: str
    tag_glob: str = "latest"
    tag_regex: str | None = None


GLOB_CHARS = frozenset("*?[")


def parse_bulk_pattern(text: str, where: str, options: dict[str, object]) -> BulkPattern:
    if "/" not in text:
        raise UsageError(f"{where}: expected HOST/NAMESPACE/GLOB[:TAGS]")
    host, rest = text.split("/", 1)
    if not _HOST_RE.match(host):
        raise UsageError(f"{where}: invalid registry host {host!r}")
    if host.lower() in DOCKER_HUB_HOSTS:
        host = DOCKER_HUB_REGISTRY
    tag_glob = "latest"
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag_glob = rest.rsplit(":", 1)
    if not rest or not re.fullmatch(r"[a-z0-9._/*?\[\]-]+", rest):
        raise UsageError(f"{where}: invalid repository pattern {rest!r}")
    regex = options.get("tag_regex")
    if regex is not None:
        try:
            re.compile(str(regex))
        except re.error as exc:
            raise UsageError(f"{where}: invalid tag_regex: {exc}") from None
    return BulkPattern(host, rest, tag_glob or "latest", str(regex) if regex is not None else None)


class Location(msgspec.Struct, frozen=True):
    """A parsed source or destination URI."""

    scheme: str
    ref: ImageRef | None = None
    path: str | None = None
    tag: str | None = None
    select: str | None = None  # tar:// source: `#NAME:TAG` picks one image of several
    pattern: BulkPattern | None = None  # registry://HOST/NS/GLOB[:TAGS]: many images
    options: dict[str, object] = msgspec.field(default_factory=dict)
    text: str = ""

    def option(self, key: str, default: object = None) -> object:
        return self.options.get(key, default)

    def insecure(self, default: bool) -> bool:
        """Plain HTTP to this registry: `?insecure=` on the URI, else the global flag."""
        return bool(self.options.get("insecure", default))

    def __str__(self) -> str:
        return self.text


def _typed(value: str) -> object:
    low = value.lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0"):
        return False
    if re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    return value


def parse_options(query: str) -> dict[str, object]:
    options: dict[str, object] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        options[key.lower()] = _typed(value)
    return options


def parse_image_ref(
    text: str, where: str | None = None, default_tag: str | None = "latest"
) -> ImageRef:
    """Parse `HOST/NAME[:TAG][@DIGEST]`, normalising Docker Hub names as docker does.

    A destination passes `default_tag=None`: without a tag it takes the source's.
    """
    where = where or text
    if "/" not in text:
        raise UsageError(f"{where}: expected HOST/NAME[:TAG|@DIGEST]")
    host, rest = text.split("/", 1)
    if "@" in host:
        raise UsageError(f"{where}: put credentials in --username/--password, not in the URI")
    if not host or not _HOST_RE.match(host):
        raise UsageError(f"{where}: invalid registry host {host!r}")
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        validate_digest(digest)
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not TAG_RE.match(tag):
            raise UsageError(f"{where}: invalid tag {tag!r}")
    if host.lower() in DOCKER_HUB_HOSTS:
        host = DOCKER_HUB_REGISTRY
        if "/" not in rest:
            rest = f"library/{rest}"
    if not rest or not NAME_RE.match(rest):
        raise UsageError(
            f"{where}: invalid repository name {rest!r} (lower-case letters, digits, "
            "separators . _ - and /)"
        )
    if tag is None and digest is None:
        tag = default_tag
    return ImageRef(host=host, name=rest, tag=tag, digest=digest)


_PLATFORM_OPTIONS = frozenset({"os", "arch", "architecture", "variant"})
# The query options each kind of URI reads: anything else is a usage error, so that a typo
# (`?media_type=oci`, `?fromat=v1.2`) is said, not silently ignored.
URI_OPTIONS: dict[tuple[str, str], frozenset[str]] = {
    ("registry", "source"): _PLATFORM_OPTIONS | {"insecure", "referrers", "tag_regex"},
    ("registry", "destination"): frozenset({"insecure"}),
    ("quay", "source"): _PLATFORM_OPTIONS | {"insecure", "referrers", "since", "token"},
    ("tar", "source"): _PLATFORM_OPTIONS,
    ("tar", "destination"): frozenset({"format", "media_types"}),
    ("oci", "source"): _PLATFORM_OPTIONS | {"referrers"},
    ("oci", "destination"): frozenset({"media_types"}),
    ("dir", "source"): _PLATFORM_OPTIONS,
    ("dir", "destination"): frozenset({"unique_names", "expand", "preserve_modes"}),
    ("docker", "source"): _PLATFORM_OPTIONS | {"socket"},
    ("docker", "destination"): frozenset({"socket"}),
}


def check_options(scheme: str, role: str, options: dict[str, object], shown: str) -> None:
    """UsageError naming an option this kind of URI does not read."""
    known = URI_OPTIONS.get((scheme, role), frozenset())
    unknown = sorted(set(options) - known)
    if unknown:
        listed = ", ".join(f"?{o}=" for o in sorted(known)) or "none"
        raise UsageError(
            f"{shown}: unknown option ?{unknown[0]}= for a {scheme}:// {role} (it takes: {listed})"
        )


def parse_location(text: str, *, role: str) -> Location:
    """Parse a SOURCE (`role="source"`) or DESTINATION URI.

    `scheme:rest` without `//` is read as `scheme://rest`, as the original occystrap did.
    The Location's `text`, and every message about it, is the URI with its secrets redacted
    (`occystrap.redaction`); its options keep their values.
    """
    shown = redact_uri(text)
    if "://" in text:
        scheme, rest = text.split("://", 1)
    elif ":" in text and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", text.split(":", 1)[0]):
        scheme, rest = text.split(":", 1)
    else:
        raise UsageError(
            f"{shown!r}: not a URI; expected e.g. registry://HOST/NAME:TAG or tar://PATH"
        )
    scheme = _ALIASES.get(scheme.lower(), scheme.lower())
    allowed = SOURCE_SCHEMES if role == "source" else DESTINATION_SCHEMES
    if scheme not in allowed:
        known = ", ".join(f"{s}://" for s in sorted(allowed))
        what = "not implemented yet as a" if scheme in _KNOWN_SCHEMES else "unknown"
        raise UsageError(f"{shown}: {scheme}:// is {what} {role} (supported: {known})")
    query = ""
    if "?" in rest:
        rest, query = rest.split("?", 1)
    options = parse_options(query)
    check_options(scheme, role, options, shown)
    if scheme in ("registry", "quay") and "@" in rest.split("/", 1)[0]:
        raise UsageError(
            f"{shown}: put credentials in --username/--password (or ?token= "
            "for quay://), not in the URI"
        )
    if scheme == "registry" and role == "source" and GLOB_CHARS & set(rest.split("/", 1)[-1]):
        return Location(
            scheme, pattern=parse_bulk_pattern(rest, shown, options), options=options, text=shown
        )
    if scheme == "registry":
        ref = parse_image_ref(rest, shown, default_tag="latest" if role == "source" else None)
        if role == "destination" and ref.digest:
            raise UsageError(
                f"{shown}: a destination takes a tag, not a digest (the digest is the source's)"
            )
        return Location(scheme, ref=ref, options=options, text=shown)
    if scheme == "quay":
        # quay://NAMESPACE[/GLOB][:TAG]: glob defaults to every repository, tag to latest
        head, _, tag = rest.partition(":")
        namespace, _, glob = head.partition("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", namespace):
            raise UsageError(f"{shown}: invalid Quay namespace {namespace!r}")
        if tag and not TAG_RE.match(tag):
            raise UsageError(f"{shown}: invalid tag {tag!r}")
        return Location(
            scheme,
            path=f"{namespace}/{glob or '*'}",
            tag=tag or "latest",
            options=options,
            text=shown,
        )
    if scheme == "docker":
        # docker://NAME[:TAG]: a name as the engine knows it (no registry host needed)
        if role == "source" and not rest:
            raise UsageError(f"{shown}: missing image name")
        if rest and not re.fullmatch(r"[A-Za-z0-9._/:@-]+", rest):
            raise UsageError(f"{shown}: invalid image name {rest!r}")
        return Location(scheme, path=rest, options=options, text=shown)
    path = rest
    select: str | None = None
    if scheme == "tar" and role == "source" and "#" in path:
        path, select = path.split("#", 1)
    if path.startswith("localhost/"):
        path = path[len("localhost") :]
    ref_name: str | None = None
    if scheme == "oci":
        head, sep, tail = path.rpartition(":")
        if sep and head and "/" not in tail:
            if not TAG_RE.match(tail):
                raise UsageError(f"{shown}: invalid reference name {tail!r}")
            path, ref_name = head, tail
    if not path:
        raise UsageError(f"{shown}: missing path")
    return Location(scheme, path=path, tag=ref_name, select=select, options=options, text=shown)
