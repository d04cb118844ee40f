"""`process -f NAME[:key=value,...]`: filters, applied in the order given.

Filters that rewrite layers (`normalize-timestamps`, `exclude`) run in the compress stage,
member by member (see `layer.py`); `search` looks at members on the way; `inspect` writes
its report in the write stage, when an image is complete. Any filter makes the compress
stage read every layer, so a run with filters fetches every layer even when the destination
already has it, and never skips an image as up to date.

Option values are strings, never guessed at (`ts=0` is the number 0, `pattern=1` the glob
"1"); booleans are spelt true/false (yes/no, 1/0, on/off). Options are separated by commas
that start another `key=`: a comma inside a value (`regex=a{1,3}`) stays in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from occystrap.errors import UsageError
from occystrap.filters.exclude import Exclude, clean_pattern
from occystrap.filters.inspect import Inspect
from occystrap.filters.normalize_timestamps import NormalizeTimestamps
from occystrap.filters.search import Search

Filter = NormalizeTimestamps | Exclude | Search | Inspect

NAMES = ("normalize-timestamps", "exclude", "search", "inspect")
_OPTION_SPLIT = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_-]*=)")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


def _bool(spec: str, key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise UsageError(f"filter {spec!r}: {key}={value!r} is not true or false")


def _options(spec: str, text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    if not text:
        return options
    for part in _OPTION_SPLIT.split(text):
        key, eq, value = part.partition("=")
        key = key.strip().lower().replace("_", "-")
        if not eq or not key:
            raise UsageError(f"filter {spec!r}: option {part!r} is not key=value")
        if key in options:
            raise UsageError(f"filter {spec!r}: {key} given twice")
        options[key] = value
    return options


def _only(spec: str, options: dict[str, str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UsageError(
            f"filter {spec!r}: unknown option {unknown[0]!r} (it takes {', '.join(allowed)})"
        )


def parse_filter(spec: str) -> Filter:
    name, _, rest = spec.partition(":")
    name = name.strip().lower().replace("_", "-")
    options = _options(spec, rest)
    if name == "normalize-timestamps":
        _only(spec, options, ("ts", "timestamp", "config"))
        if "ts" in options and "timestamp" in options:
            raise UsageError(f"filter {spec!r}: give ts or timestamp, not both")
        raw = options.get("ts", options.get("timestamp", "0"))
        try:
            ts = int(raw)
        except ValueError:
            raise UsageError(
                f"filter {spec!r}: ts={raw!r} is not a whole number of seconds"
            ) from None
        if not 0 <= ts < 8**11:
            raise UsageError(f"filter {spec!r}: ts={ts} is out of range")
        return NormalizeTimestamps(ts, _bool(spec, "config", options.get("config", "false")))
    if name == "exclude":
        _only(spec, options, ("pattern",))
        patterns = tuple(
            p for p in (clean_pattern(x) for x in re.split("[;,]", options.get("pattern", ""))) if p
        )
        if not patterns:
            raise UsageError(f"filter {spec!r}: needs pattern=GLOB[;GLOB...]")
        return Exclude(patterns)
    if name == "search":
        _only(spec, options, ("pattern", "regex", "script-friendly"))
        friendly = _bool(spec, "script_friendly", options.get("script-friendly", "false"))
        pattern, regex = options.get("pattern"), options.get("regex")
        if pattern is not None and regex is not None:
            # The original occystrap's spelling: pattern=RE,regex=true
            if regex.lower() not in _TRUE + _FALSE:
                raise UsageError(f"filter {spec!r}: give pattern=GLOB or regex=RE, not both")
            search = Search(pattern, _bool(spec, "regex", regex), friendly)
        elif pattern is not None:
            search = Search(pattern, False, friendly)
        elif regex is not None:
            search = Search(regex, True, friendly)
        else:
            raise UsageError(f"filter {spec!r}: needs pattern=GLOB or regex=RE")
        if not search.pattern:
            raise UsageError(f"filter {spec!r}: the pattern is empty")
        search.match  # noqa: B018 - a bad regular expression fails here, before the run
        return search
    if name == "inspect":
        _only(spec, options, ("file",))
        if not options.get("file"):
            raise UsageError(f"filter {spec!r}: needs file=PATH")
        return Inspect(options["file"])
    raise UsageError(f"unknown filter {name!r} (known: {', '.join(NAMES)})")


@dataclass(frozen=True)
class FilterChain:
    filters: tuple[Filter, ...] = ()

    @classmethod
    def parse(cls, specs: tuple[str, ...] | list[str]) -> FilterChain:
        return cls(tuple(parse_filter(s) for s in specs))

    def __bool__(self) -> bool:
        return bool(self.filters)

    @property
    def rewrites(self) -> bool:
        """Layers (and with them the config and manifest) get new bytes."""
        return any(isinstance(f, NormalizeTimestamps | Exclude) for f in self.filters)

    @property
    def reads_layers(self) -> bool:
        return bool(self.filters)

    @property
    def searches(self) -> list[tuple[int, Search]]:
        return [(n, f) for n, f in enumerate(self.filters) if isinstance(f, Search)]

    @property
    def inspects(self) -> list[Inspect]:
        return [f for f in self.filters if isinstance(f, Inspect)]

    def rewrite_config(self, doc: dict[str, Any]) -> None:
        for f in self.filters:
            if isinstance(f, NormalizeTimestamps):
                f.rewrite_config(doc)
