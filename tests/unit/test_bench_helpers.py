"""The benchmark's pure helpers: the WAN link's arithmetic, which repositories a (sub)set
copies and the glob that selects them, the cache key, the computed WAN limits and the
targets' verdicts. The benchmarks themselves run in bench/, never here."""

from __future__ import annotations

import dataclasses

import pytest

from bench.images import cache_dir
from bench.sources import Wan, wan_limits
from bench.specs import IMAGES, ImageSpec, Inputs, command
from bench.targets import Check
from bench.wanproxy import Link


def test_link_delays_each_chunk_and_shares_the_rate() -> None:
    link = Link(delay=0.025, rate=100e6)
    # 1 MB at 100 MB/s takes 10 ms on the link, then 25 ms of flight.
    assert link.schedule(1_000_000, now=1.0) == pytest.approx(1.035)
    # A chunk arriving while the link is busy waits for it (shared by every connection).
    assert link.schedule(1_000_000, now=1.001) == pytest.approx(1.045)
    # After an idle gap the link starts again at the arrival time.
    assert link.schedule(0, now=2.0) == pytest.approx(2.025)


def test_link_buffer_holds_senders_back_when_full() -> None:
    link = Link(delay=0.025, rate=100e6, queue=0.05)
    link.schedule(10_000_000, now=0.0)  # 100 ms of data: the link is busy until 0.1
    assert link.wait_before(0.0) == pytest.approx(0.05)  # 50 ms over the 50 ms buffer
    assert link.wait_before(0.06) == 0.0


def test_link_without_a_rate_only_delays() -> None:
    link = Link(delay=0.0, rate=0.0)
    assert link.schedule(10**9, now=5.0) == 5.0


def test_subset_pattern_selects_exactly_its_names() -> None:
    import fnmatch

    spec = IMAGES["bulk100"]
    names = [n.rsplit("/", 1)[1] for n in spec.names()]
    chosen = [n for n in names if fnmatch.fnmatchcase(n, spec.pattern())]
    assert chosen == [n.rsplit("/", 1)[1] for n in spec.selected()]
    assert len(chosen) == 100
    assert IMAGES["bulk1k"].pattern() == "*" and len(IMAGES["bulk1k"].selected()) == 1000


def test_bulk_names_keep_two_digits_for_small_sets() -> None:
    assert IMAGES["bulk"].names()[:2] == ["bench/bulk/app-00", "bench/bulk/app-01"]
    assert IMAGES["bulk1k"].names()[-1] == "bench/bulk1k/app-999"


def test_subset_must_be_a_power_of_ten() -> None:
    with pytest.raises(ValueError, match="power of ten"):
        dataclasses.replace(IMAGES["bulk100"], subset=50).pattern()


def test_cache_dir_follows_the_bytes_not_the_subset() -> None:
    base = IMAGES["bulk1k"]
    assert cache_dir(base) == cache_dir(IMAGES["bulk100"])
    assert cache_dir(base) != cache_dir(dataclasses.replace(base, seed=base.seed + 1))
    assert cache_dir(base) != cache_dir(dataclasses.replace(base, layers=[1, 2]))


def test_tls_source_commands_trust_the_ca_and_keep_the_destination_plain() -> None:
    inp = Inputs(src="127.0.0.1:1/a:1.0", out="/o", ca_file="/ca.pem", cert_dir="/certs")
    ours = command("occystrap", "registry", inp, dest="127.0.0.1:2/b:1.0")
    assert ours is not None and "--insecure" not in ours
    assert ours[1:3] == ["--ca-file", "/ca.pem"] and ours[-1].endswith("?insecure=true")
    skopeo = command("skopeo", "registry", inp, dest="127.0.0.1:2/b:1.0")
    assert skopeo is not None and "--src-cert-dir=/certs" in skopeo
    plain = command("occystrap", "registry", Inputs(src="127.0.0.1:1/a:1.0", out="/o"))
    assert plain is not None and "--insecure" in plain


def test_wan_limits_take_the_link_or_the_loopback_limit() -> None:
    local = {
        "resources": {"read": 1.0},
        "workflows": {"oci": 1.0, "noop": 0.001},
        "packed_bytes": 500e6,
        "all_bytes": 500e6,
    }
    got = wan_limits(local, Wan(delay_ms=25, rate_mb_s=100))
    assert got["workflows"]["oci"] == pytest.approx(5.0 + 0.15)  # 500 MB at 100 MB/s
    assert got["workflows"]["noop"] == pytest.approx(0.15)  # three round trips
    fast = wan_limits(local, Wan(delay_ms=0, rate_mb_s=1000))
    assert fast["workflows"]["oci"] == pytest.approx(1.0)  # the loopback limit is longer


def test_check_verdicts() -> None:
    assert Check("x", 0.5, "≤", 0.5).met() is True
    assert Check("x", 0.5, "<", 0.5).met() is False
    assert Check("x", None, "≤", 1.0).met() is None


def test_image_spec_workflows() -> None:
    assert "fixed" in IMAGES["small"].workflows()
    assert "fixed" not in IMAGES["1g"].workflows()
    assert IMAGES["bulk1k"].workflows() == ["bulk", "bulk-noop"]
    assert isinstance(IMAGES["2g"], ImageSpec) and IMAGES["2g"].compressible == 0.0


def test_bulk_recode_is_ours_with_a_layer_cache_on_the_bulk_set_only() -> None:
    inp = Inputs(src="127.0.0.1:1/bench/bulk", out="/o", layer_cache="/w/cache.json")
    ours = command("occystrap", "bulk-recode", inp)
    assert ours is not None
    assert ours[ours.index("--layer-cache") + 1] == "/w/cache.json"
    assert ours[ours.index("--compression") + 1] == "zstd"
    assert command("skopeo", "bulk-recode", inp) is None
    assert "bulk-recode" in IMAGES["bulk"].workflows()
    assert "bulk-recode" not in IMAGES["bulk1k"].workflows()
