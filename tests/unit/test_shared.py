"""Two runs writing one oci:// layout (or dir://?unique_names=true directory), in-process
with their own tokens: a failing run's clean-up never removes what the other run published
or relies on, never the directory holding the other's index, and does tidy up when alone."""

from __future__ import annotations

import json
import os

from occystrap.destinations.directory import DirectoryWriter
from occystrap.destinations.oci import OCILayoutWriter
from occystrap.destinations.shared import journal_path
from occystrap.oci import blob_path
from tests.unit.test_formats import digest, make_plan


def _plan(tmp_path, name, layers, tag):
    (tmp_path / name).mkdir()
    return make_plan(tmp_path / name, layers, image_id=0, tag=tag)


def _start(writer, plan, descs, present=()):
    writer.begin_image(plan)
    writer.add_config(plan)
    for d in descs:
        if d.digest in present:
            d.present = True
        writer.add_layer(plan, d)


def _all_blobs_of_index_exist(root) -> None:
    index = json.loads((root / "index.json").read_text())
    assert index["manifests"]
    for entry in index["manifests"]:
        manifest = json.loads(open(blob_path(str(root), entry["digest"]), "rb").read())
        for d in [manifest["config"], *manifest["layers"]]:
            assert os.path.exists(blob_path(str(root), d["digest"])), d


def test_failing_run_leaves_a_blob_another_run_relies_on(tmp_path):
    """X creates the layout and adds the shared layer; Y's probe finds it there; X fails and
    ends; Y publishes: its image is whole, the layout is kept."""
    root = tmp_path / "layout"
    x_plan, x_descs = _plan(tmp_path, "x", [b"shared", b"x-only"], "x")
    y_plan, y_descs = _plan(tmp_path, "y", [b"shared", b"y-only"], "y")
    x = OCILayoutWriter(str(root), None, token="xxxx")
    _start(x, x_plan, x_descs)
    y = OCILayoutWriter(str(root), None, token="yyyy")
    shared = digest(b"shared")
    assert OCILayoutWriter.has_blob(str(root), shared, 6, "yyyy")  # Y's resolve probe
    _start(y, y_plan, y_descs, present={shared})
    x.fail_image(x_plan)
    x.close(False)
    assert os.path.exists(blob_path(str(root), shared))
    assert not os.path.exists(blob_path(str(root), digest(b"x-only")))
    y.finish_image(y_plan, [d.digest for d in y_descs])
    y.close(True)
    _all_blobs_of_index_exist(root)
    assert not any(n.endswith(".journal") for n in os.listdir(root))


def test_failing_run_leaves_what_a_published_entry_references(tmp_path):
    root = tmp_path / "layout"
    x_plan, x_descs = _plan(tmp_path, "x", [b"shared", b"x-only"], "x")
    y_plan, y_descs = _plan(tmp_path, "y", [b"shared", b"y-only"], "y")
    x = OCILayoutWriter(str(root), None, token="xxxx")
    y = OCILayoutWriter(str(root), None, token="yyyy")
    _start(x, x_plan, x_descs)  # X adds the shared blob
    _start(y, y_plan, y_descs)  # Y's adopt finds it there
    y.finish_image(y_plan, [d.digest for d in y_descs])
    y.close(True)  # Y is gone: only its index entry protects the blob now
    x.fail_image(x_plan)
    x.close(False)
    _all_blobs_of_index_exist(root)
    assert (root / "oci-layout").exists()


def test_a_run_alone_removes_all_it_created(tmp_path):
    root = tmp_path / "layout"
    plan, descs = _plan(tmp_path, "x", [b"a", b"b"], "1.0")
    x = OCILayoutWriter(str(root), None, token="xxxx")
    _start(x, plan, descs)
    x.fail_image(plan)
    x.close(False)
    assert not root.exists()


def test_journal_of_a_killed_run_claims_nothing(tmp_path):
    root = tmp_path / "layout"
    plan, descs = _plan(tmp_path, "x", [b"a"], "1.0")
    x = OCILayoutWriter(str(root), None, token="xxxx")
    _start(x, plan, descs)
    dead = journal_path(str(root), "dead")
    with open(dead, "w") as f:  # nobody holds its lock
        f.write(f"=blobs/sha256/{digest(b'a')[7:]}\n")
    x.fail_image(plan)
    x.close(False)
    assert not os.path.exists(blob_path(str(root), digest(b"a")))
    assert sorted(os.listdir(root)) == [os.path.basename(dead)]  # not ours: left alone


def test_crash_clean_up_reads_the_journal(tmp_path):
    """After a crash the supervisor's twin writer knows no image: the journal says what the
    run added, and the twin removes what nothing needs."""
    root = tmp_path / "layout"
    plan, descs = _plan(tmp_path, "x", [b"a"], "1.0")
    x = OCILayoutWriter(str(root), None, token="xxxx")
    _start(x, plan, descs)
    x._added.clear()  # the twin's view
    x.close(False)
    assert not root.exists()


def test_unique_names_directory_shared_by_two_runs(tmp_path):
    root = tmp_path / "d"
    x_plan, x_descs = _plan(tmp_path, "x", [b"shared", b"x-only"], "x")
    y_plan, y_descs = _plan(tmp_path, "y", [b"shared", b"y-only"], "y")
    x = DirectoryWriter(str(root), unique_names=True, token="xxxx")
    _start(x, x_plan, x_descs)
    y = DirectoryWriter(str(root), unique_names=True, token="yyyy")
    shared = digest(b"shared")
    assert DirectoryWriter.has_layer(str(root), shared, "yyyy")
    _start(y, y_plan, y_descs, present={shared})
    x.fail_image(x_plan)
    x.close(False)
    y.finish_image(y_plan, [d.digest for d in y_descs])
    y.close(True)
    manifest = json.loads((root / "manifest-h_a_y.json").read_text())
    for rel in [manifest[0]["Config"], *manifest[0]["Layers"]]:
        assert (root / rel).exists(), rel
    assert not (root / digest(b"x-only")[7:]).exists()
    assert sorted(os.listdir(root)) == sorted(
        [
            "catalog.json",
            "manifest-h_a_y.json",
            manifest[0]["Config"],
            *[rel.split("/")[0] for rel in manifest[0]["Layers"]],
        ]
    )
