"""Admission (-J) in stages/resolve.py: an image takes a slot only once it has something to
move or a failure to report; twice -J images are planned at once, so a bulk re-run's
up-to-date images overlap beyond -J. Stand-ins for the source, the stage and the probe; no
network."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from occystrap import mediatypes as mt
from occystrap.config import Config
from occystrap.destinations import Destination
from occystrap.errors import NotFoundError, TransientError
from occystrap.messages import ImagePlan
from occystrap.reference import parse_image_ref, parse_location
from occystrap.sources import Entry, Resolved, resolved_from_bytes
from occystrap.stages import resolve
from occystrap.stages.plan import layerless_plan

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": "sha256:" + "c" * 64, "size": 2},
        "layers": [],
    }
).encode()


class _Stage:
    """What resolve sends: plans, and failures (which write would give a slot back for)."""

    def __init__(self) -> None:
        self.plans: list[ImagePlan] = []
        self.failed: list[str] = []
        self.reasons: list[str] = []
        self.lock = threading.Lock()

    def put(self, msg: Any) -> None:
        with self.lock:
            if isinstance(msg, ImagePlan):
                self.plans.append(msg)

    def tell(self, msg: Any) -> None:
        pass

    def fail(self, image_id: int, source: str, reason: str, kind: str) -> None:
        with self.lock:
            self.failed.append(source)
            self.reasons.append(reason)


class _Source:
    """A registry source of `names` (one tag each). A manifest GET waits at `gate` (if any),
    then answers; a name ending in "?" is an optional entry (a bulk pattern's literal tag)
    whose repository lacks it, one ending in "!" cannot be fetched, one ending in "%" meets
    a bug (KeyError)."""

    local = False

    def __init__(self, names: list[str], gate: threading.Barrier | None = None):
        self.names, self.gate = names, gate

    def entries(self) -> list[Entry]:
        return [
            Entry(parse_image_ref(f"127.0.0.1:5000/{n.strip('?!%')}:1"), n, self, n.endswith("?"))
            for n in self.names
        ]

    def fetch_manifest(self, reference: str) -> Resolved:
        if self.gate is not None:
            self.gate.wait()
        if reference.endswith("?"):
            raise NotFoundError(f"manifest {reference} not found")
        if reference.endswith("!"):
            raise TransientError("connection reset by peer")
        if reference.endswith("%"):
            raise KeyError(reference)
        return resolved_from_bytes(MANIFEST, mt.OCI_MANIFEST, "stand-in")


def _resolver(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    source: _Source,
    parallel: int,
    up_to_date: bool,
    referrers: bool = False,
) -> tuple[resolve.Resolver, _Stage, threading.Semaphore]:
    stage, admit = _Stage(), threading.BoundedSemaphore(parallel)  # as the pipeline's
    dest = Destination(parse_location("registry://127.0.0.1:5001/m", role="destination"), "t")
    config = Config(image_parallel=parallel, referrers=referrers)
    resolver = resolve.Resolver(
        stage,  # type: ignore[arg-type]
        dest,
        config,
        admit,  # type: ignore[arg-type]
        str(tmp_path),
        None,
        None,
    )
    monkeypatch.setattr(resolve, "open_source", lambda *a, **k: (source, True))
    monkeypatch.setattr(resolver.tree.probe, "up_to_date", lambda target, digest: up_to_date)
    return resolver, stage, admit


def _run(resolver: resolve.Resolver, uri: str) -> threading.Event:
    """resolver.run on a thread, so that a run blocked for a slot nobody gives back fails
    the test instead of hanging it: the event is set when it returns (or raises; the
    exception is kept in `resolver.raised`)."""
    done = threading.Event()

    def target() -> None:
        try:
            resolver.run([parse_location(uri, role="source")])
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            resolver.raised = exc  # type: ignore[attr-defined]
        done.set()

    threading.Thread(target=target, daemon=True).start()
    return done


def _finish(resolver: resolve.Resolver, uri: str) -> None:
    assert _run(resolver, uri).wait(20), "resolve blocked waiting for an admission slot"
    raised = getattr(resolver, "raised", None)
    if raised is not None:
        raise raised


def _slots_free(admit: threading.Semaphore, most: int) -> int:
    free = 0
    while free < most and admit.acquire(blocking=False):
        free += 1
    return free


def test_up_to_date_images_take_no_slot_and_overlap_beyond_j(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """-J 2: four up-to-date images are planned at once (the barrier needs all four in
    fetch_manifest together), none takes a slot, and each plan says so (released)."""
    source = _Source([f"app-{i}" for i in range(8)], threading.Barrier(4, timeout=5))
    resolver, stage, admit = _resolver(monkeypatch, tmp_path, source, 2, up_to_date=True)
    _finish(resolver, "registry://127.0.0.1:5000/app-*:1")
    assert len(stage.plans) == 8 and all(p.up_to_date and p.released for p in stage.plans)
    assert not stage.failed
    assert _slots_free(admit, 3) == 2


def test_a_failed_image_holds_a_slot_for_write_to_give_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A manifest that cannot be fetched fails its image: its slot is taken (write gives one
    back for every failure it hears of). An optional entry's 404 is no image and takes none;
    neither does an up-to-date one."""
    source = _Source(["a!", "b?", "c", "d!"])
    resolver, stage, admit = _resolver(monkeypatch, tmp_path, source, 3, up_to_date=True)
    _finish(resolver, "registry://127.0.0.1:5000/x/*:1")
    assert sorted(stage.failed) == [
        "registry://127.0.0.1:5000/a:1",
        "registry://127.0.0.1:5000/d:1",
    ]
    assert [p.released for p in stage.plans] == [True]
    assert _slots_free(admit, 3) == 1  # the two failures' slots, until write gives them back


def _plan_as_layerless(resolver: resolve.Resolver, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image's tree planned without the destination: its plan alone, no layers."""

    def plan_tree(job: Any, got: Any, parent: int, depth: int, image_id: int) -> Any:
        plan = layerless_plan(image_id, job.ref, job.text, got, job.insecure, job.target)
        return [(plan, [])]

    monkeypatch.setattr(resolver.tree, "plan_tree", plan_tree)


def test_an_image_with_something_to_move_waits_for_a_slot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """-J 2: two images that are not up to date take both slots; the third is sent only once
    write gives one back (here, the test)."""
    resolver, stage, admit = _resolver(
        monkeypatch, tmp_path, _Source(["a", "b", "c"]), 2, up_to_date=False
    )
    _plan_as_layerless(resolver, monkeypatch)
    done = _run(resolver, "registry://127.0.0.1:5000/x/*:1")
    deadline = time.monotonic() + 10
    while len(stage.plans) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert len(stage.plans) == 2 and not done.is_set()
    admit.release()  # write: the first image is through
    assert done.wait(10)
    assert len(stage.plans) == 3 and not any(p.released for p in stage.plans)
    assert _slots_free(admit, 3) == 0


def test_an_up_to_date_image_with_referrers_holds_a_slot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """With --referrers an image found up to date may still have referrers to copy: it takes
    a slot, and its plan says write gives it back."""
    resolver, stage, admit = _resolver(
        monkeypatch, tmp_path, _Source(["a"]), 2, up_to_date=True, referrers=True
    )
    monkeypatch.setattr(resolver.tree, "tree_digests", lambda job, got, depth: [got.digest])
    monkeypatch.setattr(resolver.referrals, "plan", lambda job, top, subjects: [])
    _finish(resolver, "registry://127.0.0.1:5000/x/*:1")
    assert [(p.up_to_date, p.released) for p in stage.plans] == [(True, False)]
    assert _slots_free(admit, 3) == 1


def test_a_bug_on_a_planner_thread_fails_its_image_and_ends_the_stage(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A bug (not a library's verdict) while planning one image, on a planner thread: the
    image fails with an internal error (holding a slot for write to give back), the others
    are planned, and the run raises the bug at the end instead of losing it in a future."""
    source = _Source(["a", "b%", "c", "d"])
    resolver, stage, admit = _resolver(monkeypatch, tmp_path, source, 2, up_to_date=True)
    with pytest.raises(KeyError):
        _finish(resolver, "registry://127.0.0.1:5000/x/*:1")
    assert stage.failed == ["registry://127.0.0.1:5000/b:1"]
    assert stage.reasons[0].startswith("internal error in the resolve stage: KeyError")
    assert len(stage.plans) == 3
    assert _slots_free(admit, 3) == 1
