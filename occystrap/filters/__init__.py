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

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from typing import TypeAlias

    from occystrap.filters.exclude import Exclude
    from occystrap.filters.inspect import Inspect
    from occystrap.filters.normalize_timestamps import NormalizeTimestamps
    from occystrap.filters.search import Search

    Filter: TypeAlias = NormalizeTimestamps | Exclude | Search | Inspect

# The filter modules (tarfile, the layer reader, regular expressions) load only when a run
# was given a filter: parse_filter imports them, and FilterChain's questions about the kinds
# it holds import them only when it holds any (then they are loaded already).
NAMES = ("normalize-timestamps", "exclude", "search", "inspect")


def parse_filter(spec: str) -> Filter:
    """One `-f` argument (NAME[:key=value,...]) as its filter; UsageError naming what is
    wrong with it."""
    from occystrap.filters.parse import parse_filter as parse

    return parse(spec)


class FilterChain(msgspec.Struct, frozen=True):
    """The `-f` filters of a run, in the order given (empty: no filter)."""

    filters: tuple[Filter, ...] = ()

    @classmethod
    def parse(cls, specs: tuple[str, ...] | list[str]) -> FilterChain:
        return cls(tuple(parse_filter(s) for s in specs))

    def __bool__(self) -> bool:
        return bool(self.filters)

    @property
    def rewrites(self) -> bool:
        """Layers (and with them the config and manifest) get new bytes."""
        if not self.filters:
            return False
        from occystrap.filters.exclude import Exclude
        from occystrap.filters.normalize_timestamps import NormalizeTimestamps

        return any(isinstance(f, NormalizeTimestamps | Exclude) for f in self.filters)

    @property
    def reads_layers(self) -> bool:
        return bool(self.filters)

    @property
    def searches(self) -> list[tuple[int, Search]]:
        if not self.filters:
            return []
        from occystrap.filters.search import Search

        return [(n, f) for n, f in enumerate(self.filters) if isinstance(f, Search)]

    @property
    def inspects(self) -> list[Inspect]:
        if not self.filters:
            return []
        from occystrap.filters.inspect import Inspect

        return [f for f in self.filters if isinstance(f, Inspect)]

    def rewrite_config(self, doc: dict[str, Any]) -> None:
        """normalize-timestamps with config=true: the config's times (in place)."""
        if not self.filters:
            return
        from occystrap.filters.normalize_timestamps import NormalizeTimestamps

        for f in self.filters:
            if isinstance(f, NormalizeTimestamps):
                f.rewrite_config(doc)
