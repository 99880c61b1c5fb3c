from hypothesis import given, settings
from hypothesis import strategies as st

from pack_agent.config import ScrapRule
from pack_agent.decoder import Reading
from pack_agent.policy import ScrapPolicy

DAY = 86400.0


def rule(**kw) -> ScrapRule:
    base = dict(
        id="capacity-80",
        metric="soh",
        below=80.0,
        consecutive=5,
        sample_interval_s=DAY,
        description_en="e",
        description_zh="z",
    )
    base.update(kw)
    return ScrapRule(**base)


def feed(policy: ScrapPolicy, values: list[float], step: float = DAY, t0: float = 1e9):
    out = []
    for i, v in enumerate(values):
        out += policy.observe(Reading("soh", v, t0 + i * step), "CODE")
    return out


def test_decides_after_consecutive_samples_with_evidence():
    p = ScrapPolicy([rule()])
    decisions = feed(p, [81, 79.5, 79.4, 79.0, 78.9, 79.2])
    assert len(decisions) == 1
    ev = decisions[0].evidence()
    assert ev["rule_id"] == "capacity-80" and ev["threshold"] == 80.0
    assert ev["sample_count"] == 5 and ev["statistic"]["median"] == 79.2
    assert ev["pack_code"] == "CODE"
    assert ev["first_reading_time"] < ev["last_reading_time"]


def test_one_reading_never_decides():
    p = ScrapPolicy([rule(consecutive=2)])
    assert feed(p, [50.0]) == []


def test_a_reading_at_the_line_restarts_the_count():
    p = ScrapPolicy([rule()])
    assert feed(p, [79, 79, 79, 79, 80, 79, 79, 79, 79]) == []


def test_readings_closer_than_the_interval_count_once():
    p = ScrapPolicy([rule()])
    # 50 readings an hour apart: about two days, not five samples
    assert feed(p, [70.0] * 50, step=3600) == []


def test_latched_until_reset_and_restored_from_state():
    p = ScrapPolicy([rule()])
    assert len(feed(p, [70] * 5)) == 1
    assert feed(p, [70] * 20, t0=2e9) == []
    restored = ScrapPolicy([rule()], latched=p.latched_rules)
    assert feed(restored, [70] * 20) == []
    restored.reset()
    assert len(feed(restored, [70] * 5, t0=3e9)) == 1


def test_repeated_and_backwards_time_is_not_new_evidence():
    p = ScrapPolicy([rule()])
    out = []
    for _ in range(10):
        out += p.observe(Reading("soh", 70, 1e9), None)
    out += p.observe(Reading("soh", 70, 1e9 - 5 * DAY), None)
    assert out == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=200),
    st.integers(min_value=2, max_value=20),
)
def test_never_decides_without_a_full_run_below(values, n):
    p = ScrapPolicy([rule(consecutive=n)])
    decisions = feed(p, values)
    run = best = 0
    for v in values:
        run = run + 1 if v < 80 else 0
        best = max(best, run)
    assert bool(decisions) == (best >= n)
    assert len(decisions) <= 1
    for d in decisions:
        assert all(v < 80 for _, v in d.samples) and len(d.samples) == n


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=79.0, max_value=81.0), max_size=300))
def test_jitter_around_the_line_decides_only_on_a_real_run(values):
    p = ScrapPolicy([rule(consecutive=14)])
    decisions = feed(p, values)
    if decisions:
        assert all(v < 80 for _, v in decisions[0].samples)
