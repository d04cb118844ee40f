"""--from-file: the images of a bulk run, from a plain list or a JSON mirror spec.

A list has one source URI per line (blank lines and `#` comments ignored). A spec is JSON
or YAML (a file whose first entry is `mirrors:`), validated by msgspec:

    {"mirrors": [{"source": "registry://src/app", "destination": "registry://dst/app",
                  "tags": ["1.0", "1.1"]}]}

    mirrors:
      - source: registry://src/app
        destination: registry://dst/app
        tags: ["1.0", "1.1"]

`destination` is optional (the command line's is used); `tags` expands a source given
without a tag; `referrers: true` copies the source's referrers too (as `--referrers`, for
that source only: it becomes `?referrers=true` on the source URI). Errors name the line.
"""

from __future__ import annotations

import importlib

import msgspec

from occystrap.errors import UsageError
from occystrap.redaction import redact_uri
from occystrap.reference import Location, parse_location


class Mirror(msgspec.Struct, forbid_unknown_fields=True):
    source: str
    destination: str | None = None
    tags: list[str] | None = None
    referrers: bool = False  # as --referrers, for this source only


class Spec(msgspec.Struct, forbid_unknown_fields=True):
    mirrors: list[Mirror]


def _line_of(text: str, message: str) -> str:
    """msgspec reports byte offsets (`... (byte 123)`); people read lines."""
    import re

    match = re.search(r"byte (\d+)", message)
    if not match:
        return message
    line = text.encode()[: int(match.group(1))].count(b"\n") + 1
    return f"line {line}: {message}"


def _with_tag(source: str, tag: str, where: str) -> str:
    base, _, query = source.partition("?")
    last = base.rsplit("/", 1)[-1]
    if ":" in last or "@" in last:
        raise UsageError(f"{where}: 'tags' needs a source without a tag ({redact_uri(source)})")
    return f"{base}:{tag}" + (f"?{query}" if query else "")


def _with_option(source: str, option: str) -> str:
    return f"{source}{'&' if '?' in source else '?'}{option}"


def load(path: str) -> list[tuple[Location, str | None]]:
    """(source, destination or None) pairs, in file order."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise UsageError(f"--from-file {path}: {exc.strerror}") from None
    first = next(
        (ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")),
        "",
    )
    if first.startswith("{") or first.startswith("mirrors:"):
        if first.startswith("{"):
            decode = msgspec.json.decode
        else:  # PyYAML underneath: imported only for a YAML spec
            decode = importlib.import_module("msgspec.yaml").decode
        try:
            spec = decode(text, type=Spec)
        except msgspec.ValidationError as exc:
            raise UsageError(f"--from-file {path}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise UsageError(f"--from-file {path}: {_line_of(text, str(exc))}") from None
        pairs = []
        for n, mirror in enumerate(spec.mirrors):
            where = f"--from-file {path}: mirrors[{n}]"
            sources = (
                [_with_tag(mirror.source, t, where) for t in mirror.tags]
                if mirror.tags
                else [mirror.source]
            )
            if mirror.referrers:
                sources = [_with_option(s, "referrers=true") for s in sources]
            for source in sources:
                try:
                    pairs.append((parse_location(source, role="source"), mirror.destination))
                except UsageError as exc:
                    raise UsageError(f"{where}: {exc}") from None
        return pairs
    pairs = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            pairs.append((parse_location(line, role="source"), None))
        except UsageError as exc:
            raise UsageError(f"--from-file {path}: line {number}: {exc}") from None
    if not pairs:
        raise UsageError(f"--from-file {path}: no images listed")
    return pairs


def plan_runs(
    uris: tuple[str, ...], from_file: str | None
) -> list[tuple[Location, list[Location]]]:
    """`process`'s runs as (destination, sources): one for SOURCE DESTINATION, one per
    destination of a --from-file spec (whose sources without one go to DESTINATION).
    UsageError for a wrong number of URIs or a source with nowhere to go."""
    if from_file is None:
        if len(uris) != 2:
            raise UsageError("process takes SOURCE DESTINATION (or --from-file FILE DESTINATION)")
        return [
            (parse_location(uris[1], role="destination"), [parse_location(uris[0], role="source")])
        ]
    if len(uris) > 1:
        raise UsageError("with --from-file, give only the DESTINATION")
    default = uris[0] if uris else None
    groups: dict[str, list[Location]] = {}
    for src, dest in load(from_file):
        target = dest or default
        if target is None:
            raise UsageError(
                f"--from-file {from_file}: {src} has no destination; give one on the command line"
            )
        groups.setdefault(target, []).append(src)
    return [(parse_location(d, role="destination"), s) for d, s in groups.items()]
