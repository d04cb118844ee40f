"""occystrap against skopeo and the original occystrap 0.4.17, side by side on one machine.

    bench/run.sh                                  # sets up, then everything, 5 runs each
    bench/run.sh --images 1g --runs 3 --write-docs
    .venv/bin/python -m bench --images 100m --tools occystrap,skopeo --workflows tar,oci
    .venv/bin/python -m bench --images bulk --workflows bulk,bulk-noop --runs 3

Performance claims must come from something anyone can rerun, comparing us with what users
would pick instead, in the same run (machines drift: a number from yesterday is not a
baseline). So this starts its own loopback registry, pushes deterministic images, and for each
workflow runs every tool that can do it, interleaved (A B C A B C …) after a warm-up round, each
against a fresh destination (a new registry for pushes, so nobody mounts or skips blobs left by
an earlier run). It reports medians, min–max, ratios of medians, peak memory of the whole
process tree, and the physical limit of the workflow on this machine (see bench/limits.py).
Results go to bench/results/bench-<time>.json; ``--write-docs`` regenerates docs/benchmarks.md.

Single images get the single-image workflows (registry → dir / tar / oci / registry, the no-op
re-run, and a `docker save` tarball → registry); the bulk set (IMAGES["bulk"], many small images
on a shared base) gets the bulk mirror and its no-op re-run, against ``skopeo sync``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import limits  # noqa: E402
from bench.measure import RunResult, run_measured  # noqa: E402
from tools.imagebuilder import (  # noqa: E402
    BuiltImage,
    BuiltIndex,
    build_image,
    build_index,
    push_image,
    push_index,
)
from tools.testregistry import TestRegistry  # noqa: E402

MiB = 1 << 20
OURS = os.path.join(ROOT, ".venv", "bin", "occystrap")
ORIG = os.path.join(ROOT, "bench", ".venv-orig", "bin", "occystrap")
RESULTS = os.path.join(ROOT, "bench", "results")
DOCS = os.path.join(ROOT, "docs", "benchmarks.md")

TOOLS = ["occystrap", "skopeo", "occystrap-0.4.17"]
SINGLE_WORKFLOWS = ["dir", "tar", "oci", "registry", "noop", "tar2reg"]
BULK_WORKFLOWS = ["bulk", "bulk-noop"]
WORKFLOWS = SINGLE_WORKFLOWS + BULK_WORKFLOWS
WORKFLOW_TITLES = {
    "dir": "registry → dir (unpacked layers)",
    "tar": "registry → tar (docker load)",
    "oci": "registry → OCI layout",
    "registry": "registry → registry (fresh destination)",
    "noop": "registry → registry re-run, nothing to copy",
    "tar2reg": "`docker save` tarball (uncompressed layers) → registry",
    "bulk": "bulk mirror, every image of the set → a fresh registry",
    "bulk-noop": "bulk mirror re-run, nothing to copy",
}
PUSHES = {"registry", "noop", "tar2reg", "bulk", "bulk-noop"}  # need a fresh registry per run
RERUNS = {"noop": "registry", "bulk-noop": "bulk"}  # timed second run after an untimed first
BULK_TAG = "1.0"


@dataclass(frozen=True)
class ImageSpec:
    """A benchmark image: what users copy, scaled to what a CI machine can hold."""

    key: str
    repo: str
    layers: list[int]
    compressible: float
    seed: int
    platforms: int = 1  # >1: an OCI index over that many platforms
    about: str = ""
    count: int = 1  # >1: a bulk set, REPO/app-00 … sharing layer 0 (the base)

    def names(self) -> list[str]:
        """The repositories the spec pushes (each tagged 1.0)."""
        if self.count == 1:
            return [self.repo]
        return [f"{self.repo}/app-{i:02d}" for i in range(self.count)]

    def workflows(self) -> list[str]:
        """What applies: a `docker save` tarball holds one platform, so an index has no
        tar2reg of its own (the single images cover it)."""
        if self.count > 1:
            return BULK_WORKFLOWS
        return [w for w in SINGLE_WORKFLOWS if not (self.platforms > 1 and w == "tar2reg")]


IMAGES: dict[str, ImageSpec] = {
    s.key: s for s in [
        ImageSpec("100m", "bench/app100m", [40 * MiB, 25 * MiB, 15 * MiB, 12 * MiB, 8 * MiB],
                  0.5, 100, about="~100 MiB unpacked, 5 layers, half compressible"),
        ImageSpec("1g", "bench/app1g", [(1 << 30) // 10] * 10, 0.5, 1000,
                  about="1 GiB unpacked, 10 layers, half compressible"),
        ImageSpec("index", "bench/multi", [40 * MiB, 20 * MiB], 0.0, 7, platforms=2,
                  about="OCI index, linux/amd64 + linux/arm64, 2 layers each (shared base), "
                        "incompressible (build_index has no compressible knob)"),
        ImageSpec("bulk", "bench/bulk", [50 * MiB, 20 * MiB], 0.5, 7000, count=30,
                  about="bulk set: 30 images, each a shared 50 MiB base + its own 20 MiB layer, "
                        "half compressible"),
    ]
}

# Why a peer has no row for a workflow; these go into the docs verbatim.
_NO_BULK = ("0.4.17's only bulk source is quay:// (quay.io's REST API, hard-wired); from a plain "
            "registry it has no catalog, pattern or list-file source, so a mirror would be a "
            "shell loop of one `process` per image, not something the tool does")
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("skopeo", "dir"): "skopeo's dir: keeps compressed blobs; it has no unpacked-layer layout",
    ("occystrap-0.4.17", "oci"): "0.4.17's oci:// writes a runtime bundle, not an image layout",
    ("occystrap-0.4.17", "bulk"): _NO_BULK,
    ("occystrap-0.4.17", "bulk-noop"): _NO_BULK,
}
UNSUPPORTED_INDEX: dict[tuple[str, str], str] = {
    ("occystrap-0.4.17", "registry"): "0.4.17 pushes one platform, never a whole index",
    ("occystrap-0.4.17", "noop"): "0.4.17 pushes one platform, never a whole index",
}


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
            out.update(median=statistics.median(self.times), min=min(self.times),
                       max=max(self.times), max_pss=max(self.peak_pss),
                       max_rss=max(self.peak_rss))
        return out


@dataclass(frozen=True)
class Inputs:
    """What the commands read: the image in the source registry and files made from it."""

    src: str  # HOST/NAME:TAG (single image) or HOST/REPO (a bulk set's namespace)
    out: str  # a fresh, empty directory per run
    index: bool = False
    tarball: str = ""  # tar2reg: a `docker save`-shaped tarball of the image
    sync_yaml: str = ""  # bulk: skopeo sync's list of the set's images


def command(tool: str, workflow: str, inp: Inputs, dest: str = "@DEST@") -> list[str] | None:
    """The command line for ``tool`` doing ``workflow``, or None when it cannot.

    ``dest`` is HOST/NAME:TAG (a prefix for the bulk workflows); it stays a placeholder until a
    run has its fresh registry. Each tool gets its plain default settings (4 parallel downloads
    for both occystrap versions and skopeo; -J 3 images at a time for ours): users run them
    that way. One exception: a tarball's layers are uncompressed and ours pushes them as they
    are unless asked, while skopeo and 0.4.17 gzip them; ours gets ``--compression gzip`` so
    that every tool pushes the same thing.
    """
    if (tool, workflow) in UNSUPPORTED or (inp.index and (tool, workflow) in UNSUPPORTED_INDEX):
        return None
    src, out, index = inp.src, inp.out, inp.index
    if workflow in ("bulk", "bulk-noop"):
        if tool == "skopeo":  # one process for the whole list, as users run it
            return ["skopeo", "sync", "--src", "yaml", "--dest", "docker",
                    "--dest-tls-verify=false", inp.sync_yaml, dest]
        return [OURS, "--insecure", "-q", "process", f"registry://{src}/*:{BULK_TAG}",
                f"registry://{dest}"]
    if workflow == "tar2reg":
        if tool == "skopeo":
            return ["skopeo", "copy", "-q", "--dest-tls-verify=false",
                    f"docker-archive:{inp.tarball}", f"docker://{dest}"]
        if tool == "occystrap":
            return [OURS, "--insecure", "-q", "--compression", "gzip", "process",
                    f"tar://{inp.tarball}", f"registry://{dest}"]
        return [ORIG, "--insecure", "process", f"tar://{inp.tarball}", f"registry://{dest}"]
    if tool == "skopeo":
        target = {"tar": f"docker-archive:{out}/app.tar:bench/app:1.0",
                  "oci": f"oci:{out}/layout:1.0",
                  "registry": f"docker://{dest}", "noop": f"docker://{dest}"}[workflow]
        extra = ["--all"] if index and workflow in ("registry", "noop") else []
        return ["skopeo", "copy", "-q", *extra, "--src-tls-verify=false",
                "--dest-tls-verify=false", f"docker://{src}", target]
    target = {"dir": f"dir://{out}/dir", "tar": f"tar://{out}/app.tar",
              "oci": f"oci://{out}/layout", "registry": f"registry://{dest}",
              "noop": f"registry://{dest}"}[workflow]
    binary = OURS if tool == "occystrap" else ORIG
    quiet = ["-q"] if tool == "occystrap" else []
    return [binary, "--insecure", *quiet, "process", f"registry://{src}", target]


def _git(*argv: str) -> str:
    return subprocess.run(["git", "-C", ROOT, *argv], capture_output=True, text=True,
                          check=True).stdout.strip()


def snapshot(rev: str, work: str) -> tuple[dict[str, str], str]:
    """Our package as of ``rev``, extracted under ``work`` and put first on PYTHONPATH (ahead of
    the venv's editable install), so edits made while the benchmark runs do not leak into it."""
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    dest = os.path.join(work, "ours-src")
    os.makedirs(dest)
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "occystrap"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    env = dict(os.environ, PYTHONPATH=dest)
    where = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-c",
                            "import occystrap; print(occystrap.__file__)"], env=env,
                           cwd="/", capture_output=True, text=True, check=True).stdout.strip()
    if not where.startswith(dest):
        raise SystemExit(f"--commit: occystrap still imports from {where}")
    return env, f"commit {commit[:12]} (`--commit {rev}`)"


def settle() -> None:
    """Let the last run's writeback finish so it does not bill the next run."""
    os.sync()
    time.sleep(1.0)


def machine(env: dict[str, str] | None = None) -> dict[str, object]:
    """What the numbers were measured on: they mean nothing without it."""
    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                                  env=env).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "missing"

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import psutil

    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "skopeo": version(["skopeo", "--version"]),
        "occystrap": version([OURS, "--version"]) if os.path.exists(OURS) else "missing",
        "occystrap_orig": version([os.path.join(os.path.dirname(ORIG), "python"), "-I", "-c",
                                   "import importlib.metadata as m;"
                                   "print(m.version('occystrap'))"]),
        "registry": version(["/usr/bin/docker-registry", "--version"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def build_and_push(spec: ImageSpec, registry: TestRegistry,
                   workdir: str) -> tuple[list[BuiltImage], BuiltIndex | None]:
    """Build the image (deterministic: same spec, same digests) and push it as REPO:1.0; a
    bulk set as REPO/app-NN:1.0, every image on the same base layer."""
    if spec.count > 1:
        images = []
        for i, name in enumerate(spec.names()):
            image = build_image(os.path.join(workdir, str(i)), spec.seed + i, spec.layers,
                                compressible=spec.compressible, special_entries=False,
                                shared_base_key=f"{spec.key}-base")
            push_image(registry.url, name, BULK_TAG, image)
            images.append(image)
        return images, None
    if spec.platforms > 1:
        platforms = [("linux", "amd64", None), ("linux", "arm64", None)][: spec.platforms]
        index = build_index(workdir, spec.seed, platforms, spec.layers, oci=True,
                            special_entries=False)
        push_index(registry.url, spec.repo, "1.0", index)
        return index.images, index
    image = build_image(workdir, spec.seed, spec.layers, compressible=spec.compressible,
                        special_entries=False)
    push_image(registry.url, spec.repo, "1.0", image)
    return [image], None


def blob_refs(images: list[BuiltImage], repos: list[str] | None = None) -> list[limits.BlobRef]:
    """Unique blobs of ``images`` (an index's children and a bulk set share their base
    layer); ``repos[i]``, when given, is where image i lives in the source registry."""
    seen: dict[str, limits.BlobRef] = {}
    for i, img in enumerate(images):
        for b in img.blobs:
            seen.setdefault(b.digest, limits.BlobRef(b.digest, b.size, b.path,
                                                     "gzip" in b.media_type,
                                                     repos[i] if repos else ""))
    return list(seen.values())


def layer_regions(tarball: str) -> list[tuple[str, int, int]]:
    """(path, offset, length) of every layer member of a `docker save` tarball."""
    with tarfile.open(tarball) as tf:
        return [(tarball, m.offset_data, m.size) for m in tf.getmembers()
                if m.isfile() and (m.name.endswith("layer.tar") or m.name.startswith("blobs/"))
                and m.size > 1 << 16]


def measure_limits(spec: ImageSpec, registry: TestRegistry, images: list[BuiltImage],
                   work: str, tarball: str = "") -> dict[str, object]:
    """Each resource alone, then each workflow's limit as the largest resource it needs.

    For an index, pushes move every platform; the other outputs hold one platform.
    """
    cores = os.cpu_count() or 1
    if spec.count > 1:
        return measure_bulk_limits(spec, registry, images, cores)
    one = blob_refs(images[:1])
    every = blob_refs(images)
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
    return {"resources": res, "workflows": per_workflow, "packed_bytes": packed,
            "unpacked_bytes": unpacked, "all_bytes": sum(b.size for b in every)}


def measure_bulk_limits(spec: ImageSpec, registry: TestRegistry, images: list[BuiltImage],
                        cores: int) -> dict[str, object]:
    """A bulk mirror must read, hash and upload every distinct blob once (the shared base
    once: later repositories mount it); its re-run must at least HEAD every manifest, four at
    a time."""
    every = blob_refs(images, spec.names())
    res: dict[str, float] = {
        "read_all": limits.read_seconds(registry.host, spec.repo, every),
        "sha256_all": limits.sha256_seconds(every, cores),
        "upload": limits.upload_seconds(lambda: TestRegistry().start(), every),
        "head": limits.head_seconds(registry.host, spec.names()[0], BULK_TAG),
    }
    heads = res["head"] * math.ceil(spec.count / limits.THREADS)
    per_workflow = {"bulk": max(res["read_all"], res["sha256_all"], res["upload"]),
                    "bulk-noop": heads}
    nbytes = sum(b.size for b in every)
    return {"resources": res, "workflows": per_workflow, "packed_bytes": nbytes,
            "all_bytes": nbytes, "images": spec.count}


def dest_repo(workflow: str) -> str:
    """Where a push goes in its fresh registry: a name, or a prefix for a bulk mirror."""
    return "mirror" if workflow in BULK_WORKFLOWS else "copy/app:1.0"


def one_run(cmd: list[str], workflow: str, work: str,
            env: dict[str, str] | None = None) -> tuple[RunResult, Callable[[], None]]:
    """Prepare a fresh destination, run once, return the result and a cleanup."""
    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    dest_reg: TestRegistry | None = None
    if workflow in PUSHES:
        # A fresh registry each run: skopeo remembers where it saw blobs and would mount
        # them from an earlier run's copy; a re-run must start from one completed copy.
        dest_reg = TestRegistry().start()
        cmd = [c.replace("@DEST@", f"{dest_reg.host}/{dest_repo(workflow)}") for c in cmd]
        if workflow in RERUNS:
            prime = run_measured(cmd, env=env)
            if prime.exit_code != 0:
                dest_reg.stop()
                return prime, lambda: None
    settle()
    result = run_measured(cmd, env=env)

    def cleanup() -> None:
        if dest_reg is not None:
            dest_reg.stop()
        shutil.rmtree(out, ignore_errors=True)

    return result, cleanup


def stats_run(cmd: list[str], workflow: str, work: str,
              env: dict[str, str] | None = None) -> dict[str, object]:
    """One extra untimed run of ours with --stats-file: which stage was busiest, and why."""
    path = os.path.join(work, "stats.json")
    stats_cmd = [cmd[0], "--stats-file", path, *cmd[1:]]
    result, cleanup = one_run(stats_cmd, workflow, work, env)
    try:
        if result.exit_code != 0 or not os.path.exists(path):
            return {"error": result.stderr[-500:]}
        with open(path) as f:
            doc = json.load(f)
        return {"wall_seconds": doc.get("wall_seconds"),
                "peak_pss_total": doc.get("peak_pss_total"),
                "bottleneck": doc.get("bottleneck"),
                "stages": [{k: s.get(k) for k in ("stage", "busy_seconds", "wait_in_seconds",
                                                   "wait_out_seconds", "cpu_seconds",
                                                   "peak_pss")}
                           for s in doc.get("stages", [])]}
    finally:
        cleanup()
        if os.path.exists(path):
            os.unlink(path)


def bench_image(spec: ImageSpec, registry: TestRegistry, tools: list[str],
                workflows: list[str], args: argparse.Namespace, work: str,
                env: dict[str, str] | None = None) -> dict[str, object]:
    workflows = [w for w in workflows if w in spec.workflows()]
    build = os.path.join(work, f"build-{spec.key}")
    print(f"\n== {spec.key}: building and pushing ({spec.about})", flush=True)
    images, index = build_and_push(spec, registry, build)
    if spec.count > 1:
        inp = Inputs(src=f"{registry.host}/{spec.repo}", out=os.path.join(work, "out"),
                     sync_yaml=os.path.join(work, f"sync-{spec.key}.yaml"))
        with open(inp.sync_yaml, "w") as f:  # skopeo sync's own list: one process, every image
            f.write(f"{registry.host}:\n  tls-verify: false\n  images:\n")
            for name in spec.names():
                f.write(f"    {name}: ['{BULK_TAG}']\n")
    else:
        inp = Inputs(src=f"{registry.host}/{spec.repo}:1.0", out=os.path.join(work, "out"),
                     index=index is not None)
    if "tar2reg" in workflows:
        # The input of tar2reg, made once and untimed: what `docker save` wrote before
        # Docker 25 (legacy layout, uncompressed layer.tar members); skopeo and 0.4.17 read it.
        tarball = os.path.join(work, f"save-{spec.key}.tar")
        subprocess.run([OURS, "--insecure", "-q", "process", f"registry://{inp.src}",
                        f"tar://{tarball}?format=v1.2"], check=True, env=env)
        inp = Inputs(inp.src, inp.out, inp.index, tarball=tarball)
    entry: dict[str, object] = {"about": spec.about, "repo": spec.repo,
                                "layers": len(spec.layers), "count": spec.count,
                                "platforms": spec.platforms, "workflows": {}}
    if not args.no_limits:
        print("   measuring physical limits", flush=True)
        entry["limits"] = measure_limits(spec, registry, images, work, inp.tarball)
    else:
        one = images if spec.count > 1 else images[:1]
        entry["limits"] = {"packed_bytes": sum(b.size for b in blob_refs(one)),
                           "all_bytes": sum(b.size for b in blob_refs(images))}
    if inp.tarball:
        entry["limits"]["tarball_bytes"] = os.path.getsize(inp.tarball)  # type: ignore[index]
    shutil.rmtree(build, ignore_errors=True)
    wf_out: dict[str, object] = entry["workflows"]  # type: ignore[assignment]
    for wf in workflows:
        cmds = {t: command(t, wf, inp) for t in tools}
        runnable = [t for t, c in cmds.items() if c is not None]
        results = {t: ToolResult() for t in runnable}
        for i in range(args.warmup + args.runs):
            for t in runnable:
                cmd = cmds[t]
                assert cmd is not None
                res, cleanup = one_run(cmd, wf, work, env if t == "occystrap" else None)
                cleanup()
                label = "warm-up" if i < args.warmup else f"run {i - args.warmup + 1}"
                status = "" if res.exit_code == 0 else f"  FAILED ({res.exit_code})"
                print(f"   {wf:<9} {t:<17} {label:<8} {res.wall:7.2f} s  "
                      f"{res.peak_pss / 1e6:7.1f} MB{status}", flush=True)
                if i < args.warmup:
                    continue
                if res.exit_code != 0:
                    results[t].failures.append(res.stderr[-800:])
                    continue
                results[t].times.append(res.wall)
                results[t].peak_pss.append(res.peak_pss)
                results[t].peak_rss.append(res.peak_rss)
        wf_entry: dict[str, object] = {
            "tools": {t: r.summary() for t, r in results.items()},
            "unsupported": {t: (UNSUPPORTED.get((t, wf)) or UNSUPPORTED_INDEX.get((t, wf), ""))
                            for t, c in cmds.items() if c is None},
        }
        ours = cmds.get("occystrap")
        if ours is not None and not args.no_stats:
            wf_entry["stats"] = stats_run(ours, wf, work, env)
        wf_out[wf] = wf_entry
    if inp.tarball:
        os.unlink(inp.tarball)
    return entry


# ------------------------------------------------------------------------------------------
# Reporting


def _ratio(entry: dict, tool: str, peer: str) -> float | None:
    tools = entry["tools"]
    a, b = tools.get(tool, {}).get("median"), tools.get(peer, {}).get("median")
    return a / b if a and b else None


def rows(doc: dict[str, object]) -> list[dict[str, object]]:
    """One flat row per image × workflow × tool, for both the stdout table and the docs."""
    out = []
    for key, img in doc["images"].items():  # type: ignore[union-attr]
        lim = img.get("limits", {})
        for wf, entry in img["workflows"].items():
            if wf == "tar2reg":  # what it reads and must gzip
                nbytes = lim.get("unpacked_bytes") or lim.get("tarball_bytes", 0)
            elif wf == "registry" and img["platforms"] > 1:
                nbytes = lim.get("all_bytes", 0)
            else:
                nbytes = lim.get("packed_bytes", 0)
            limit = lim.get("workflows", {}).get(wf)
            for tool, r in entry["tools"].items():
                med = r.get("median")
                row = {"image": key, "workflow": wf, "tool": tool, "median": med,
                       "min": r.get("min"), "max": r.get("max"),
                       "mb_s": nbytes / 1e6 / med if med and wf not in RERUNS else None,
                       "pss_mb": r["max_pss"] / 1e6 if med else None,
                       "rss_mb": r["max_rss"] / 1e6 if med else None,
                       "vs_skopeo": None, "vs_orig": None, "limit": None, "eff": None,
                       "failed": len(r.get("failures", []))}
                if tool == "occystrap":
                    row["vs_skopeo"] = _ratio(entry, tool, "skopeo")
                    row["vs_orig"] = _ratio(entry, tool, "occystrap-0.4.17")
                    row["limit"] = limit
                    row["eff"] = limit / med if limit and med else None
                out.append(row)
    return out


def _f(value: object, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def print_table(doc: dict[str, object]) -> None:
    head = (f"{'image':<6} {'workflow':<9} {'tool':<17} {'median s':>8} {'min–max s':>13} "
            f"{'MB/s':>6} {'PSS MB':>7} {'RSS MB':>7} {'/skopeo':>7} {'/0.4.17':>7} "
            f"{'limit s':>7} {'eff':>5}")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows(doc):
        span = (f"{r['min']:.2f}–{r['max']:.2f}" if r["median"] else
                f"failed ×{r['failed']}")
        print(f"{r['image']:<6} {r['workflow']:<9} {r['tool']:<17} {_f(r['median'], '8.2f'):>8} "
              f"{span:>13} {_f(r['mb_s'], '6.0f'):>6} {_f(r['pss_mb'], '7.1f'):>7} "
              f"{_f(r['rss_mb'], '7.1f'):>7} {_f(r['vs_skopeo'], '7.2f'):>7} "
              f"{_f(r['vs_orig'], '7.2f'):>7} {_f(r['limit'], '7.2f'):>7} "
              f"{_f(r['eff'], '5.2f'):>5}")


def _bottleneck(doc: dict[str, object], image: str, workflow: str) -> str:
    """Our own verdict (``--stats-file``'s bottleneck) for one workflow, or "" if none."""
    img = doc["images"].get(image, {})  # type: ignore[union-attr]
    stats = img.get("workflows", {}).get(workflow, {}).get("stats") or {}
    b = stats.get("bottleneck") or {}
    if not b:
        return ""
    busy = sorted(stats.get("stages", []), key=lambda x: -(x.get("busy_seconds") or 0))
    split = "; ".join(f"{x['stage']} busy {x.get('busy_seconds') or 0:.2f} s, waiting for input "
                      f"{x.get('wait_in_seconds') or 0:.2f} s" for x in busy[:2])
    return f"{b.get('stage') or 'none'} ({b.get('kind') or '?'}): {b.get('reason', '')}; {split}"


def targets(doc: dict[str, object]) -> list[str]:
    """Issue 8's targets (1 GiB image, bulk set), checked against this run (met / missed);
    a miss names the stage our own statistics blame."""
    found = {(r["image"], r["workflow"], r["tool"]): r for r in rows(doc)
             if r["image"] in ("1g", "bulk")}
    if not found:
        return []
    # (image, workflow, what, value, op, goal)
    checks: list[tuple[str, str, str, float | None, str, float]] = []
    for wf, goal in (("oci", 0.8), ("tar", 0.5), ("registry", 0.8)):
        r = found.get(("1g", wf, "occystrap"), {})
        checks.append(("1g", wf, f"1g {wf}: ours / skopeo", r.get("vs_skopeo"), "≤", goal))
    checks.append(("1g", "noop", "1g noop re-run (s)",
                   found.get(("1g", "noop", "occystrap"), {}).get("median"), "<", 1.0))
    r = found.get(("bulk", "bulk", "occystrap"), {})
    checks.append(("bulk", "bulk", "bulk mirror: ours / skopeo sync", r.get("vs_skopeo"), "≤",
                   0.5))
    checks.append(("bulk", "bulk-noop", "bulk re-run, nothing to copy (s)",
                   found.get(("bulk", "bulk-noop", "occystrap"), {}).get("median"), "<", 1.0))
    for wf in WORKFLOWS:
        r = found.get(("1g", wf, "occystrap"), {})
        if r.get("vs_orig") is not None:
            goal = 0.2 if wf == "registry" else 1.0
            checks.append(("1g", wf, f"1g {wf}: ours / 0.4.17", r["vs_orig"],
                           "≤" if goal < 1 else "<", goal))
    pss = [r["pss_mb"] for (_, _, t), r in found.items() if t == "occystrap" and r["pss_mb"]]
    checks.append(("", "", "our peak PSS, whole tree, 1g and bulk (MB)", max(pss) if pss else None,
                   "≤", 150.0))
    lines = ["## Targets (issue 8: the 1 GiB image and the bulk set)", "",
             "A miss names the stage our own `--stats-file` run blamed (its bottleneck verdict, "
             "then the two busiest stages with their busy and waiting-for-input seconds).", "",
             "| target | this run | | bottleneck when missed (ours, `--stats`) |",
             "| --- | ---: | --- | --- |"]
    for image, wf, what, value, op, goal in checks:
        why = ""
        if value is None:
            verdict = "not measured"
        else:
            ok = value <= goal if op == "≤" else value < goal
            verdict = "met" if ok else "**missed**"
            if not ok and wf:
                why = _bottleneck(doc, image, wf)
        lines.append(f"| {what} {op} {goal:g} | {_f(value, '.2f')} | {verdict} | {why} |")
    return [*lines, ""]


def write_docs(doc: dict[str, object], json_path: str, analysis: str | None = None) -> None:
    """Regenerate docs/benchmarks.md from one run's JSON: numbers are never edited by hand.

    ``analysis``: a hand-written markdown file about this run (why a target is missed, what
    would move it), included verbatim under its own heading.
    """
    m = doc["machine"]
    a = doc["args"]
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `bench/run.sh --write-docs` (bench/harness.py); do not edit by hand."
        " Regenerate from a saved run with `.venv/bin/python -m bench --docs-from FILE`. -->",
        "",
        "occystrap against [skopeo](https://github.com/containers/skopeo) and the original "
        "occystrap 0.4.17, in one run on one machine, from a CNCF distribution registry on "
        "127.0.0.1. Each tool runs with its defaults (4 parallel downloads), interleaved "
        f"(A B C A B C …) after {a['warmup']} warm-up round(s); {a['runs']} timed runs each. "
        "Every run gets a fresh destination (a new empty directory, or a new registry for "
        "pushes). A re-run (`noop`, `bulk-noop`) first copies once into the fresh registry, "
        "untimed, with the same tool, then times the second copy.",
        "",
        "## Workflows",
        "",
        "- `dir`, `tar`, `oci`, `registry`: one image from the source registry to an unpacked "
        "directory, a `docker load` tarball, an OCI layout, another registry "
        "(`occystrap process registry://SRC/NAME:TAG DEST`; `skopeo copy docker://… "
        "docker-archive:… | oci:… | docker://…`; 0.4.17 `process`)",
        "- `noop`: the `registry` copy again, with nothing left to copy",
        "- `tar2reg`: a `docker save` tarball in the pre-Docker-25 layout (uncompressed "
        "`layer.tar` members, made once, untimed, with our `tar://…?format=v1.2`) → registry: "
        "`occystrap --compression gzip process tar://FILE registry://DEST`, `skopeo copy "
        "docker-archive:FILE docker://DEST`, 0.4.17 `process tar://FILE registry://DEST`. "
        "skopeo and 0.4.17 gzip the layers as they push; ours pushes them as they are "
        "(uncompressed) unless asked, so it gets `--compression gzip` (ISA-L level 2 by "
        "default) to push the same thing",
        "- `bulk`: every image of the bulk set to a fresh registry: "
        "`occystrap process 'registry://SRC/bench/bulk/*:1.0' registry://DEST/mirror` "
        "(defaults: -J 3 images at a time, -j 4) against `skopeo sync --src yaml --dest "
        "docker` with a YAML list of the 30 repositories (one process, images one after "
        "another, as skopeo does)",
        "- `bulk-noop`: the `bulk` mirror again into the registry it just filled",
        "",
        "## Machine",
        "",
        f"- {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB memory, "
        f"Linux {m['kernel']}, Python {m['python']}",
        f"- {m['occystrap']}; occystrap {m['occystrap_orig']} (original); {m['skopeo']}; "
        f"registry {m['registry']}",
        f"- ours from {m.get('occystrap_source', 'the working tree')}",
        f"- run {m['date']}; raw results: `{os.path.relpath(json_path, ROOT)}`",
        "- a shared, noisy VM: read medians and ratios, not single runs",
        *([f"- {a['note']}"] if a.get("note") else []),
        "",
        "## Columns",
        "",
        "- **median s**, **min–max s**: wall time of the whole command, process start included",
        "- **MB/s**: compressed bytes moved (all platforms for an index push; every distinct "
        "blob once for `bulk`; for `tar2reg` the uncompressed layer bytes it reads and gzips) "
        "per median second",
        "- **PSS MB**: peak of the sum of PSS over every process of the command (sampled every "
        "20 ms); **RSS MB**: peak RSS of its largest single process",
        "- **/skopeo**, **/0.4.17**: our median divided by the peer's (below 1: we are faster)",
        "- **limit s**: the physical limit on this machine — the slowest of the resources the "
        "workflow needs, each measured alone (parallel GET of every blob to /dev/null with 4 "
        "threads; sha256 on every core; gunzip on every core for `dir`; writing the bytes with "
        "no fsync; POST+PUT of every blob into a fresh registry; gzip (ISA-L level 2, as "
        "ours) of every uncompressed layer on every core for `tar2reg`; one manifest HEAD for "
        "the re-run, one per image four at a time for `bulk-noop`); **eff** = limit / our "
        "median",
        "",
    ]
    for key, img in doc["images"].items():  # type: ignore[union-attr]
        lim = img.get("limits", {})
        lines += [f"## Image `{key}`: {img['about']}", ""]
        size = f"{lim.get('packed_bytes', 0) / 1e6:.0f} MB compressed"
        if img.get("count", 1) > 1:
            size = (f"{img['count']} images; {lim.get('all_bytes', 0) / 1e6:.0f} MB of distinct "
                    "compressed blobs")
        if lim.get("unpacked_bytes"):
            size += f", {lim['unpacked_bytes'] / 1e6:.0f} MB unpacked"
        if img["platforms"] > 1:
            size += f" per platform; {lim.get('all_bytes', 0) / 1e6:.0f} MB for all platforms"
        lines += [f"{size}.", "",
                  "| workflow | tool | median s | min–max s | MB/s | PSS MB | RSS MB | /skopeo "
                  "| /0.4.17 | limit s | eff |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows(doc):
            if r["image"] != key:
                continue
            span = (f"{r['min']:.2f}–{r['max']:.2f}" if r["median"]
                    else f"failed ×{r['failed']}")
            tool = f"**{r['tool']}**" if r["tool"] == "occystrap" else r["tool"]
            lines.append(
                f"| {r['workflow']} | {tool} | {_f(r['median'], '.2f')} | {span} | "
                f"{_f(r['mb_s'], '.0f')} | {_f(r['pss_mb'], '.1f')} | {_f(r['rss_mb'], '.1f')} | "
                f"{_f(r['vs_skopeo'], '.2f')} | {_f(r['vs_orig'], '.2f')} | "
                f"{_f(r['limit'], '.2f')} | {_f(r['eff'], '.2f')} |")
        res = lim.get("resources")
        if res:
            lines += ["", "Resources alone (seconds, best of 2–3): " + ", ".join(
                f"{k} {v:.3f}" for k, v in res.items()) + "."]
        by_reason: dict[str, list[str]] = {}  # one reason, said once for every case it covers
        for wf, e in img["workflows"].items():
            for t, why in e.get("unsupported", {}).items():
                by_reason.setdefault(why, []).append(f"{t} {wf}")
        if by_reason:
            lines += ["", "Not run: " + "; ".join(sorted(
                f"{', '.join(cases)}: {why}" for why, cases in by_reason.items())) + "."]
        stats = [(wf, e["stats"]) for wf, e in img["workflows"].items()
                 if isinstance(e.get("stats"), dict) and e["stats"].get("stages")]
        if stats:
            lines += ["", "Where our time went (one extra run with `--stats-file`; busy "
                      "seconds per stage, the largest first):", ""]
            for wf, s in stats:
                stages = sorted(s["stages"], key=lambda x: -(x.get("busy_seconds") or 0))
                busy = ", ".join(f"{x['stage']} {x.get('busy_seconds') or 0:.2f}"
                                 for x in stages[:3])
                verdict = (s.get("bottleneck") or {}).get("reason")
                lines.append(f"- {wf}: wall {s.get('wall_seconds') or 0:.2f} s; {busy}"
                             + (f"; verdict: {verdict}" if verdict else ""))
        lines.append("")
    lines += targets(doc)
    if analysis:
        with open(analysis) as f:
            text = f.read().strip()
        lines += ["## Analysis (written by hand from this run's numbers and statistics)", "",
                  text, ""]
    lines += [
        "## Not measured",
        "",
        "- 0.4.17 bulk mirroring: see \"Not run\" under the bulk set.",
        "- `tools/benchmark.sh` sweeps our own `-j`/`-J` settings on small images "
        "(no peers); see its `--help`.",
        "",
    ]
    with open(DOCS, "w") as f:
        f.write("\n".join(lines))
    print(f"docs: {DOCS}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--images", default=",".join(IMAGES), help=f"of {','.join(IMAGES)}")
    ap.add_argument("--workflows", default=",".join(WORKFLOWS), help=f"of {','.join(WORKFLOWS)}")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"of {','.join(TOOLS)}")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per tool (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--no-limits", action="store_true", help="skip the physical limits")
    ap.add_argument("--no-stats", action="store_true", help="skip our --stats-file run")
    ap.add_argument("--write-docs", action="store_true", help="regenerate docs/benchmarks.md")
    ap.add_argument("--docs-from", metavar="JSON", help="only regenerate the docs from a result")
    ap.add_argument("--work", default=None, help="parent of the work dir (default: $TMPDIR)")
    ap.add_argument("--commit", metavar="REV", default=None,
                    help="run ours from this commit (git archive into the work dir, first on "
                         "PYTHONPATH) instead of the working tree, which may be mid-edit")
    ap.add_argument("--note", default="", help="one line about this run for the docs' machine "
                                               "section (e.g. what else was running)")
    ap.add_argument("--analysis", metavar="MD", default=None,
                    help="with --write-docs/--docs-from: hand-written markdown about the run, "
                         "included verbatim")
    args = ap.parse_args(argv)

    if args.docs_from:
        with open(args.docs_from) as f:
            doc = json.load(f)
        print_table(doc)
        write_docs(doc, os.path.abspath(args.docs_from), args.analysis)
        return 0
    tools = [t for t in args.tools.split(",") if t]
    for t in tools:
        if t not in TOOLS:
            ap.error(f"unknown tool {t!r}")
    if "skopeo" in tools and not shutil.which("skopeo"):
        print("skopeo is missing (bench/run.sh installs it): skipping it", file=sys.stderr)
        tools.remove("skopeo")
    if "occystrap-0.4.17" in tools and not os.path.exists(ORIG):
        print(f"{ORIG} is missing (bench/run.sh installs it): skipping it", file=sys.stderr)
        tools.remove("occystrap-0.4.17")
    workflows = [w for w in args.workflows.split(",") if w]
    for w in workflows:
        if w not in WORKFLOWS:
            ap.error(f"unknown workflow {w!r}")
    for k in args.images.split(","):
        if k and k not in IMAGES:
            ap.error(f"unknown image {k!r}")
    specs = [IMAGES[k] for k in args.images.split(",") if k]

    work = tempfile.mkdtemp(prefix="occystrap-bench-", dir=args.work)
    env, source = None, "the working tree (" + _git("describe", "--always", "--dirty") + ")"
    if args.commit:
        env, source = snapshot(args.commit, work)
    mach = machine(env)
    mach["occystrap_source"] = source
    doc: dict[str, object] = {"schema": "occystrap.bench/1", "machine": mach,
                              "args": vars(args), "images": {}}
    try:
        with TestRegistry() as registry:
            for spec in specs:
                doc["images"][spec.key] = bench_image(  # type: ignore[index]
                    spec, registry, tools, workflows, args, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print_table(doc)
    print(f"\nresults: {path}")
    if args.write_docs:
        write_docs(doc, path, args.analysis)
    return 0


if __name__ == "__main__":
    sys.exit(main())
