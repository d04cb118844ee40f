"""Two runs into one output at once (oci://, dir://?unique_names=true): run X fails on a
corrupt layer while run Y succeeds. They share a base layer; X brings it in first (its
corrupt layer arrives slowly, so it fails late), Y finds it "already present". Many rounds,
with Y starting at different moments and the output new or already there: Y's published
image must be whole every time (checked with skopeo, or by hashing every file of a dir://
image), and X's failure must never take Y's directory with it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import _clean_env, _cli_command
from tests.faultproxy import FaultProxy
from tests.functional.test_errors import _registry_blob
from tools.imagebuilder import build_image, push_image

DELAYS = [0.0, 0.3, 0.6, 0.9, 1.2, 0.3, 0.6, 0.9]  # Y starts this long after X


@pytest.fixture(scope="module")
def pair(registry, tmp_path_factory):
    """shared/good:1.0 and shared/bad:1.0 share their base layer; bad's second layer is
    corrupt in the registry's storage."""
    work = tmp_path_factory.mktemp("shared-outputs")
    good = build_image(
        work / "good",
        seed=4242,
        layer_sizes=[60_000, 30_000],
        oci=True,
        special_entries=False,
        shared_base_key="shared-outputs",
    )
    bad = build_image(
        work / "bad",
        seed=4343,
        layer_sizes=[60_000, 1_000_000],
        oci=True,
        special_entries=False,
        shared_base_key="shared-outputs",
    )
    assert good.layers[0].digest == bad.layers[0].digest
    push_image(registry.url, "shared/good", "1.0", good)
    push_image(registry.url, "shared/bad", "1.0", bad)
    blob = _registry_blob(registry, bad.layers[1].digest)
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF
    blob.write_bytes(bytes(data))
    return good, bad


def _run(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    return subprocess.Popen(
        [*_cli_command(), "--insecure", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_clean_env({"HOME": str(home)}),
    )


def _race(registry, slow, tmp_path, dest_x: str, dest_y: str, delay: float) -> None:
    x = _run(["process", f"registry://{slow.host}/shared/bad:1.0", dest_x], tmp_path)
    time.sleep(delay)
    y = _run(["process", f"registry://{registry.host}/shared/good:1.0", dest_y], tmp_path)
    _, x_err = x.communicate(timeout=120)
    _, y_err = y.communicate(timeout=120)
    assert x.returncode == 1 and "sha256:" in x_err, x_err
    assert y.returncode == 0, y_err


def _check_dir_image(root: Path, manifest_name: str) -> None:
    """Every file a dir:// manifest names is there; configs and layers hash right."""
    entry = json.loads((root / manifest_name).read_text())[0]
    config = (root / entry["Config"]).read_bytes()
    assert "sha256:" + hashlib.sha256(config).hexdigest() == "sha256:" + entry["Config"][:-5]
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    for rel, diff_id in zip(entry["Layers"], diff_ids, strict=True):
        data = (root / rel).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id, rel


def _existing(occystrap_cli, sample, dest: str) -> None:
    """The odd rounds' output holds an unrelated image already (no rmtree can happen; what
    is at stake is the shared blob)."""
    r = occystrap_cli("--insecure", "process", sample.uri, dest)
    assert r.returncode == 0, r.stderr


def test_oci_failing_and_succeeding_runs_race(
    occystrap_cli, registry, sample_images, pair, tmp_path, skopeo
):
    _existing(occystrap_cli, sample_images["oci"], f"oci://{tmp_path / 'kept'}:before")
    with FaultProxy(registry.port, rate=1_000_000) as slow:
        for n, delay in enumerate(DELAYS):
            # even rounds: a layout new to both runs (X creates it); odd: one that exists
            layout = tmp_path / (f"fresh-{n}" if n % 2 == 0 else "kept")
            _race(registry, slow, tmp_path, f"oci://{layout}:x{n}", f"oci://{layout}:y{n}", delay)
            assert (layout / "index.json").exists(), f"round {n}: the layout went"
    for layout in sorted(tmp_path.glob("fresh-*")) + [tmp_path / "kept"]:
        index = json.loads((layout / "index.json").read_text())
        refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
        assert refs and all(r[0] in "yb" for r in refs), refs  # y<n>, and "before"
        for ref in refs:
            out = tmp_path / f"check-{layout.name}-{ref}"
            r = skopeo("copy", f"oci:{layout}:{ref}", f"dir:{out}")
            assert r.returncode == 0, (layout, ref, r.stderr)
        assert not [n for n in os.listdir(layout) if ".occystrap-" in n], os.listdir(layout)


def test_unique_names_dir_failing_and_succeeding_runs_race(
    occystrap_cli, registry, sample_images, pair, tmp_path
):
    _existing(occystrap_cli, sample_images["oci"], f"dir://{tmp_path / 'kept'}?unique_names=true")
    with FaultProxy(registry.port, rate=1_000_000) as slow:
        for n, delay in enumerate(DELAYS[:6]):
            out = tmp_path / (f"fresh-{n}" if n % 2 == 0 else "kept")
            dest = f"dir://{out}?unique_names=true"
            _race(registry, slow, tmp_path, dest, dest, delay)
            _check_dir_image(
                out, f"manifest-{registry.host.replace(':', '_')}_shared_good_1.0.json"
            )
            assert not [n for n in os.listdir(out) if ".occystrap-" in n], os.listdir(out)
