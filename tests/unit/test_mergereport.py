"""`occystrap report merge`: the shards' stats documents, as stats.to_dict writes them, added
up into one mirror report; files that cannot be one mirror are refused with one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from occystrap.cli import cli
from occystrap.errors import OccystrapError
from occystrap.messages import ImageDone, ImageFailed, StageReport
from occystrap.outcome import RunResult
from occystrap.stats import merge as mergereport
from occystrap.stats import schema as stats


def _done(i: int, size: int, up_to_date: bool = False) -> ImageDone:
    return ImageDone(
        image_id=i,
        source=f"registry://src/team/app{i}:1",
        destination=f"registry://dst/mirror/team/app{i}:1",
        manifest_digest="sha256:" + "0" * 64,
        layers=0 if up_to_date else 2,
        bytes=0 if up_to_date else size,
        skipped_layers=0,
        up_to_date=up_to_date,
    )


def _shard_doc(
    shard: tuple[int, int] | None,
    done: list[ImageDone],
    failed: list[ImageFailed] = (),
    wall: float = 2.0,
    sent: int = 0,
    skipped: int = 0,
    peak: int = 50_000_000,
) -> dict[str, Any]:
    """A stats document exactly as a shard's run writes it."""
    result = RunResult(done=list(done), failed=list(failed), wall_seconds=wall, peak_pss_total=peak)
    result.reports = {
        "fetch": StageReport(
            stage="fetch", wall_seconds=wall, requests={"src": 10}, bytes_received=sent
        ),
        "write": StageReport(
            stage="write",
            wall_seconds=wall,
            requests={"dst": 5},
            bytes_sent=sent,
            mounts=1,
            layers_skipped=3,
            bytes_skipped=skipped,
            retries=1,
        ),
    }
    doc = json.loads(stats.to_json(result, shard))
    assert doc["run"]["shard"] == ({"index": shard[0], "count": shard[1]} if shard else None)
    return doc


def _files(*docs: dict[str, Any]) -> list[mergereport.ShardFile]:
    return [mergereport.ShardFile(f"/stats/m-{i}.json", d) for i, d in enumerate(docs)]


def _three_shards() -> list[mergereport.ShardFile]:
    failed = ImageFailed(
        image_id=3,
        source="registry://src/team/app9:1",
        stage="fetch",
        reason="blob sha256:ab… not found",
    )
    return _files(
        _shard_doc((0, 3), [_done(1, 1000), _done(2, 2000)], wall=4.0, sent=3000),
        _shard_doc(
            (1, 3),
            [_done(4, 500), _done(5, 0, up_to_date=True)],
            [failed],
            wall=6.5,
            sent=500,
            skipped=700,
            peak=80_000_000,
        ),
        _shard_doc((2, 3), [_done(6, 0, up_to_date=True)], wall=1.0, skipped=900),
    )


def test_run_block_says_which_shard_and_when() -> None:
    doc = _shard_doc((1, 4), [_done(1, 10)], wall=125.4)
    run = doc["run"]
    assert run["shard"] == {"index": 1, "count": 4} and run["hostname"]
    assert run["finished_at"].endswith("Z") and run["started_at"] < run["finished_at"]
    assert _shard_doc(None, [])["run"]["shard"] is None


def test_three_shards_add_up() -> None:
    merged = mergereport.merge(_three_shards())
    assert merged["schema"] == "occystrap.mirror-report/1"
    assert merged["complete"] and merged["shard_count"] == 3 and merged["missing_shards"] == []
    assert merged["images"] == {"total": 6, "copied": 3, "up_to_date": 2, "failed": 1}
    assert merged["bytes"] == {
        "copied": 3500,
        "received": 3500,
        "sent": 3500,
        "avoided": 1600,
        "layers_avoided": 9,
        "mounts": 3,
    }
    assert merged["requests"] == {"total": 45, "retries": 3, "throttled": 0}
    assert merged["wall_seconds"] == {"slowest_shard": 6.5, "all_shards": 11.5}
    assert merged["peak_pss_max"] == 80_000_000
    assert [s["images"] for s in merged["shards"]] == [
        {"copied": 2, "up_to_date": 0, "failed": 0},
        {"copied": 1, "up_to_date": 1, "failed": 1},
        {"copied": 0, "up_to_date": 1, "failed": 0},
    ]
    assert merged["failed"] == [
        {
            "source": "registry://src/team/app9:1",
            "stage": "fetch",
            "reason": "blob sha256:ab… not found",
            "shard": "1/3",
            "file": "/stats/m-1.json",
        }
    ]
    assert mergereport.exit_code(merged) == 1  # an image failed
    text = mergereport.to_text(merged)
    assert text.startswith(
        "mirror: 6 images from 3 of 3 shards: 3 copied, 2 up to date, 1 failed\n"
    )
    assert (
        "avoided 1.6 kB already at the destination (9 layers found there, 2 images up to "
        "date), 3 blobs mounted"
    ) in text
    assert "slowest shard 6.5 s, all shards 11.5 s" in text
    assert "registry://src/team/app9:1: blob sha256:ab… not found (fetch, shard 1/3)" in text
    rows = [line for line in text.splitlines() if line[:4] in ("0/3 ", "1/3 ", "2/3 ")]
    assert len(rows) == 3 and rows[1].split()[3:7] == ["6.5", "1", "1", "1"]


def test_order_of_files_does_not_matter() -> None:
    files = _three_shards()
    assert mergereport.merge(files[::-1])["shards"] == mergereport.merge(files)["shards"]


def test_a_missing_shard_makes_it_incomplete() -> None:
    merged = mergereport.merge(_three_shards()[:2])
    assert not merged["complete"] and merged["missing_shards"] == [2]
    assert mergereport.exit_code(merged) == 1
    assert "missing: shard 2/3" in mergereport.to_text(merged)


def test_a_clean_mirror_exits_0() -> None:
    files = _files(_shard_doc((0, 2), [_done(1, 10)]), _shard_doc((1, 2), [_done(2, 10)]))
    merged = mergereport.merge(files)
    assert merged["complete"] and mergereport.exit_code(merged) == 0


def test_an_image_in_two_shards_is_a_duplicate() -> None:
    files = _files(_shard_doc((0, 2), [_done(1, 10)]), _shard_doc((1, 2), [_done(1, 10)]))
    merged = mergereport.merge(files)
    assert merged["duplicates"] == [
        {
            "image": "registry://dst/mirror/team/app1:1",
            "files": ["/stats/m-0.json", "/stats/m-1.json"],
        }
    ]
    assert not merged["complete"] and mergereport.exit_code(merged) == 1


@pytest.mark.parametrize(
    "docs, message",
    [
        ([((0, 3), 1), ((0, 3), 2)], "shard 0/3 twice: /stats/m-0.json (finished "),
        (
            [((0, 3), 1), ((1, 2), 2)],
            "/stats/m-1.json: shard 1/2, but /stats/m-0.json is shard 0/3",
        ),
        ([((0, 3), 1), (None, 2)], "/stats/m-1.json: written without --shard"),
    ],
)
def test_files_that_are_not_one_mirror_are_refused(docs: list[Any], message: str) -> None:
    files = _files(*[_shard_doc(shard, [_done(i, 10)]) for shard, i in docs])
    with pytest.raises(OccystrapError) as exc:
        mergereport.merge(files)
    assert message in str(exc.value)


def test_runs_without_shards_merge_as_runs() -> None:
    merged = mergereport.merge(
        _files(_shard_doc(None, [_done(1, 10)]), _shard_doc(None, [_done(2, 10)]))
    )
    assert merged["shard_count"] is None and merged["complete"]
    assert mergereport.to_text(merged).startswith("mirror: 2 images from 2 runs:")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"schema": "occystrap.stats/2", "images": {', "not JSON (Expecting"),
        ('{"schema": "occystrap.stats/1", "images": {}}', "schema: occystrap.stats/1"),
        ("[1, 2]", "schema: none"),
        (b"\xff\xfe", "not UTF-8"),
        (
            '{"schema": "occystrap.stats/2", "image_results": [], "run": {"shard": {"index": 3, '
            '"count": 3}}}',
            "run.shard is not",
        ),
        ('{"schema": "occystrap.stats/2", "image_results": [], "run": "x"}', "run.shard is not"),
        ('{"schema": "occystrap.stats/2", "image_results": [1]}', "not an object"),
        (
            '{"schema": "occystrap.stats/2", "image_results": [], "images": {"done": "x"}}',
            "malformed stats document",
        ),
    ],
)
def test_load_names_the_bad_file(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = tmp_path / "shard.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(OccystrapError) as exc:
        mergereport.merge(mergereport.load([str(path)]))
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value)


def test_cli_report_merge(tmp_path: Path) -> None:
    paths = []
    for f in _three_shards():
        path = tmp_path / Path(f.path).name
        path.write_text(json.dumps(f.doc))
        paths.append(str(path))
    runner = CliRunner()
    r = runner.invoke(cli, ["report", "merge", "-O", "json", *paths])
    assert r.exit_code == 1 and json.loads(r.output)["images"]["total"] == 6
    r = runner.invoke(cli, ["report", "merge", *paths[:1]])
    assert r.exit_code == 1 and "missing: shard 1/3" in r.output
    (tmp_path / "bad.json").write_text("{")
    r = runner.invoke(cli, ["report", "merge", str(tmp_path / "bad.json")])
    assert r.exit_code == 1 and "bad.json: not JSON" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["report", "merge"])
    assert r.exit_code == 2


def test_sections_that_are_not_objects_are_refused(tmp_path):
    from occystrap.errors import OccystrapError
    from occystrap.stats import merge

    path = tmp_path / "s.json"
    path.write_text(
        json.dumps({"schema": "occystrap.stats/2", "image_results": [], "images": None})
    )
    with pytest.raises(OccystrapError, match="'images' is not an object"):
        merge.load([str(path)])
