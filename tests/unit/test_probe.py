"""resolve's questions to the destination (destinations.Probe.blob_state): a blob found
missing in one repository is not HEADed again in the run (the write stage mounts it from
where the run sends it); a blob found present is asked about again for each repository;
a destination without a registry client answers from its own files."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from occystrap.destinations import Probe
from occystrap.reference import ImageRef

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class _Client:
    """A stand-in registry client: HEAD answers from a set of (repository, digest)."""

    def __init__(self, holds: set[tuple[str, str]]) -> None:
        self.holds = holds
        self.heads: list[tuple[str, str]] = []

    def blob_exists(self, name: str, digest: str) -> int | None:
        self.heads.append((name, digest))
        return 1 if (name, digest) in self.holds else None


def _probe(client: Any = None, local: frozenset[str] = frozenset()) -> Probe:
    dest = SimpleNamespace(is_registry=False, has_layer=lambda digest, size: digest in local)
    probe = Probe(dest, config=None)  # type: ignore[arg-type]
    probe._client = client
    return probe


def test_a_missing_blob_is_asked_about_once() -> None:
    client = _Client({("m/c", B)})
    probe = _probe(client)
    one, two = ImageRef("r", "m/a"), ImageRef("r", "m/b")
    assert probe.blob_state(A, 1, one) == "missing"
    assert probe.blob_state(A, 1, two) == "sending"  # the run sends it to m/a: no HEAD
    assert client.heads == [("m/a", A)]
    # present somewhere says nothing about another repository: asked again each time
    assert probe.blob_state(B, 1, ImageRef("r", "m/c")) == "present"
    assert probe.blob_state(B, 1, one) == "missing"
    assert client.heads == [("m/a", A), ("m/c", B), ("m/a", B)]


def test_without_a_registry_the_destination_answers() -> None:
    probe = _probe(None, local=frozenset({A}))
    assert probe.blob_state(A, 1, ImageRef("r", "m/a")) == "present"
    assert probe.blob_state(B, 1) == "missing"
    assert probe.blob_state(B, 1) == "missing"  # never "sending": nothing is mounted there
