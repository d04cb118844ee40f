"""The one retry loop (`retry.retrying`) and its budget: what is retried, how often, what is
raised when the budget is spent, and that every retry waits through the pause it is given."""

from __future__ import annotations

import pytest

from occystrap.errors import AuthError, RegistryError, TransientError
from occystrap.registry.retry import Budget, backoff_scale, retrying


class Script:
    """An attempt that raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.pauses: list[tuple[int, float | None, str]] = []

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"

    def pause(self, attempt: int, retry_after: float | None, why: str) -> None:
        self.pauses.append((attempt, retry_after, why))


def test_success_after_transient_failures() -> None:
    script = Script(
        TransientError("GET x: timed out"),
        TransientError("GET x: 503 Service Unavailable", retry_after=7.0),
    )
    assert retrying(Budget(3), script, script.pause) == "done"
    assert script.calls == 3
    assert script.pauses == [
        (0, None, "GET x: timed out"),
        (1, 7.0, "GET x: 503 Service Unavailable"),
    ]


def test_budget_spent_gives_a_final_error_with_the_data() -> None:
    script = Script(
        *[
            TransientError(
                "GET x: 429 Too Many Requests", retry_after=2.0, host="r.test", status=429
            )
        ]
        * 5
    )
    budget = Budget(2)
    with pytest.raises(TransientError) as caught:
        retrying(budget, script, script.pause)
    exc = caught.value
    assert str(exc) == "GET x: 429 Too Many Requests after 3 attempts"
    assert (exc.attempts, exc.retryable, exc.status, exc.host, exc.retry_after) == (
        3,
        False,
        429,
        "r.test",
        2.0,
    )
    assert script.calls == 3 and len(script.pauses) == 2 and budget.exhausted()


@pytest.mark.parametrize(
    "error", [RegistryError("x"), AuthError("x"), ValueError("x"), TransientError("x", attempts=4)]
)
def test_final_and_other_errors_pass_at_once(error: Exception) -> None:
    script = Script(error)
    with pytest.raises(type(error)):
        retrying(Budget(5), script, script.pause)
    assert script.calls == 1 and script.pauses == []


def test_shared_budget_and_custom_messages() -> None:
    budget = Budget(3)
    budget.used = 2  # an earlier request of the same operation spent two
    script = Script(TransientError("reset"), TransientError("reset"))
    with pytest.raises(TransientError, match=r"^cannot reach r: reset \(4 attempts\)$"):
        retrying(
            budget,
            script,
            script.pause,
            why=lambda e: f"GET y: {e}",
            give_up=lambda e, n: e.spent(n, f"cannot reach r: {e} ({n} attempts)"),
        )
    assert script.pauses == [(2, None, "GET y: reset")]


def test_zero_retries() -> None:
    script = Script(TransientError("reset"))
    with pytest.raises(TransientError, match="reset after 1 attempts"):
        retrying(Budget(0), script, script.pause)
    assert script.pauses == []


@pytest.mark.parametrize(
    ("value", "scale"), [(None, 1.0), ("0.01", 0.01), ("0", 0.0), ("-1", 1.0), ("fast", 1.0)]
)
def test_backoff_scale(monkeypatch: pytest.MonkeyPatch, value: str | None, scale: float) -> None:
    if value is None:
        monkeypatch.delenv("OCCYSTRAP_BACKOFF_SCALE", raising=False)
    else:
        monkeypatch.setenv("OCCYSTRAP_BACKOFF_SCALE", value)
    assert backoff_scale() == scale
