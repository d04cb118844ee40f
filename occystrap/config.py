"""Run settings, built once from flags and environment, then read by every stage."""

from __future__ import annotations

import msgspec

from occystrap.filters import FilterChain
from occystrap.mediatypes import Platform


class Config(msgspec.Struct, frozen=True):
    parallel: int = 4
    image_parallel: int = 3
    retries: int = 3
    temp_dir: str | None = None
    insecure: bool = False
    tls_verify: bool = True
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    src_username: str | None = None
    src_password: str | None = None
    dest_username: str | None = None
    dest_password: str | None = None
    authfile: str | None = None  # --authfile / $REGISTRY_AUTH_FILE: the only auth file read
    credential_helpers: bool = True  # run docker-credential-* helpers named in auth files
    platform: Platform = Platform("linux", "amd64")
    platform_given: bool = False  # --platform (or ?os=/arch=) was given, not defaulted
    all_platforms: bool = False
    referrers: bool = False  # also copy signatures, SBOMs, attestations that point at it
    referrer_types: tuple[str, ...] = ()  # --referrers-type: only these artifact types
    verify_full: bool = False
    compression: str | None = None  # re-encode layers: "gzip" or "zstd"; None keeps bytes
    compression_level: int | None = None
    layer_cache: str | None = None
    filters: FilterChain = FilterChain()  # process -f, in order
    bulk: bool = False  # several images (--from-file): registry destinations act as prefixes
    shard: tuple[int, int] | None = None  # --shard K/N
    fail_fast: bool = False
    quay_url: str = "https://quay.io"
    rate_limit: float | None = None  # requests/s per registry host, all processes together
    stats: str | None = None
    stats_file: str | None = None
    quiet: bool = False
    verbose: bool = False
    timeout: float = 60.0

    def __repr__(self) -> str:
        """Every setting, the passwords masked (a Config may end up in a log or a report)."""
        shown = (
            f"{name}={'<redacted>' if name.endswith('password') and value else value!r}"
            for name, value in msgspec.structs.asdict(self).items()
        )
        return f"Config({', '.join(shown)})"

    def credentials(self, role: str) -> tuple[str | None, str | None]:
        """(username, password) for the source or destination registry: the role's own
        flags first, then the shared --username/--password."""
        if role == "dest" and (self.dest_username or self.dest_password):
            return self.dest_username, self.dest_password
        if role == "src" and (self.src_username or self.src_password):
            return self.src_username, self.src_password
        return self.username, self.password

    def image_semantics(self) -> str | None:
        """The option that needs every manifest to be a container image (an artifact is
        refused, attestations are left out of an index), or None."""
        if self.compression:
            return "--compression"
        if self.filters:
            return "process -f (filters)"
        if self.verify_full:
            return "--verify-full"
        return None
