"""What the side-by-side benchmark measures: the image sets, the workflows, and the command
line each tool gets for each workflow (no I/O here: see bench/harness.py for the runs)."""

from __future__ import annotations

import os
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KiB = 1 << 10
MiB = 1 << 20
OURS = os.path.join(ROOT, ".venv", "bin", "occystrap")
ORIG = os.path.join(ROOT, "bench", ".venv-orig", "bin", "occystrap")

TOOLS = ["occystrap", "skopeo", "occystrap-0.4.17"]
SINGLE_WORKFLOWS = ["dir", "tar", "oci", "registry", "noop", "tar2reg"]
BULK_WORKFLOWS = ["bulk", "bulk-noop"]
RECODE = "bulk-recode"  # issue 16's --layer-cache across repositories, on `bulk` only
FIXED = "fixed"  # not a copy: the fixed costs of a run (bench/fixedcost.py), on `small` only
WORKFLOWS = SINGLE_WORKFLOWS + BULK_WORKFLOWS + [RECODE, FIXED]
# The WAN profile reads the source through the latency proxy; tar2reg reads a local file.
WAN_WORKFLOWS = ["dir", "tar", "oci", "registry", "noop", *BULK_WORKFLOWS]
PROFILES = ["loopback", "wan"]
WORKFLOW_TITLES = {
    "dir": "registry → dir (unpacked layers)",
    "tar": "registry → tar (docker load)",
    "oci": "registry → OCI layout",
    "registry": "registry → registry (fresh destination)",
    "noop": "registry → registry re-run, nothing to copy",
    "tar2reg": "`docker save` tarball (uncompressed layers) → registry",
    "bulk": "bulk mirror, every image of the set → a fresh registry",
    "bulk-noop": "bulk mirror re-run, nothing to copy",
    RECODE: "bulk mirror with --compression zstd --layer-cache onto a new prefix of a registry "
    "that holds the re-encoded layers",
}
# Need a fresh registry per run:
PUSHES = {"registry", "noop", "tar2reg", "bulk", "bulk-noop", RECODE}
# A timed second run after an untimed first one (into the same registry):
RERUNS = {"noop": "registry", "bulk-noop": "bulk", RECODE: "bulk"}
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
    cached: bool = False  # pushed once into a registry whose storage bench/.cache keeps
    subset: int = 0  # >0: only the first SUBSET images of the set (a power of ten)

    def names(self) -> list[str]:
        """Every repository the spec pushes (each tagged 1.0), subset or not."""
        if self.count == 1:
            return [self.repo]
        width = max(2, len(str(self.count - 1)))
        return [f"{self.repo}/app-{i:0{width}d}" for i in range(self.count)]

    def selected(self) -> list[str]:
        """The repositories a bulk workflow copies: all of them, or the subset's."""
        return self.names()[: self.subset] if self.subset else self.names()

    def pattern(self) -> str:
        """The catalog glob (under REPO/) that selects exactly :meth:`selected`.

        A subset of 10**k of names numbered with ``width`` digits is ``app-`` and
        ``width - k`` zeros: ``app-0*`` is app-000 … app-099 of a thousand.
        """
        if not self.subset:
            return "*"
        width = max(2, len(str(self.count - 1)))
        k = len(str(self.subset)) - 1
        if self.subset != 10**k or k > width:
            raise ValueError(f"{self.key}: subset {self.subset} is not a power of ten ≤ count")
        return "app-" + "0" * (width - k) + "*"

    def workflows(self) -> list[str]:
        """What applies: a `docker save` tarball holds one platform, so an index has no
        tar2reg of its own (the single images cover it); fixed costs are measured once."""
        if self.count > 1:
            return [*BULK_WORKFLOWS, RECODE] if self.key == "bulk" else BULK_WORKFLOWS
        out = [w for w in SINGLE_WORKFLOWS if not (self.platforms > 1 and w == "tar2reg")]
        return [*out, FIXED] if self.key == "small" else out


IMAGES: dict[str, ImageSpec] = {
    s.key: s
    for s in [
        ImageSpec(
            "small",
            "bench/small",
            [4 * MiB, 3 * MiB, 1 * MiB],
            0.5,
            8,
            about="~8 MiB unpacked, 3 layers, half compressible (issue 16's small copy)",
        ),
        ImageSpec(
            "100m",
            "bench/app100m",
            [40 * MiB, 25 * MiB, 15 * MiB, 12 * MiB, 8 * MiB],
            0.5,
            100,
            about="~100 MiB unpacked, 5 layers, half compressible",
        ),
        ImageSpec(
            "1g",
            "bench/app1g",
            [(1 << 30) // 10] * 10,
            0.5,
            1000,
            about="1 GiB unpacked, 10 layers, half compressible",
        ),
        ImageSpec(
            "2g",
            "bench/app2g",
            [(2 << 30) // 10] * 10,
            0.0,
            2000,
            about="2 GiB unpacked, 10 layers, incompressible",
        ),
        ImageSpec(
            "index",
            "bench/multi",
            [40 * MiB, 20 * MiB],
            0.0,
            7,
            platforms=2,
            about="OCI index, linux/amd64 + linux/arm64, 2 layers each (shared base), "
            "incompressible (build_index has no compressible knob)",
        ),
        ImageSpec(
            "bulk",
            "bench/bulk",
            [50 * MiB, 20 * MiB],
            0.5,
            7000,
            count=30,
            about="bulk set: 30 images, each a shared 50 MiB base + its own 20 MiB layer, "
            "half compressible",
        ),
        ImageSpec(
            "bulk1k",
            "bench/bulk1k",
            [300 * KiB, 16 * KiB],
            0.5,
            9000,
            count=1000,
            cached=True,
            about="1,000 tiny images, each a shared 300 KiB base + its own 16 KiB layer, "
            "half compressible; pushed once into a registry kept in bench/.cache",
        ),
        ImageSpec(
            "bulk100",
            "bench/bulk1k",
            [300 * KiB, 16 * KiB],
            0.5,
            9000,
            count=1000,
            cached=True,
            subset=100,
            about="the first 100 images of `bulk1k` (`app-0*`), same cached registry: "
            "with `bulk1k`, shows whether memory stays flat with the image count",
        ),
    ]
}
DEFAULT_IMAGES = ["small", "100m", "1g", "index", "bulk"]  # 2g, bulk1k, bulk100: on request

# Why a peer has no row for a workflow; these go into the docs verbatim.
_NO_BULK = (
    "0.4.17's only bulk source is quay:// (quay.io's REST API, hard-wired); from a plain "
    "registry it has no catalog, pattern or list-file source, so a mirror would be a "
    "shell loop of one `process` per image, not something the tool does"
)
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("skopeo", "dir"): "skopeo's dir: keeps compressed blobs; it has no unpacked-layer layout",
    ("occystrap-0.4.17", "oci"): "0.4.17's oci:// writes a runtime bundle, not an image layout",
    ("occystrap-0.4.17", "bulk"): _NO_BULK,
    ("occystrap-0.4.17", "bulk-noop"): _NO_BULK,
    ("occystrap-0.4.17", RECODE): _NO_BULK,
    ("skopeo", RECODE): "skopeo has no layer cache of its own to compare (its blob-info cache "
    "is global and outlives the run); the target is bytes moved, not a ratio",
}
UNSUPPORTED_INDEX: dict[tuple[str, str], str] = {
    ("occystrap-0.4.17", "registry"): "0.4.17 pushes one platform, never a whole index",
    ("occystrap-0.4.17", "noop"): "0.4.17 pushes one platform, never a whole index",
}


@dataclass(frozen=True)
class Inputs:
    """What the commands read: the image in the source registry and files made from it."""

    src: str  # HOST/NAME:TAG (single image) or HOST/REPO (a bulk set's namespace)
    out: str  # a fresh, empty directory per run
    index: bool = False
    tarball: str = ""  # tar2reg: a `docker save`-shaped tarball of the image
    sync_yaml: str = ""  # bulk: skopeo sync's list of the set's images
    pattern: str = "*"  # bulk: the catalog glob under src that selects the set
    ca_file: str = ""  # the source serves HTTPS with this CA ("": plain HTTP)
    cert_dir: str = ""  # the same CA as skopeo wants it (a directory holding ca.crt)
    layer_cache: str = ""  # bulk-recode: ours' --layer-cache file (removed after each run)


def command(tool: str, workflow: str, inp: Inputs, dest: str = "@DEST@") -> list[str] | None:
    """The command line for ``tool`` doing ``workflow``, or None when it cannot.

    ``dest`` is HOST/NAME:TAG (a prefix for the bulk workflows); it stays a placeholder until a
    run has its fresh registry. Each tool gets its plain default settings (4 parallel downloads
    for both occystrap versions and skopeo; -J 3 images at a time for ours): users run them
    that way. One exception: a tarball's layers are uncompressed and ours pushes them as they
    are unless asked, while skopeo and 0.4.17 gzip them; ours gets ``--compression gzip`` so
    that every tool pushes the same thing. With a TLS source (``inp.ca_file``), each tool
    trusts the CA its own way and the (plain HTTP, loopback) destination is marked insecure
    on its own; 0.4.17 reads the CA from the environment (see :func:`tool_env`).
    """
    if (tool, workflow) in UNSUPPORTED or (inp.index and (tool, workflow) in UNSUPPORTED_INDEX):
        return None
    src, out, index, tls = inp.src, inp.out, inp.index, bool(inp.ca_file)
    ours_net = ["--ca-file", inp.ca_file] if tls else ["--insecure"]
    dest_q = "?insecure=true" if tls else ""
    src_tls = [f"--src-cert-dir={inp.cert_dir}"] if tls else ["--src-tls-verify=false"]
    if workflow in ("bulk", "bulk-noop", RECODE):
        if tool == "skopeo":  # one process for the whole list, as users run it
            return [
                "skopeo",
                "sync",
                "--src",
                "yaml",
                "--dest",
                "docker",
                "--dest-tls-verify=false",
                inp.sync_yaml,
                dest,
            ]
        recode = (
            ["--compression", "zstd", "--layer-cache", inp.layer_cache]
            if workflow == RECODE
            else []
        )
        return [
            OURS,
            *ours_net,
            "-q",
            *recode,
            "process",
            f"registry://{src}/{inp.pattern}:{BULK_TAG}",
            f"registry://{dest}{dest_q}",
        ]
    if workflow == "tar2reg":
        if tool == "skopeo":
            return [
                "skopeo",
                "copy",
                "-q",
                "--dest-tls-verify=false",
                f"docker-archive:{inp.tarball}",
                f"docker://{dest}",
            ]
        if tool == "occystrap":
            return [
                OURS,
                "--insecure",
                "-q",
                "--compression",
                "gzip",
                "process",
                f"tar://{inp.tarball}",
                f"registry://{dest}",
            ]
        return [ORIG, "--insecure", "process", f"tar://{inp.tarball}", f"registry://{dest}"]
    if tool == "skopeo":
        target = {
            "tar": f"docker-archive:{out}/app.tar:bench/app:1.0",
            "oci": f"oci:{out}/layout:1.0",
            "registry": f"docker://{dest}",
            "noop": f"docker://{dest}",
        }[workflow]
        extra = ["--all"] if index and workflow in ("registry", "noop") else []
        return [
            "skopeo",
            "copy",
            "-q",
            *extra,
            *src_tls,
            "--dest-tls-verify=false",
            f"docker://{src}",
            target,
        ]
    target = {
        "dir": f"dir://{out}/dir",
        "tar": f"tar://{out}/app.tar",
        "oci": f"oci://{out}/layout",
        "registry": f"registry://{dest}{dest_q}",
        "noop": f"registry://{dest}{dest_q}",
    }[workflow]
    if tool == "occystrap":
        return [OURS, *ours_net, "-q", "process", f"registry://{src}", target]
    return [ORIG, *([] if tls else ["--insecure"]), "process", f"registry://{src}", target]


def tool_env(tool: str, inp: Inputs, ours: dict[str, str] | None) -> dict[str, str] | None:
    """The environment ``tool`` runs in: ours may run from a snapshot (``--commit``); 0.4.17
    has no CA option: its httpx clients read ``SSL_CERT_FILE``, its requests calls
    ``REQUESTS_CA_BUNDLE``."""
    if tool == "occystrap":
        return ours
    if tool == "occystrap-0.4.17" and inp.ca_file:
        return dict(os.environ, REQUESTS_CA_BUNDLE=inp.ca_file, SSL_CERT_FILE=inp.ca_file)
    return None
