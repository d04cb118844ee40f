"""outcome.py: one result for the several runs of a --from-file spec."""

from __future__ import annotations

from occystrap.messages import ImageDone, ImageFailed, Notice, StageReport
from occystrap.outcome import RunResult, merge


def _done(i: int) -> ImageDone:
    return ImageDone(
        image_id=i,
        source=f"s{i}",
        destination=f"d{i}",
        manifest_digest="m",
        layers=1,
        bytes=10,
        skipped_layers=0,
    )


def _failed(i: int, kind: str) -> ImageFailed:
    return ImageFailed(image_id=i, source=f"s{i}", stage="write", reason="r", kind=kind)


def test_one_result_is_itself() -> None:
    result = RunResult(done=[_done(0)])
    assert merge([result]) is result


def test_several_runs_add_up() -> None:
    first = RunResult(
        done=[_done(0)],
        failed=[_failed(1, "NotFoundError")],
        wall_seconds=2.0,
        sources=2,
        peak_pss_total=90,
        image_seconds={0: 1.0},
        notices=[Notice(text="a")],
        reports={"fetch": StageReport(stage="fetch", retries=2)},
    )
    second = RunResult(
        done=[_done(0), _done(1)],
        failed=[_failed(2, "AuthError")],
        wall_seconds=3.5,
        sources=1,
        peak_pss_total=70,
        error="interrupted",
        interrupted=True,
        terminated=True,
        reports={"write": StageReport(stage="write", retries=1)},
    )
    third = RunResult(error="later", wall_seconds=0.5)
    merged = merge([first, second, third])
    assert [d.source for d in merged.done] == ["s0", "s0", "s1"]
    assert [f.kind for f in merged.failed] == ["NotFoundError", "AuthError"]
    assert merged.wall_seconds == 6.0 and merged.sources == 3
    assert merged.peak_pss_total == 90  # the largest run's, not a sum
    assert merged.error == "interrupted"  # the first error
    assert merged.interrupted and merged.terminated  # exit 143, as the run that was stopped
    assert merged.notices == [Notice(text="a")]
    assert merged.reports == {}  # the last run's measurements
    assert merged.failures_by_kind() == {"AuthError": 1, "NotFoundError": 1}
