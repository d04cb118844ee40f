"""Running the workflows of one image set: its physical limits, every tool interleaved against
a fresh destination each run, and one extra run of ours with ``--stats-file``."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from bench import fixedcost, limits
from bench.images import blob_refs, build_and_push, layer_regions, write_sync_yaml
from bench.measure import RunResult, run_measured
from bench.sources import Site, Sources, wan_limits
from bench.specs import (
    BULK_TAG,
    BULK_WORKFLOWS,
    FIXED,
    OURS,
    PUSHES,
    RECODE,
    RERUNS,
    UNSUPPORTED,
    UNSUPPORTED_INDEX,
    WAN_WORKFLOWS,
    ImageSpec,
    Inputs,
    command,
    tool_env,
)
from bench.wanproxy import WanProxy
from tools.testregistry import TestRegistry


@dataclass
class ToolResult:
    """Every timed run of one tool on one workflow."""

    times: list[float] = field(default_factory=list)
    peak_pss: list[int] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self)
        if self.times:
            out.update(
                median=statistics.median(self.times),
                min=min(self.times),
                max=max(self.times),
                max_pss=max(self.peak_pss),
                max_rss=max(self.peak_rss),
            )
        return out


def settle() -> None:
    """Let the last run's writeback finish so it does not bill the next run."""
    os.sync()
    time.sleep(1.0)


def measure_limits(
    spec: ImageSpec,
    registry: TestRegistry,
    one: list[limits.BlobRef],
    every: list[limits.BlobRef],
    work: str,
    tarball: str = "",
) -> dict[str, object]:
    """Each resource alone, then each workflow's limit as the largest resource it needs.

    ``one``: the distinct blobs of what a single-image output holds (an index's first
    platform); ``every``: all distinct blobs (pushes of an index move every platform; a bulk
    set's images).
    """
    cores = os.cpu_count() or 1
    if spec.count > 1:
        return measure_bulk_limits(spec, registry, every, cores)
    packed = sum(b.size for b in one)
    gunzip, unpacked = limits.gunzip_seconds(one, cores)
    res: dict[str, float] = {
        "read": limits.read_seconds(registry.host, spec.repo, one),
        "read_all": limits.read_seconds(registry.host, spec.repo, every),
        "sha256": limits.sha256_seconds(one, cores),
        "sha256_all": limits.sha256_seconds(every, cores),
        "gunzip": gunzip,
        "write_packed": limits.write_seconds(work, packed),
        "write_unpacked": limits.write_seconds(work, unpacked),
        "upload": limits.upload_seconds(lambda: TestRegistry().start(), every),
        "head": limits.head_seconds(registry.host, spec.repo, "1.0"),
    }
    per_workflow = {
        "dir": max(res["read"], res["sha256"], res["gunzip"], res["write_unpacked"]),
        "tar": max(res["read"], res["sha256"], res["write_packed"]),
        "oci": max(res["read"], res["sha256"], res["write_packed"]),
        "registry": max(res["read_all"], res["sha256_all"], res["upload"]),
        "noop": res["head"],
    }
    if tarball:
        # Pushing a tarball of uncompressed layers: gzip every byte (the CPU floor), hash
        # what it pushes, and upload about what the registry's own gzip blobs weigh.
        res["gzip"] = limits.gzip_seconds(layer_regions(tarball), cores)
        per_workflow["tar2reg"] = max(res["gzip"], res["sha256"], res["upload"])
    return {
        "resources": res,
        "workflows": per_workflow,
        "packed_bytes": packed,
        "unpacked_bytes": unpacked,
        "all_bytes": sum(b.size for b in every),
    }


def measure_bulk_limits(
    spec: ImageSpec, registry: TestRegistry, every: list[limits.BlobRef], cores: int
) -> dict[str, object]:
    """A bulk mirror must read, hash and upload every distinct blob once (the shared base
    once: later repositories mount it); its re-run must at least HEAD every manifest, four at
    a time."""
    first = spec.selected()[0]
    res: dict[str, float] = {
        "read_all": limits.read_seconds(registry.host, spec.repo, every),
        "sha256_all": limits.sha256_seconds(every, cores),
        "upload": limits.upload_seconds(lambda: TestRegistry().start(), every),
        "head": limits.head_seconds(registry.host, first, BULK_TAG),
    }
    count = len(spec.selected())
    heads = res["head"] * math.ceil(count / limits.THREADS)
    per_workflow = {
        "bulk": max(res["read_all"], res["sha256_all"], res["upload"]),
        "bulk-noop": heads,
    }
    nbytes = sum(b.size for b in every)
    return {
        "resources": res,
        "workflows": per_workflow,
        "packed_bytes": nbytes,
        "all_bytes": nbytes,
        "images": count,
    }


def dest_repo(workflow: str) -> str:
    """Where a push goes in its fresh registry: a name, or a prefix for a bulk mirror."""
    return "mirror" if workflow in (*BULK_WORKFLOWS, RECODE) else "copy/app:1.0"


def one_run(
    cmd: list[str],
    workflow: str,
    work: str,
    env: dict[str, str] | None = None,
    dest_proxy: dict[str, float] | None = None,
) -> tuple[RunResult, Callable[[], None]]:
    """Prepare a fresh destination (behind a WAN proxy of its own when ``dest_proxy`` gives
    its arguments), run once, return the result and a cleanup."""
    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    dest_reg: TestRegistry | None = None
    proxy: WanProxy | None = None
    layer_cache = os.path.join(work, "layer-cache.json")

    def cleanup() -> None:
        if os.path.exists(layer_cache):  # bulk-recode's: each run starts without one
            os.unlink(layer_cache)
        if proxy is not None:
            proxy.stop()
        if dest_reg is not None:
            dest_reg.stop()
        shutil.rmtree(out, ignore_errors=True)

    if workflow in PUSHES:
        # A fresh registry each run: skopeo remembers where it saw blobs and would mount
        # them from an earlier run's copy; a re-run must start from one completed copy.
        dest_reg = TestRegistry().start()
        host = dest_reg.host
        if dest_proxy is not None:
            proxy = WanProxy(host, **dest_proxy).start()
            host = proxy.host
        timed = [c.replace("@DEST@", f"{host}/{dest_repo(workflow)}") for c in cmd]
        if workflow in RERUNS:
            # bulk-recode: the first run fills another prefix, so the timed one lands in new
            # repositories of a registry that holds the re-encoded layers elsewhere.
            first = "mirror-first" if workflow == RECODE else dest_repo(workflow)
            prime = run_measured([c.replace("@DEST@", f"{host}/{first}") for c in cmd], env=env)
            if prime.exit_code != 0:
                return prime, cleanup
        cmd = timed
    settle()
    return run_measured(cmd, env=env), cleanup


def _stats_summary(doc: dict) -> dict[str, object]:
    """What the docs use from one ``--stats-file``: the verdict, each stage's busy, CPU and
    bytes, and for several images how the per-image results read."""
    stages = []
    for s in doc.get("stages", []):
        row = {
            k: s.get(k)
            for k in (
                "stage",
                "busy_seconds",
                "wait_in_seconds",
                "wait_out_seconds",
                "cpu_seconds",
                "peak_pss",
                "bytes_in",
                "bytes_out",
            )
        }
        row["bytes_received"] = (s.get("requests") or {}).get("bytes_received")
        stages.append(row)
    per_image = [r.get("seconds") or 0.0 for r in doc.get("image_results", [])]
    out = {
        "wall_seconds": doc.get("wall_seconds"),
        "peak_pss_total": doc.get("peak_pss_total"),
        "bottleneck": doc.get("bottleneck"),
        "stages": stages,
        "images": doc.get("images"),
        "requests": (doc.get("requests") or {}).get("total"),
        "transfer": doc.get("transfer"),
    }
    if len(per_image) > 1:
        per_image.sort()
        out["per_image_seconds"] = {
            "n": len(per_image),
            "median": statistics.median(per_image),
            "p90": per_image[int(0.9 * (len(per_image) - 1))],
            "max": per_image[-1],
        }
    return out


def stats_run(
    cmd: list[str],
    workflow: str,
    work: str,
    env: dict[str, str] | None = None,
    dest_proxy: dict[str, float] | None = None,
) -> dict[str, object]:
    """One extra untimed run of ours with --stats-file: which stage was busiest, and why."""
    path = os.path.join(work, "stats.json")
    stats_cmd = [cmd[0], "--stats-file", path, *cmd[1:]]
    result, cleanup = one_run(stats_cmd, workflow, work, env, dest_proxy)
    try:
        if result.exit_code != 0 or not os.path.exists(path):
            return {"error": result.stderr[-500:]}
        with open(path) as f:
            return _stats_summary(json.load(f))
    finally:
        cleanup()
        if os.path.exists(path):
            os.unlink(path)


def run_workflow(
    wf: str,
    tools: list[str],
    inp: Inputs,
    site: Site,
    args: argparse.Namespace,
    work: str,
    env: dict[str, str] | None,
) -> dict[str, object]:
    """Every tool that can, interleaved (warm-up rounds first), then ours with --stats-file."""
    cmds = {t: command(t, wf, inp) for t in tools}
    runnable = [t for t, c in cmds.items() if c is not None]
    results = {t: ToolResult() for t in runnable}
    for i in range(args.warmup + args.runs):
        for t in runnable:
            cmd = cmds[t]
            assert cmd is not None
            res, cleanup = one_run(cmd, wf, work, tool_env(t, inp, env), site.dest_proxy)
            cleanup()
            label = "warm-up" if i < args.warmup else f"run {i - args.warmup + 1}"
            status = "" if res.exit_code == 0 else f"  FAILED ({res.exit_code})"
            print(
                f"   {wf:<11} {t:<17} {label:<8} {res.wall:7.2f} s  "
                f"{res.peak_pss / 1e6:7.1f} MB{status}",
                flush=True,
            )
            if i < args.warmup:
                continue
            if res.exit_code != 0:
                results[t].failures.append(res.stderr[-800:])
                continue
            results[t].times.append(res.wall)
            results[t].peak_pss.append(res.peak_pss)
            results[t].peak_rss.append(res.peak_rss)
    entry: dict[str, object] = {
        "tools": {t: r.summary() for t, r in results.items()},
        "unsupported": {
            t: (UNSUPPORTED.get((t, wf)) or UNSUPPORTED_INDEX.get((t, wf), ""))
            for t, c in cmds.items()
            if c is None
        },
    }
    ours = cmds.get("occystrap")
    if ours is not None and not args.no_stats:
        entry["stats"] = stats_run(ours, wf, work, env, site.dest_proxy)
    return entry


def bench_image(
    spec: ImageSpec,
    sources: Sources,
    tools: list[str],
    workflows: list[str],
    profiles: list[str],
    args: argparse.Namespace,
    work: str,
    env: dict[str, str] | None = None,
) -> dict[str, dict[str, object]]:
    """Build (or open the cached copy of) one image set, then run its workflows in each
    profile. Returns one entry per profile, keyed ``KEY`` (loopback) or ``KEY@wan``."""
    workflows = [w for w in workflows if w in spec.workflows()]
    registry, refs = sources.registry(spec)
    build = os.path.join(work, f"build-{spec.key}")
    index = None
    if refs is None:
        print(f"\n== {spec.key}: building and pushing ({spec.about})", flush=True)
        images, index = build_and_push(spec, registry, build)
        # The registry has just written the whole set: flush it now, or its writeback runs
        # under the first workflows' timed runs (a 2 GiB push took a third longer to
        # copy to oci:// in the runs right after it).
        os.sync()
        refs = blob_refs(images, spec.names() if spec.count > 1 else None)
        one = refs if spec.count > 1 else blob_refs(images[:1])
    else:
        print(f"\n== {spec.key}: cached ({spec.about})", flush=True)
        one = refs
    tarball = ""
    if "tar2reg" in workflows and "loopback" in profiles:
        # The input of tar2reg, made once and untimed: what `docker save` wrote before
        # Docker 25 (legacy layout, uncompressed layer.tar members); skopeo and 0.4.17 read it.
        tarball = os.path.join(work, f"save-{spec.key}.tar")
        subprocess.run(
            [
                OURS,
                "--insecure",
                "-q",
                "process",
                f"registry://{registry.host}/{spec.repo}:1.0",
                f"tar://{tarball}?format=v1.2",
            ],
            check=True,
            env=env,
        )
    out: dict[str, dict[str, object]] = {}
    local: dict[str, object] | None = None
    try:
        for profile in profiles:
            wfs = [w for w in workflows if profile == "loopback" or w in WAN_WORKFLOWS]
            if not wfs:
                continue
            site = sources.site(registry, profile)
            key = spec.key if profile == "loopback" else f"{spec.key}@{profile}"
            print(f"-- {key}: {', '.join(wfs)}", flush=True)
            entry: dict[str, object] = {
                "about": spec.about,
                "repo": spec.repo,
                "layers": len(spec.layers),
                "profile": profile,
                "count": len(spec.selected()),
                "platforms": spec.platforms,
                "workflows": {},
            }
            entry["limits"] = _limits(
                spec, registry, (one, refs), work, tarball, args, profile, local, sources
            )
            if profile == "loopback":
                local = entry["limits"]  # type: ignore[assignment]
            inp = _inputs(spec, site, work, index is not None, tarball)
            for wf in wfs:
                if wf == FIXED:
                    print("   fixed costs (start-up, first request, exit)", flush=True)
                    entry["fixed"] = fixedcost.measure(
                        registry, spec.repo, tools, args.runs, args.warmup, work, env
                    )
                    continue
                entry["workflows"][wf] = run_workflow(  # type: ignore[index]
                    wf, tools, inp, site, args, work, env
                )
            out[key] = entry
    finally:
        shutil.rmtree(build, ignore_errors=True)
        if tarball:
            os.unlink(tarball)
    return out


def _limits(
    spec: ImageSpec,
    registry: TestRegistry,
    blobs: tuple[list[limits.BlobRef], list[limits.BlobRef]],
    work: str,
    tarball: str,
    args: argparse.Namespace,
    profile: str,
    local: dict[str, object] | None,
    sources: Sources,
) -> dict[str, object]:
    """Measured on loopback; computed from those (or from the bytes alone) for the WAN."""
    one, every = blobs
    if profile == "loopback" and not args.no_limits:
        print("   measuring physical limits", flush=True)
        lim = measure_limits(spec, registry, one, every, work, tarball)
    elif profile != "loopback" and local is not None:
        return wan_limits(local, sources.wan, len(spec.selected()))
    else:
        lim = {"packed_bytes": sum(b.size for b in one), "all_bytes": sum(b.size for b in every)}
        if profile != "loopback":
            return wan_limits(lim, sources.wan, len(spec.selected()))
    if tarball:
        lim["tarball_bytes"] = os.path.getsize(tarball)
    return lim


def _inputs(spec: ImageSpec, site: Site, work: str, index: bool, tarball: str) -> Inputs:
    out = os.path.join(work, "out")
    if spec.count > 1:
        sync_yaml = os.path.join(work, f"sync-{spec.key}-{site.profile}.yaml")
        write_sync_yaml(sync_yaml, site.host, spec.selected(), site.cert_dir)
        return Inputs(
            src=f"{site.host}/{spec.repo}",
            out=out,
            sync_yaml=sync_yaml,
            pattern=spec.pattern(),
            ca_file=site.ca_file,
            cert_dir=site.cert_dir,
            layer_cache=os.path.join(work, "layer-cache.json"),
        )
    return Inputs(
        src=f"{site.host}/{spec.repo}:1.0",
        out=out,
        index=index,
        tarball=tarball if site.profile == "loopback" else "",
        ca_file=site.ca_file,
        cert_dir=site.cert_dir,
    )
