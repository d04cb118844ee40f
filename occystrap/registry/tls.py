"""The TLS context every registry connection of a process uses, made once per settings."""

from __future__ import annotations

import functools
import ssl

from occystrap.errors import UsageError


@functools.lru_cache(maxsize=8)
def ssl_context(tls_verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """One context for both HTTP libraries so verification settings cannot diverge. Made
    once per process and settings (loading the system's CA store costs ~20 ms, and every
    client of every stage wanted its own); `warm_ssl_context` makes it before the stages
    fork, so they inherit it. SSLContext is safe to share between threads. UsageError when
    `ca_file` cannot be loaded."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load CA file {ca_file}: {exc}") from None
    if not tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def warm_ssl_context(tls_verify: bool, ca_file: str | None) -> None:
    """Make the context now (in the supervisor, before the stages fork)."""
    ssl_context(tls_verify, ca_file)
