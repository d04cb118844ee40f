"""Parsing `process -f NAME[:key=value,...]` into filter objects (the rules are in the
package docstring). Imported only by a run that was given a filter."""

from __future__ import annotations

import re

from occystrap.errors import UsageError
from occystrap.filters import NAMES
from occystrap.filters.exclude import Exclude, clean_pattern
from occystrap.filters.inspect import Inspect
from occystrap.filters.normalize_timestamps import NormalizeTimestamps
from occystrap.filters.search import Search

Filter = NormalizeTimestamps | Exclude | Search | Inspect
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
    """One `-f` argument as its filter; UsageError naming what is wrong with it."""
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
