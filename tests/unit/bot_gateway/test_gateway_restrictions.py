"""The rule behind restrictions: banned, else suspended, else slowed down after enough recent
refusals, else free; and when refusals suspend."""

from datetime import UTC, datetime, timedelta

from bot_gateway.restrictions import OK, Kind, Policy, Standing, standing, suspends
from moderation import ModerationSettings

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
POLICY = Policy.of(
    ModerationSettings(refusal_window_s=600, slowdown_after=2, slowdown_s=60, suspend_after=4)
)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_a_ban_outranks_everything_and_keeps_its_reason() -> None:
    assert standing(NOW, "spam", NOW + timedelta(hours=1), [ago(1)] * 9, POLICY) == Standing(
        Kind.banned, reason="spam"
    )


def test_a_suspension_holds_until_its_end() -> None:
    until = NOW + timedelta(minutes=5)
    assert standing(NOW, None, until, [], POLICY) == Standing(Kind.suspended, until=until)
    assert standing(NOW, None, ago(1), [], POLICY) is OK  # over


def test_enough_recent_refusals_slow_down_from_the_last_one() -> None:
    assert standing(NOW, None, None, [ago(100)], POLICY) is OK  # one is not enough
    slowed = standing(NOW, None, None, [ago(100), ago(20)], POLICY)
    assert slowed == Standing(Kind.slowed, until=ago(20) + timedelta(seconds=60))
    assert standing(NOW, None, None, [ago(100), ago(61)], POLICY) is OK  # waited long enough


def test_refusals_outside_the_window_do_not_count() -> None:
    assert standing(NOW, None, None, [ago(700), ago(20)], POLICY) is OK


def test_refusals_suspend_at_the_operators_count() -> None:
    assert not suspends(3, POLICY)
    assert suspends(4, POLICY)
