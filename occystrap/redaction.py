"""Secrets out of everything occystrap prints or records.

Pure. A URI as the user typed it may carry secrets: userinfo (`registry://user:pw@host/…`,
`--quay-url https://user:token@quay.example`) and query options (`quay://ns?token=…`). Every
URI that reaches a message, a result line, the summary, `--stats json`/`--stats-file`,
`info`/`check` output or a log line goes through `redact_uri` first (the parsed `Location`
keeps its options; only its display text is redacted). HTTP URLs the client builds or is
sent to (storage redirects carry pre-signed signatures in the query, upload locations an
opaque `_state`) go through `redact_url`, which keeps scheme, host, port and path only.

Query options are redacted unless known to be harmless (an allow list, not a deny list: an
option this code has never heard of, a typo included, may be a secret).
"""

from __future__ import annotations

import urllib.parse

MASK = "REDACTED"

#: URI options whose values are shown as typed: they choose behaviour, they grant nothing.
SAFE_OPTIONS = frozenset(
    {
        "insecure",
        "os",
        "arch",
        "architecture",
        "variant",
        "format",
        "unique_names",
        "expand",
        "preserve_modes",
        "tag_regex",
        "since",
        "socket",
        "referrers",
        "media_types",
    }
)

# Schemes whose text after `//` is a file path (where `@` is just a character), not an
# authority with userinfo.
_PATH_SCHEMES = frozenset({"tar", "file", "oci", "dir", "directory"})


def _split_scheme(text: str) -> tuple[str, str, str]:
    """(scheme, separator, rest): `://` or `:` as parse_location reads them, else ("", "", text)."""
    if "://" in text:
        scheme, rest = text.split("://", 1)
        return scheme, "://", rest
    head, sep, rest = text.partition(":")
    if sep and head and head[0].isalpha() and all(c.isalnum() or c in "+.-" for c in head):
        return head, ":", rest
    return "", "", text


def _redact_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        key, sep, _value = item.partition("=")
        name = urllib.parse.unquote_plus(key).lower()
        parts.append(item if not sep or name in SAFE_OPTIONS else f"{key}={MASK}")
    return "&".join(parts)


def redact_uri(text: str) -> str:
    """`text` (a SOURCE or DESTINATION URI, or anything a user typed as one) with userinfo
    replaced by `REDACTED@` and the value of every query option outside `SAFE_OPTIONS`
    replaced by `REDACTED`. Everything else, the `#NAME:TAG` of a tar source included, is
    kept, so the line still says which image it is about."""
    scheme, sep, rest = _split_scheme(text)
    body, qsep, query = rest.partition("?")
    if sep and scheme.lower() not in _PATH_SCHEMES:
        authority, slash, path = body.partition("/")
        if "@" in authority:
            body = f"{MASK}@{authority.rpartition('@')[2]}{slash}{path}"
    fragment = ""
    if qsep and "#" in query:
        query, _, tail = query.partition("#")
        fragment = f"#{tail}"
    redacted = f"{scheme}{sep}{body}"
    if qsep:
        redacted += f"?{_redact_query(query)}{fragment}"
    return redacted


def redact_url(url: str) -> str:
    """An HTTP(S) URL as `scheme://host[:port]/path`: no userinfo, no query, no fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:  # an IPv6 literal
            netloc = f"[{netloc}]"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
    except ValueError:  # a port that is not a number, an unbalanced bracket
        return MASK
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
