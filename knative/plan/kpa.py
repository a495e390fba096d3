"""The Knative Pod Autoscaler (KPA), as Knative Serving 1.23 implements it.

Each class is a plain-Python model of one piece of knative/serving (tag knative-v1.23.0), written
from its source; the file and function are named on each:

- `WindowAverager`: the stable and panic averages of observed concurrency
  (pkg/autoscaler/aggregation/bucketing.go, TimedFloat64Buckets: 1 s buckets, partial windows).
- `MaxWindow`: the scale-down-delay window, the largest recommendation of the last `delay`
  seconds in 2 s slots (pkg/autoscaler/aggregation/max/{window,timewindow}.go).
- `Decider`: one autoscaler tick, `autoscaler.Scale` (pkg/autoscaler/scaling/autoscaler.go):
  desired pods from the averages, rate limits, activation scale, panic mode, scale-down delay,
  excess burst capacity.
- `PodAutoscaler`: what the KPA reconciler does with that recommendation
  (pkg/reconciler/autoscaling/kpa/{kpa.go,scaler.go}): min/max/initial scale, the scale-to-zero
  sequence (stable window -> inactive, activator in the path, grace period, last-pod retention),
  the activator in or out of the path (excess burst capacity), the Active condition.
- `ActivatorStats`: the activator's concurrency reports (pkg/activator/handler/concurrency_reporter.go),
  including the immediate "first request" report that wakes a revision at zero.

Times are seconds since the start of a simulation (floats); bucket indexes are whole seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from knative.plan.annotations import Autoscaling

TICK_SECONDS = 2.0  # pkg/autoscaler/scaling/multiscaler.go: tickInterval
BUCKET_SECONDS = 1  # pkg/autoscaler/config/config.go: BucketSize
AVERAGE_DIGITS = 6  # pkg/autoscaler/aggregation/bucketing.go: precision of WindowAverage
MIN_ACTIVATORS = 2  # pkg/reconciler/autoscaling/kpa/kpa.go: minActivators

# PodAutoscaler Active condition (pkg/apis/autoscaling/v1alpha1/pa_lifecycle.go).
ACTIVE, ACTIVATING, INACTIVE = "active", "activating", "inactive"
# ServerlessService modes: activator in the request path (proxy) or not (serve).
PROXY, SERVE = "proxy", "serve"
UNKNOWN_SCALE = -1  # scaleUnknown in kpa/scaler.go; the decider's DesiredScale before any data


class WindowAverager:
    """TimedFloat64Buckets.{Record,WindowAverage,IsEmpty} with 1 s buckets.

    The average is over the buckets written since the first write (a partial window after a
    quiet spell longer than the window), and buckets not written since the last write count
    as holes at the end of the window.
    """

    def __init__(self, window_seconds: int) -> None:
        self.window = int(window_seconds)
        self.buckets = [0.0] * self.window
        self.total = 0.0
        self.first_write: int | None = None
        self.last_write: int | None = None

    def record(self, second: int, value: float) -> None:
        size = len(self.buckets)
        if self.last_write != second:
            if self.last_write is not None and second + self.window <= self.last_write:
                return  # older than a window before the last write: ignored
            if self.first_write is None or self.first_write > second:
                self.first_write = second
            if self.last_write is None or second > self.last_write:
                if self.last_write is None or second - self.last_write >= self.window:
                    # A whole window without writes: start over.
                    self.first_write = second
                    self.buckets = [0.0] * size
                    self.total = 0.0
                else:
                    for index in range(self.last_write + 1, second + 1):
                        self.total -= self.buckets[index % size]
                        self.buckets[index % size] = 0.0
                self.last_write = second
        self.buckets[second % size] += value
        self.total += value

    def is_empty(self, now: int) -> bool:
        return self.last_write is None or now - self.last_write > self.window

    def average(self, now: int) -> float:
        if self.last_write is None:
            return 0.0
        size = len(self.buckets)
        lag = now - self.last_write
        if lag <= 0:
            valid = min(self.last_write - self.first_write + 1, size)
            return round(self.total / valid, AVERAGE_DIGITS)
        if lag < self.window:
            # No data for `lag` seconds: drop the buckets that would hold them.
            total = self.total - sum(self.buckets[i % size] for i in range(self.last_write + 1, now + 1))
            valid = min(self.last_write - self.first_write + 1, size - lag)
            return round(total / valid, AVERAGE_DIGITS)
        return 0.0


class MaxWindow:
    """max.TimeWindow: the largest value recorded in the last `duration` seconds, in 2 s slots."""

    def __init__(self, duration_seconds: float, granularity_seconds: float = TICK_SECONDS) -> None:
        self.granularity = int(granularity_seconds)
        self.size = math.ceil(duration_seconds / granularity_seconds)
        self.maxima: list[tuple[int, int]] = []  # (slot index, value), values descending

    def record(self, now: float, value: int) -> None:
        index = int(now) // self.granularity
        while self.maxima and value >= self.maxima[-1][1]:
            self.maxima.pop()  # a smaller, older value can never be the maximum again
        while self.maxima and index - self.maxima[0][0] >= self.size:
            self.maxima.pop(0)
        if self.maxima and self.maxima[-1][0] == index:
            value = max(value, self.maxima.pop()[1])
        self.maxima.append((index, value))

    def current(self) -> int:
        return self.maxima[0][1]


@dataclass(frozen=True)
class ScaleResult:
    desired: int  # DesiredPodCount
    excess_burst_capacity: int  # ExcessBurstCapacity
    panicking: bool


class Decider:
    """autoscaler.Scale (pkg/autoscaler/scaling/autoscaler.go), one call per 2 s tick.

    `ready` is the number of ready pods; `stable` and `panic` are the observed concurrency
    averages over the stable and panic windows.
    """

    def __init__(self, settings: Autoscaling, ready_at_creation: int = 0, now: float = 0.0,
                 reachable: bool = True) -> None:
        self.settings = settings
        self.reachable = reachable
        # newAutoscaler: a decider created over more than one ready pod starts in panic mode.
        self.panic_since: float | None = now if ready_at_creation > 1 else None
        self.max_panic_pods = ready_at_creation
        self.delay = MaxWindow(settings.scale_down_delay) if settings.scale_down_delay > 0 else None

    def scale(self, now: float, ready: int, stable: float, panic: float) -> ScaleResult:
        s = self.settings
        ready_for_rates = max(1.0, float(ready))
        max_scale_up = math.ceil(s.max_scale_up_rate * ready_for_rates)
        max_scale_down = math.floor(ready_for_rates / s.max_scale_down_rate) if self.reachable else 0.0
        stable_pods = math.ceil(stable / s.target_value)
        panic_pods = math.ceil(panic / s.target_value)
        desired_stable = int(min(max(stable_pods, max_scale_down), max_scale_up))
        desired_panic = int(min(max(panic_pods, max_scale_down), max_scale_up))
        if s.activation_scale > 1:
            if stable_pods > 0 and s.activation_scale > desired_stable:
                desired_stable = s.activation_scale
            if panic_pods > 0 and s.activation_scale > desired_panic:
                desired_panic = s.activation_scale

        over_threshold = panic_pods / ready_for_rates >= s.panic_threshold
        if over_threshold:
            self.panic_since = now  # start, or extend, panic mode
        elif self.panic_since is not None and self.panic_since + s.window < now:
            self.panic_since = None  # the surge has reached the stable average
            self.max_panic_pods = 0

        desired = desired_stable
        if self.panic_since is not None:
            # In panic mode the count only grows; the larger of the two recommendations wins.
            desired = max(desired, desired_panic)
            self.max_panic_pods = max(self.max_panic_pods, desired)
            desired = self.max_panic_pods

        if self.reachable and self.delay is not None:
            self.delay.record(now, desired)
            desired = self.delay.current()

        return ScaleResult(desired, self.excess_burst_capacity(ready, panic), self.panic_since is not None)

    def excess_burst_capacity(self, ready: int, panic: float) -> int:
        """EBC = ready pods x total - target-burst-capacity - observed panic concurrency."""
        tbc = self.settings.target_burst_capacity
        if tbc == 0:
            return 0
        if tbc < 0:
            return -1
        return math.floor(ready * self.settings.total_value - tbc - panic)


def initial_excess_burst_capacity(settings: Autoscaling) -> int:
    """multiscaler.createScaler: the EBC a new decider reports before its first tick."""
    tbc = settings.target_burst_capacity
    if tbc in (-1, 0):
        return int(tbc)
    return int(settings.initial_scale * settings.total_value - tbc)


def activator_count(ready: int, settings: Autoscaling, activator_capacity: float = 100.0) -> int:
    """kpa.computeNumActivators: activators put in the path of the revision."""
    if settings.target_burst_capacity == 0:
        return MIN_ACTIVATORS
    to_cover = ready * settings.total_value + max(settings.target_burst_capacity, 0)
    return int(max(MIN_ACTIVATORS, math.ceil(to_cover / activator_capacity)))


class PodAutoscaler:
    """The KPA reconciler's view of one revision: ReconcileKind in kpa/kpa.go with scaler.scale
    and handleScaleToZero in kpa/scaler.go.

    `replicas` is the Deployment's spec.replicas (what the simulation starts or stops pods to
    match), `mode` whether the activator is in the request path.
    """

    def __init__(self, settings: Autoscaling, replicas: int, condition: str, since: float,
                 initialized: bool, mode: str, mode_since: float) -> None:
        self.settings = settings
        self.replicas = replicas
        self.condition = condition
        self.condition_since = since
        self.initialized = initialized  # ScaleTargetInitialized: initial scale was reached once
        self.mode = mode
        self.mode_since = mode_since
        self.want = replicas

    @classmethod
    def scaled_to_zero(cls, settings: Autoscaling, now: float = 0.0) -> PodAutoscaler:
        """A revision that has been idle for long: no pods, activator in the path."""
        long_ago = now - 24 * 3600.0
        return cls(settings, 0, INACTIVE, long_ago, True, PROXY, long_ago)

    @classmethod
    def warm(cls, settings: Autoscaling, pods: int, now: float = 0.0) -> PodAutoscaler:
        """A revision that has run `pods` ready pods for long."""
        long_ago = now - 24 * 3600.0
        return cls(settings, pods, ACTIVE, long_ago, True, SERVE, long_ago)

    @classmethod
    def created(cls, settings: Autoscaling, now: float = 0.0) -> PodAutoscaler:
        """A revision just created: initial-scale pods requested, not yet ready."""
        return cls(settings, settings.initial_scale, ACTIVATING, now, False, PROXY, now)

    def bounds(self) -> tuple[int, int]:
        return self.settings.min_scale, self.settings.max_scale

    def reconcile(self, now: float, desired: int, excess_burst_capacity: int, ready: int) -> int:
        """One reconcile; returns the replicas wanted from the Deployment afterwards."""
        want = self._scale(now, desired)
        mode = PROXY
        if want > 0 and excess_burst_capacity >= 0:
            mode = SERVE
        if mode != self.mode:
            self.mode, self.mode_since = mode, now
        self.want = want
        self._update_active_condition(now, want, ready)
        return self.replicas

    def _scale(self, now: float, desired: int) -> int:
        """scaler.scale: bounds, initial scale, scale-to-zero; applies the result to replicas."""
        if desired < 0 and self.condition != ACTIVATING:
            return desired  # metrics not collected yet
        min_scale, max_scale = self.bounds()
        initial = self.settings.initial_scale
        if initial > 1 and not self.initialized:
            min_scale = max(initial, min_scale)
        desired = apply_bounds(min_scale, max_scale, desired)
        want, apply = self._handle_scale_to_zero(now, desired)
        if apply:
            self.replicas = want
        return want

    def _handle_scale_to_zero(self, now: float, desired: int) -> tuple[int, bool]:
        s = self.settings
        if desired != 0:
            return desired, True
        if not s.enable_scale_to_zero:
            return 1, True
        since = now - self.condition_since
        if self.condition == ACTIVATING:
            return UNKNOWN_SCALE, False  # activation timeout (progress deadline) not modelled
        if self.condition == ACTIVE:
            if since >= s.window:
                return 0, False  # become inactive first: the activator goes into the path
            return 1, True  # keep one pod until the revision was active a whole stable window
        # Inactive: the activator must be in the path (probed) before the last pod goes.
        if s.target_burst_capacity != -1 and self.mode != PROXY:
            return 0, False
        retention = s.scale_to_zero_pod_retention
        if since >= max(s.scale_to_zero_grace_period, retention):
            return 0, True
        if retention > 0 and since < retention:
            return 0, False
        if now - self.mode_since >= s.scale_to_zero_grace_period:
            return 0, True
        return 0, False

    def active_threshold(self) -> int:
        min_scale, _ = self.bounds()
        if not self.initialized:
            return max(min_scale, self.settings.initial_scale)
        return max(min_scale, 1)

    def _update_active_condition(self, now: float, want: int, ready: int) -> None:
        """kpa.computeActiveCondition."""
        min_ready = self.active_threshold()
        if ready >= min_ready:
            self.initialized = True
        if want == 0 or min_ready == 0:
            condition = INACTIVE
        elif ready < min_ready:
            condition = ACTIVATING if (want > 0 or self.condition != INACTIVE) else INACTIVE
        elif want > 0 or self.condition != INACTIVE:
            condition = ACTIVE
        else:
            condition = self.condition
        if condition != self.condition:
            self.condition, self.condition_since = condition, now


def apply_bounds(min_scale: int, max_scale: int, value: int) -> int:
    """scaler.applyBounds; max 0 means unbounded."""
    if value < min_scale:
        return min_scale
    if max_scale != 0 and value > max_scale:
        return max_scale
    return value


class ActivatorStats:
    """ConcurrencyReporter: the activator reports the revision's concurrency every second, and
    once at once on the first request after a quiet second (so a revision at zero wakes up
    without waiting for the next report)."""

    def __init__(self) -> None:
        self.reporting = False
        self.first_request_credit = 0.0

    def first_request(self) -> bool:
        """A request reached the activator; True when this sends the immediate report of 1."""
        if self.reporting:
            return False
        self.reporting = True
        self.first_request_credit = 1.0
        return True

    def report(self, average_concurrency: float) -> float | None:
        """The per-second report: the average minus the request already reported (never below
        zero); None when the activator has no entry for the revision (nothing sent)."""
        if not self.reporting:
            return None
        value = max(average_concurrency - self.first_request_credit, 0.0)
        self.first_request_credit = 0.0
        if average_concurrency == 0:
            self.reporting = False  # entry deleted after a report period without requests
        return value
