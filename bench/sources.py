"""Where the tools read from: the source registries of one harness run, and for the WAN
profile the same storage served over TLS behind the latency proxy (bench/wanproxy.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench import limits
from bench.images import Twin, cache_dir, open_cached
from bench.specs import ImageSpec
from bench.wanproxy import WanProxy
from tools.testregistry import TestRegistry


@dataclass(frozen=True)
class Wan:
    """The WAN profile's link: one-way delay, bandwidth per direction, and whether fresh
    destination registries sit behind a link of their own too (``dest``)."""

    delay_ms: float = 25.0
    rate_mb_s: float = 100.0
    dest: bool = False

    @property
    def rtt(self) -> float:
        """Round trip in seconds."""
        return 2 * self.delay_ms / 1000

    def proxy_args(self) -> dict[str, float]:
        return {"delay_ms": self.delay_ms, "rate_mb_s": self.rate_mb_s}

    def describe(self) -> str:
        side = "source and destination registries" if self.dest else "the source registry"
        return (
            f"{self.delay_ms:g} ms each way ({self.rtt * 1000:g} ms round trip), "
            f"{self.rate_mb_s:g} MB/s each way shared by all connections behind a buffer "
            f"of one round trip, 4 MiB in flight per connection, TLS, in front of {side}"
        )


@dataclass(frozen=True)
class Site:
    """What the commands of one profile name as their source and how they trust it."""

    profile: str  # "loopback" or "wan"
    host: str  # 127.0.0.1:PORT the tools connect to
    ca_file: str = ""
    cert_dir: str = ""
    dest_proxy: dict[str, float] | None = None  # WanProxy arguments for each fresh destination


@dataclass
class Sources:
    """The registries a harness run reads from, started on first use and stopped together:
    one for the images built in this run, one per cached set (its storage in bench/.cache),
    and for the WAN profile a TLS twin of each plus a proxy in front of it."""

    work: str
    wan: Wan = field(default_factory=Wan)
    _main: TestRegistry | None = None
    _cached: dict[str, tuple[TestRegistry, list[limits.BlobRef]]] = field(default_factory=dict)
    _wan: dict[int, tuple[Twin, WanProxy]] = field(default_factory=dict)

    def registry(self, spec: ImageSpec) -> tuple[TestRegistry, list[limits.BlobRef] | None]:
        """The registry holding ``spec``; for a cached set also its distinct blobs (a built
        set's come from building it: None)."""
        if spec.cached:
            where = cache_dir(spec)
            if where not in self._cached:
                self._cached[where] = open_cached(spec)
            reg, refs = self._cached[where]
            names = set(spec.selected())
            return reg, [r for r in refs if r.repo in names]
        if self._main is None:
            self._main = TestRegistry().start()
        return self._main, None

    def site(self, registry: TestRegistry, profile: str) -> Site:
        if profile == "loopback":
            return Site("loopback", registry.host)
        if registry.port not in self._wan:
            twin = Twin(registry, self.work)
            proxy = WanProxy(twin.registry.host, **self.wan.proxy_args()).start()
            self._wan[registry.port] = (twin, proxy)
        twin, proxy = self._wan[registry.port]
        return Site(
            "wan",
            proxy.host,
            twin.ca_file,
            twin.cert_dir,
            self.wan.proxy_args() if self.wan.dest else None,
        )

    def stop(self) -> None:
        for twin, proxy in self._wan.values():
            proxy.stop()
            twin.stop()
        for reg, _ in self._cached.values():
            reg.stop()
        if self._main is not None:
            self._main.stop()


def wan_limits(local: dict[str, object], wan: Wan, count: int = 1) -> dict[str, object]:
    """The WAN profile's limits, computed (not measured): the loopback limit of the workflow
    or what the link allows, whichever is longer. The link moves the compressed bytes at its
    rate after a TCP and a TLS round trip and the request's own; a re-run HEADs each image's
    manifest, four at a time like the loopback limit, after the two set-up round trips."""
    res = dict(local.get("resources", {}))  # type: ignore[arg-type]
    per_local: dict[str, float] = dict(local.get("workflows", {}))  # type: ignore[arg-type]
    rate = wan.rate_mb_s * 1e6 or math.inf
    packed = float(local.get("packed_bytes", 0))  # type: ignore[arg-type]
    every = float(local.get("all_bytes", packed))  # type: ignore[arg-type]
    setup = 3 * wan.rtt
    wire = {
        "dir": packed / rate + setup,
        "tar": packed / rate + setup,
        "oci": packed / rate + setup,
        "registry": every / rate + setup,
        "noop": setup,
        "bulk": every / rate + setup,
        "bulk-noop": 2 * wan.rtt + math.ceil(count / limits.THREADS) * wan.rtt,
    }
    res["wire"] = wire["bulk" if count > 1 else "oci"]
    out = {wf: max(per_local.get(wf, 0.0), w) for wf, w in wire.items()}
    return {**local, "resources": res, "workflows": out, "computed": True}
