"""The planner's KPA model makes Knative's own decisions.

Each table's inputs and expected values come from Knative Serving's autoscaler source at tag
knative-v1.23.0 (file and function named in each docstring; several cases are the scenarios of
Knative's own unit tests, named too) and from the documented algorithm
(knative.dev/docs/serving/autoscaling/: kpa-specific, scale-to-zero, scale-bounds,
target-burst-capacity).
"""

from __future__ import annotations

import pytest

from knative.plan import kpa
from knative.plan.annotations import Autoscaling


def settings(target: float = 10, **changes) -> Autoscaling:
    """A revision whose effective target is exactly `target` (utilization 100%)."""
    base = dict(target=float(target), target_utilization=1.0, container_concurrency=0, window=60.0,
                panic_threshold_percentage=200.0, target_burst_capacity=211.0)
    return Autoscaling(**{**base, **changes})


# --- averages -----------------------------------------------------------------------------------


def test_window_average_follows_knatives_timed_buckets():
    """pkg/autoscaler/aggregation/bucketing.go, TimedFloat64Buckets.Record / WindowAverage: the
    average covers only buckets since the first write, treats the seconds since the last write
    as holes, resets after a whole window without writes, and ignores writes older than a window
    (the sequence of TestTimedFloat64BucketsWindowAverage, 5 s window)."""
    buckets = kpa.WindowAverager(5)
    buckets.record(0, 1)
    assert buckets.average(0) == 1  # partial window: not 1/5
    for second in range(1, 5):
        buckets.record(second, second + 1)
    steps = [
        ("full window", lambda: None, 4, 15 / 5),
        ("now lags behind the last write", lambda: None, 3, 15 / 5),
        ("short hole", lambda: None, 6, (15 - 1 - 2) / (5 - 2)),
        ("a whole window of hole", lambda: None, 10, 0),
        ("write after a hole", lambda: buckets.record(6, 91), 6, (15 - 1 - 2 + 91) / 5),
        ("a minute later: starts over", lambda: buckets.record(60, 1984), 60, 1984),
        ("earlier second within the window", lambda: buckets.record(57, 4), 60, (4 + 1984) / 4),
        ("next second", lambda: buckets.record(61, 5), 61, (4 + 1984 + 5) / 5),
        ("earlier again", lambda: buckets.record(58, 10), 61, (4 + 10 + 1984 + 5) / 5),
        ("older than the window: ignored", lambda: buckets.record(55, 10), 61, (4 + 10 + 1984 + 5) / 5),
        ("exactly a window old: ignored", lambda: buckets.record(56, 10), 61, (4 + 10 + 1984 + 5) / 5),
        ("a window without writes: starts over", lambda: buckets.record(66, 10), 66, 10),
    ]
    for label, action, now, expected in steps:
        action()
        assert buckets.average(now) == pytest.approx(expected), label


@pytest.mark.parametrize("window, percentage, expected", [
    (60, 10, 6),  # the defaults: 6 s (docs: panic-window-percentage)
    (30, 10, 3),
    (6, 1, 1),  # 0.06 s rounds to 0, raised to one bucket
    (100, 15, 15),
])
def test_panic_window_is_a_rounded_share_of_the_stable_window(window, percentage, expected):
    """pkg/reconciler/autoscaling/resources/metric.go, MakeMetric: panic window = stable window x
    percentage / 100, rounded to the second, at least BucketSize (1 s)."""
    assert Autoscaling(window=window, panic_window_percentage=percentage).panic_window == expected


@pytest.mark.parametrize("cc, target, utilization, total, aim", [
    (0, None, 0.7, 100, 70),  # container-concurrency-target-default 100 x 70%
    (4, None, 0.7, 4, 2.8),  # containerConcurrency alone: 4 x 0.7 (docs/KNATIVE.md)
    (32, 10, 0.8, 10, 8),  # a target annotation replaces containerConcurrency
    (32, 50, 0.7, 32, 22.4),  # ... but never above it: the smaller wins
    (0, 0.001, 0.7, 0.001, 0.01),  # never below TargetMin
])
def test_effective_target(cc, target, utilization, total, aim):
    """pkg/reconciler/autoscaling/resources/target.go, ResolveMetricTarget: `total` (per-pod
    capacity the EBC uses) and `target` = max(TargetMin, total x utilization)."""
    s = Autoscaling(container_concurrency=cc, target=target, target_utilization=utilization)
    assert s.total_value == pytest.approx(total)
    assert s.target_value == pytest.approx(aim)


# --- the decider -------------------------------------------------------------------------------


@pytest.mark.parametrize("label, changes, ready, stable, panic, expected", [
    ("stable: ceil(50 / 10)", {}, 1, 50, 10, 5),  # TestAutoscalerStableModeIncreaseWithConcurrencyDefault
    ("stable: ceil(100 / 10)", {}, 1, 100, 10, 10),
    ("fractional concurrency rounds up", {}, 1, 0.2, 0.2, 1),
    ("no traffic: zero", {}, 1, 0, 0, 0),  # TestAutoscalerStableModeNoTrafficScaleToZero
    ("scale-up rate: 10 x 1 ready", {"max_scale_up_rate": 10}, 1, 1000, 1001, 10),  # TestAutoscalerRateLimitScaleUp
    ("scale-up rate: 10 x 10 ready", {"max_scale_up_rate": 10}, 10, 1000, 1001, 100),
    ("scale-up rate rounds up: ceil(1.1 x 2)", {"target": 1, "max_scale_up_rate": 1.1}, 2, 3, 3.1, 3),
    ("scale-down rate 10: 100 -> 10", {"max_scale_down_rate": 10}, 100, 1, 1, 10),  # TestAutoscalerRateLimitScaleDown
    ("scale-down rate 10: 10 -> 1", {"max_scale_down_rate": 10}, 10, 1, 1, 1),
    ("default rate 2: at most halves", {}, 10, 0, 0, 5),
    ("default rate 2: 5 -> 2", {}, 5, 0, 0, 2),
    ("scale-down rate 1.1: floor(100 / 1.1)", {"max_scale_down_rate": 1.1}, 100, 1, 1, 90),
    ("zero ready pods count as one", {}, 0, 35, 35, 4),
])
def test_stable_mode_and_rate_limits(label, changes, ready, stable, panic, expected):
    """pkg/autoscaler/scaling/autoscaler.go, autoscaler.Scale: desired = ceil(stable / target),
    kept within [floor(ready / max-scale-down-rate), ceil(max-scale-up-rate x ready)] with ready
    counted as at least 1 (cases of TestAutoscalerScale and the rate-limit tests)."""
    decider = kpa.Decider(settings(**changes))
    assert decider.scale(2.0, ready, stable, panic).desired == expected, label


def test_unreachable_revision_is_not_held_by_the_scale_down_rate():
    """autoscaler.Scale: maxScaleDown is 0 when the revision is not reachable (no route points
    at it), so it drops at once (TestAutoscalerScale, StableModeDecreaseNonReachable)."""
    decider = kpa.Decider(settings(max_scale_down_rate=1.1), reachable=False)
    assert decider.scale(2.0, 100, 1, 1).desired == 1


def test_panic_starts_at_the_threshold_and_takes_the_larger_recommendation():
    """autoscaler.Scale: panic when ceil(panic / target) / ready >= panic threshold; in panic
    the larger of the stable and panic recommendations wins (TestAutoscalerScale,
    PanicModeDoublePodCount, PanicStableLargerThanPanic)."""
    burst = kpa.Decider(settings())
    result = burst.scale(2.0, 1, 50, 100)
    assert (result.desired, result.panicking) == (10, True)
    below = kpa.Decider(settings())  # ceil(100 / 10) / 6 = 1.67 < 2: no panic
    result = below.scale(2.0, 6, 50, 100)
    assert (result.desired, result.panicking) == (5, False)
    stable_larger = kpa.Decider(settings(target=1))
    stable_larger.scale(0.0, 5, 5, 30)  # enter panic
    assert stable_larger.scale(2.0, 5, 50, 30).desired == 50


def test_panic_threshold_setting_moves_the_trigger():
    """autoscaler.Scale with PanicThreshold = panic-threshold-percentage / 100 (docs: 200% by
    default, 110..1000): a burst that doubles the need panics at 200%, not at 400%."""
    assert kpa.Decider(settings(panic_threshold_percentage=200)).scale(2.0, 5, 50, 100).panicking
    assert not kpa.Decider(settings(panic_threshold_percentage=400)).scale(2.0, 5, 50, 100).panicking


def test_panic_never_scales_down_and_ends_a_stable_window_after_the_last_trigger():
    """autoscaler.Scale: in panic the count only grows (maxPanicPods); panic ends once a whole
    stable window passed since the threshold was last crossed (TestAutoscalerPanicThenUnPanicScaleDown)."""
    decider = kpa.Decider(settings(max_scale_up_rate=10, max_scale_down_rate=10))
    assert decider.scale(0.0, 1, 100, 100).desired == 10  # 10 / 1 >= 2: panic from here
    assert decider.scale(2.0, 10, 100, 1000).desired == 100  # still crossing: panic extended to t=2
    assert decider.scale(32.0, 10, 1, 1).desired == 100  # traffic gone, still panicking
    assert decider.scale(62.0, 10, 1, 1).desired == 100  # 2 + 60 is not before 62
    result = decider.scale(64.0, 10, 1, 1)
    assert (result.desired, result.panicking) == (1, False)


@pytest.mark.parametrize("label, ready, stable, panic, expected, panicking", [
    ("crossing again extends panic", 40, 30, 80, 80, True),  # TestAutoscalerExtendPanicWindow
    ("slow increase: still in panic, grows", 40, 30, 41, 41, True),  # TestAutoscalerUnpanicAfterSlowIncrease
])
def test_panic_extension(label, ready, stable, panic, expected, panicking):
    """autoscaler.Scale: a panic that began at t=0 (ready 10, panic concurrency 25, target 1)
    30 s later, with more pods ready."""
    decider = kpa.Decider(settings(target=1, max_scale_up_rate=10, max_scale_down_rate=10))
    assert decider.scale(0.0, 10, 11, 25).desired == 25
    result = decider.scale(30.0, ready, stable, panic)
    assert (result.desired, result.panicking) == (expected, panicking), label


def test_panic_ends_after_a_slow_increase():
    """autoscaler.Scale (TestAutoscalerUnpanicAfterSlowIncrease): a window after the start, with
    the threshold no longer crossed, the stable recommendation (50) replaces the panic one."""
    decider = kpa.Decider(settings(target=1, max_scale_up_rate=10, max_scale_down_rate=10))
    decider.scale(0.0, 10, 11, 25)
    decider.scale(30.0, 40, 30, 41)
    result = decider.scale(62.0, 55, 50, 56)
    assert (result.desired, result.panicking) == (50, False)


@pytest.mark.parametrize("ready, panicking", [(0, False), (1, False), (2, True)])
def test_a_new_decider_over_several_ready_pods_starts_in_panic(ready, panicking):
    """autoscaler.go, newAutoscaler: created over more than one ready pod (an autoscaler restart)
    it starts in panic mode, holding that count (TestStartInPanicMode)."""
    decider = kpa.Decider(settings(), ready_at_creation=ready)
    assert (decider.panic_since is not None) == panicking
    assert decider.max_panic_pods == ready


def test_activation_scale_applies_only_when_scaling_from_nothing_to_something():
    """autoscaler.Scale: with activation-scale > 1, any non-zero recommendation is at least
    activation-scale; zero stays zero (TestAutoscalerActivationScale)."""
    decider = kpa.Decider(settings(activation_scale=2))
    assert decider.scale(2.0, 1, 0, 0).desired == 0
    assert decider.scale(4.0, 1, 1, 0).desired == 2
    assert decider.scale(6.0, 1, 35, 35).desired == 4  # above activation-scale: unchanged


def test_scale_down_delay_keeps_the_highest_recommendation_of_the_delay():
    """autoscaler.Scale with max.TimeWindow (pkg/autoscaler/aggregation/max): the recommendation
    is the largest of the last scale-down-delay, in 2 s slots (TestAutoscalerScaleDownDelay,
    delay 5 min, target 10, rates 10)."""
    decider = kpa.Decider(settings(scale_down_delay=300, max_scale_up_rate=10, max_scale_down_rate=10,
                                   panic_threshold_percentage=10_000))
    for now, concurrency, expected in [
        (2, 40, 4),  # scale up
        (300, 0, 4),  # 5 minutes later: still within the delay
        (302, 0, 0),  # the 4 scrolled out
        (540, 40, 4),
        (600, 30, 4),  # 3 < 4
        (660, 0, 4),
        (840, 0, 3),  # the 4 of t=540 scrolled out, the 3 of t=600 not yet
        (900, 0, 0),
    ]:
        assert decider.scale(float(now), 0, concurrency, concurrency).desired == expected, now


@pytest.mark.parametrize("tbc, ready, panic, expected", [
    (0, 3, 5, 0),  # 0: the activator only at zero
    (-1, 3, 5, -1),  # -1: the activator always in the path
    (64, 3, 5, 10 * 3 - 64 - 5),
    (64, 8, 10, 10 * 8 - 64 - 10),
    (64, 7, 5.5, 0),  # floor(70 - 64 - 5.5)
])
def test_excess_burst_capacity(tbc, ready, panic, expected):
    """autoscaler.Scale: EBC = floor(ready x total - target-burst-capacity - panic concurrency),
    with `total` from ResolveMetricTarget (the target annotation, 10, not containerConcurrency 32);
    0 and -1 are kept as they are."""
    s = Autoscaling(target=10, target_utilization=0.8, container_concurrency=32, target_burst_capacity=tbc)
    assert kpa.Decider(s).scale(2.0, ready, panic, panic).excess_burst_capacity == expected


def test_initial_excess_burst_capacity_and_activators():
    """pkg/autoscaler/scaling/multiscaler.go, createScaler: EBC before the first tick =
    initial-scale x total - TBC; pkg/reconciler/autoscaling/kpa/kpa.go, computeNumActivators:
    max(2, ceil((ready x total + TBC) / activator-capacity 100))."""
    s = Autoscaling(target=10, target_utilization=0.8, container_concurrency=32, target_burst_capacity=64)
    assert kpa.initial_excess_burst_capacity(s) == 10 - 64
    assert kpa.initial_excess_burst_capacity(s.replace(target_burst_capacity=-1)) == -1
    assert kpa.activator_count(10, s) == 2  # ceil(164 / 100)
    assert kpa.activator_count(30, s) == 4  # ceil(364 / 100)
    assert kpa.activator_count(30, s.replace(target_burst_capacity=0)) == 2


# --- the reconciler: bounds, initial scale, scale to zero, activator in the path ------------------


@pytest.mark.parametrize("min_scale, max_scale, desired, expected", [
    (0, 0, 25, 25),  # max 0 = unbounded
    (0, 10, 25, 10),
    (2, 10, 1, 2),
    (2, 10, 0, 2),  # min-scale keeps pods even without traffic
])
def test_min_and_max_scale_bound_the_recommendation(min_scale, max_scale, desired, expected):
    """pkg/reconciler/autoscaling/kpa/scaler.go, scaler.scale / applyBounds (docs: scale-bounds)."""
    pa = kpa.PodAutoscaler.warm(Autoscaling(min_scale=min_scale, max_scale=max_scale), 3)
    assert pa.reconcile(10.0, desired, 0, 3) == expected


def test_initial_scale_holds_until_reached_once():
    """scaler.scale: before the revision reached initial-scale once, min-scale is raised to it;
    kpa.computeActiveCondition marks the target initialized when that many pods are ready,
    after the scale of that same reconcile (ReconcileKind scales, then computes status)."""
    pa = kpa.PodAutoscaler.created(Autoscaling(initial_scale=3))
    assert pa.replicas == 3
    assert pa.reconcile(2.0, 1, 0, 1) == 3  # 1 of 3 ready: still at least 3
    assert pa.condition == kpa.ACTIVATING
    assert pa.reconcile(12.0, 1, 0, 3) == 3  # 3 ready: initialized by this reconcile's status
    assert (pa.initialized, pa.condition) == (True, kpa.ACTIVE)
    assert pa.reconcile(14.0, 1, 0, 3) == 1  # from now on the recommendation alone


def test_activating_revision_is_not_scaled_to_zero():
    """scaler.handleScaleToZero: while activating (pods requested, none ready yet) a zero
    recommendation is not applied (scaleUnknown)."""
    pa = kpa.PodAutoscaler.created(Autoscaling())
    assert pa.reconcile(2.0, 0, 0, 0) == 1


def test_scale_to_zero_waits_the_stable_window_then_the_grace_period():
    """scaler.handleScaleToZero with kpa.computeActiveCondition: an active revision recommended
    zero keeps one pod until it has been active a stable window, then turns inactive with the
    activator in the path (SKS proxy) and loses its last pod once the activator has been in the
    path for scale-to-zero-grace-period (30 s) (docs: scale-to-zero)."""
    s = Autoscaling(window=60, target_burst_capacity=64)
    pa = kpa.PodAutoscaler.warm(s, 1, now=0.0)
    pa.condition_since = 100.0  # became active at t=100
    assert pa.reconcile(150.0, 0, 0, 1) == 1  # active 50 s < 60 s: keep one
    assert pa.condition == kpa.ACTIVE
    assert pa.reconcile(160.0, 0, -64, 1) == 1  # active 60 s: inactive, not applied yet
    assert (pa.condition, pa.mode) == (kpa.INACTIVE, kpa.PROXY)
    assert pa.reconcile(188.0, 0, -64, 1) == 1  # in proxy mode 28 s < 30 s
    assert pa.reconcile(190.0, 0, -64, 1) == 0


def test_last_pod_retention_keeps_the_last_pod_longer_than_the_grace_period():
    """scaler.handleScaleToZero: once inactive, the last pod stays max(grace, retention)
    (scale-to-zero-pod-retention-period, 2 min here)."""
    pa = kpa.PodAutoscaler.warm(Autoscaling(window=60, scale_to_zero_pod_retention=120), 1)
    pa.reconcile(0.0, 0, -64, 1)  # active for long: inactive now
    assert pa.reconcile(30.0, 0, -64, 1) == 1
    assert pa.reconcile(118.0, 0, -64, 1) == 1
    assert pa.reconcile(120.0, 0, -64, 1) == 0


def test_scale_to_zero_disabled_keeps_one_pod():
    """scaler.handleScaleToZero: enable-scale-to-zero false turns a zero into one."""
    pa = kpa.PodAutoscaler.warm(Autoscaling(enable_scale_to_zero=False), 2)
    assert pa.reconcile(0.0, 0, 0, 2) == 1


@pytest.mark.parametrize("want, ebc, mode", [
    (3, 0, kpa.SERVE),  # enough spare capacity: activator out of the path
    (3, -1, kpa.PROXY),  # below target-burst-capacity: activator stays
    (0, 5, kpa.PROXY),  # scaled to zero: activator buffers
])
def test_activator_in_the_path(want, ebc, mode):
    """pkg/reconciler/autoscaling/kpa/kpa.go, ReconcileKind: the SKS serves (activator out of the
    path) only when the wanted scale is above zero and the excess burst capacity is not
    negative (docs: target-burst-capacity)."""
    pa = kpa.PodAutoscaler.warm(Autoscaling(), 3)
    pa.reconcile(0.0, want, ebc, 3)
    assert pa.mode == mode


def test_activator_reports_the_first_request_at_once_and_does_not_count_it_twice():
    """pkg/activator/handler/concurrency_reporter.go, getOrCreateStat / computeReport: the first
    request for a revision without an entry is reported at once as concurrency 1; the next
    report subtracts it (not below zero); after a report period with no requests the entry is
    deleted and the next request is a first request again."""
    stats = kpa.ActivatorStats()
    assert stats.report(0.0) is None  # no entry: nothing sent
    assert stats.first_request() is True
    assert stats.first_request() is False
    assert stats.report(3.0) == 2.0
    assert stats.report(0.5) == 0.5
    assert stats.report(0.0) == 0.0  # sent, and the entry goes
    assert stats.report(0.0) is None
    assert stats.first_request() is True
    assert stats.report(0.4) == 0.0
