"""The revision simulation: queueing against closed-form results, Knative's documented
behaviour end to end (wake-up, activation scale, scale to zero, limits, 503/504), and the
vectorised segments against the request-by-request path."""

from __future__ import annotations

import time

import numpy as np
import pytest

from knative.plan import simulate as sim
from knative.plan.annotations import Autoscaling
from knative.plan.pod import ColdStart, PodModel
from knative.plan.traffic import Traffic, parse

# A pod with a constant 10 ms service time and nothing overlapping: 100 req/s.
CONSTANT_10MS = PodModel.build(1, 100.0, (0.010,) * 6)
# A pod like the profiled one: skewed lone latency, about 35 req/s.
SKEWED = PodModel.build(1, 35.0, (0.012, 0.025, 0.040, 0.050, 0.090, 0.150))
ONE_POD = Autoscaling(min_scale=1, max_scale=1, container_concurrency=0, target_burst_capacity=0, timeout_seconds=1e9)
CURRENT_LIKE = Autoscaling(container_concurrency=32, target=10, target_utilization=0.8, max_scale=10,
                           scale_down_delay=30, scale_to_zero_pod_retention=120, target_burst_capacity=64,
                           timeout_seconds=30)
FAST_COLD_START = ColdStart(process_start_seconds=1.0, scheduling_seconds=1.0, image_cached=True)


def arrivals(times, duration: float) -> Traffic:
    return Traffic(np.sort(np.asarray(times, dtype=float)), duration, "test")


def run(traffic, pod=SKEWED, settings=CURRENT_LIKE, cold=FAST_COLD_START, **kwargs) -> sim.Result:
    return sim.simulate(traffic, pod, settings, cold, **kwargs)


def pods_over_time(result: sim.Result) -> np.ndarray:
    return np.asarray(result.timeline["ready"]) + np.asarray(result.timeline["starting"])


# --- the pod model ------------------------------------------------------------------------------


def profile_with(rates: list[float], lone_ms: tuple[float, ...]) -> dict:
    keys = ("min", "p50", "p90", "p95", "p99", "max")
    points = [{"in_flight": 2 ** i, "requests_per_second": rate, "latency_ms": dict(zip(keys, lone_ms))}
              for i, rate in enumerate(rates)]
    return {"shapes": {"1": {"points": points}}}


def test_capacity_is_the_median_of_the_saturated_points():
    """Points within 5% of the best count as saturated; one lucky run does not set capacity."""
    pod = PodModel.from_profile(profile_with([20.0, 35.0, 37.0, 36.8, 38.5], (10, 25, 40, 50, 90, 150)), 1)
    assert pod.capacity_rps == 37.0
    assert pod.lone_latency == (0.010, 0.025, 0.040, 0.050, 0.090, 0.150)


def test_service_times_follow_the_lone_latency_less_the_overlap():
    """Lone latency mean (piecewise-linear quantiles) 50 ms at capacity 25 req/s: 40 ms of
    service, 10 ms overlapping; drawn service times have that mean and that spread."""
    pod = PodModel.build(1, 25.0, (0.030, 0.045, 0.065, 0.070, 0.080, 0.100))
    lone_mean = 0.5 * 0.0375 + 0.4 * 0.055 + 0.05 * 0.0675 + 0.04 * 0.075 + 0.01 * 0.090
    assert pod.overlap_seconds == pytest.approx(lone_mean - 0.040)
    drawn = pod.service_times(200_000, np.random.default_rng(0))
    assert drawn.mean() == pytest.approx(0.040, rel=0.01)
    assert np.percentile(drawn, 50) == pytest.approx(0.045 - pod.overlap_seconds, rel=0.01)


def test_a_profile_without_the_shape_is_refused():
    with pytest.raises(ValueError, match="no 16-text measurements"):
        PodModel.from_profile(profile_with([10.0], (1, 2, 3, 4, 5, 6)), 16)


# --- queueing ---------------------------------------------------------------------------------


def test_one_pod_with_poisson_arrivals_matches_the_mean_of_batch_service():
    """Poisson arrivals, constant service S = 10 ms, rho = 0.7. The pod works without pause in
    arrival order, so each request starts as it would one at a time (M/D/1, Pollaczek-Khinchine:
    S + rho S / (2 (1 - rho)) = 21.67 ms), and then waits for the batch-mates that arrived after
    it while the previous batch ran. A busy period's batches are the generations of a
    Galton-Watson process with Poisson(rho) offspring (a batch of m takes m S, during which
    Poisson(rho m) arrive); summing m (m - 1) / 2 later mates over the generations adds
    S rho^2 / (2 (1 - rho^2)) = 4.80 ms: 26.47 ms in all."""
    result = run(parse("constant:rate=70,duration=4000,seed=2"), CONSTANT_10MS, ONE_POD, start="warm", warm_pods=1)
    one_at_a_time = 0.010 + 0.7 * 0.010 / (2 * (1 - 0.7))
    later_batch_mates = 0.010 * 0.7 ** 2 / (2 * (1 - 0.7 ** 2))
    assert np.nanmean(result.latency) == pytest.approx(one_at_a_time + later_batch_mates, rel=0.02)


@pytest.mark.parametrize("deal_segments", [True, False], ids=["dealt", "one-by-one"])
def test_requests_that_arrive_during_a_batch_run_together_in_the_next(deal_segments):
    """Constant 10 ms per request, worked by hand. 0.000 runs alone (ends 0.010); 0.002, 0.004
    and 0.006 arrive during it and run as the next batch, 0.010-0.040, all done at 0.040; 0.015
    arrives during that one and runs 0.040-0.050; 0.100 finds the pod idle. Across the 1 s
    segment boundary: 0.995 runs alone to 1.005; 0.999 and 1.002 wait for the batch that starts
    then (1.005-1.025); 1.006 comes after it started and waits for the next (1.025-1.035)."""
    times = [0.000, 0.002, 0.004, 0.006, 0.015, 0.100, 0.995, 0.999, 1.002, 1.006]
    expected = [0.010, 0.038, 0.036, 0.034, 0.035, 0.010, 0.010, 0.026, 0.023, 0.029]
    result = sim.Simulation(arrivals(times, 3.0), CONSTANT_10MS, ONE_POD, FAST_COLD_START, start="warm", warm_pods=1,
                            deal_segments=deal_segments).run()
    assert result.latency == pytest.approx(expected, abs=1e-9)


def test_evenly_spaced_arrivals_below_capacity_never_queue():
    """D/D/1 with spacing 11.1 ms > service 10 ms: every request takes exactly its service."""
    result = run(parse("constant:rate=90,duration=60,arrivals=uniform"), CONSTANT_10MS, ONE_POD, start="warm", warm_pods=1)
    assert np.allclose(result.latency, 0.010)


def test_overlapping_part_adds_latency_but_not_load():
    """Capacity 100 req/s with a 30 ms lone latency: 20 ms overlap; at 90 req/s evenly spaced
    nothing queues, so every request takes the lone latency."""
    pod = PodModel.build(1, 100.0, (0.030,) * 6)
    assert pod.overlap_seconds == pytest.approx(0.020)
    result = run(parse("constant:rate=90,duration=30,arrivals=uniform"), pod, ONE_POD, start="warm", warm_pods=1)
    assert np.allclose(result.latency, 0.030)
    assert pod.closed_loop(1) == pytest.approx((1 / 0.030, 0.030))
    assert pod.closed_loop(64)[0] == pytest.approx(100.0, rel=1e-6)


def test_concurrency_seen_by_the_autoscaler_obeys_littles_law():
    """Average requests in the system = arrival rate x mean time in the system."""
    settings = CURRENT_LIKE.replace(min_scale=3, max_scale=3)
    result = run(parse("constant:rate=60,duration=600"), settings=settings)
    concurrency = np.mean(result.timeline["concurrency"][10:590])
    inside = (result.arrivals > 10) & (result.arrivals < 590)
    assert concurrency == pytest.approx(60 * np.nanmean(result.latency[inside]), rel=0.05)


def test_dealt_segments_give_the_same_result_as_one_request_at_a_time():
    """The vectorised round robin is an optimisation only: identical latencies, pods and
    pod-seconds, including cold starts, the activator's backlog, 503s and scale-downs."""
    cases = [
        (parse("burst:rate=150,idle=20,length=90,duration=300"), CURRENT_LIKE),
        (parse("diurnal:low=5,peak=200,period=300,duration=300,seed=4"), CURRENT_LIKE.replace(target_burst_capacity=-1)),
        (parse("constant:rate=120,duration=120"), CURRENT_LIKE.replace(container_concurrency=2, max_scale=2, target_burst_capacity=0)),
    ]
    for traffic, settings in cases:
        dealt = sim.Simulation(traffic, SKEWED, settings, FAST_COLD_START).run()
        one_by_one = sim.Simulation(traffic, SKEWED, settings, FAST_COLD_START, deal_segments=False).run()
        assert np.allclose(dealt.latency, one_by_one.latency, equal_nan=True, rtol=0, atol=1e-9)
        assert {k: v for k, v in dealt.timeline.items() if k != "concurrency"} == \
            {k: v for k, v in one_by_one.timeline.items() if k != "concurrency"}
        assert np.allclose(dealt.timeline["concurrency"], one_by_one.timeline["concurrency"])
        assert dealt.pod_seconds == pytest.approx(one_by_one.pod_seconds)
        assert dealt.rejected == one_by_one.rejected


@pytest.mark.parametrize("seed", range(6))
def test_dealt_segments_match_one_request_at_a_time_on_random_traffic_and_settings(seed):
    """Random shapes, rates, pods and settings: loads from idle to past capacity, so batches of
    every size form, open batches carry across segments and limits bind; the vectorised batches
    must give the request-by-request schedule."""
    rng = np.random.default_rng(seed)
    rate = int(rng.integers(20, 400))
    shape = rng.choice([f"constant:rate={rate},duration=90", f"burst:rate={rate},idle=5,length=60,duration=90",
                        f"diurnal:low=0,peak={rate},period=90,duration=90"])
    pod = PodModel.build(1, float(rng.uniform(20, 120)), tuple(np.sort(rng.uniform(0.005, 0.2, 6))))
    settings = CURRENT_LIKE.replace(
        container_concurrency=int(rng.choice([0, 1, 4, 32])), target=float(rng.choice([1, 2, 8])),
        min_scale=int(rng.integers(0, 3)), max_scale=int(rng.choice([2, 6, 20])),
        target_burst_capacity=float(rng.choice([0, 5, -1])))
    traffic = parse(f"{shape},seed={seed}")
    dealt = sim.Simulation(traffic, pod, settings, FAST_COLD_START, seed=seed).run()
    one_by_one = sim.Simulation(traffic, pod, settings, FAST_COLD_START, seed=seed, deal_segments=False).run()
    assert np.allclose(dealt.latency, one_by_one.latency, equal_nan=True, rtol=0, atol=1e-9)
    assert dealt.timeline["ready"] == one_by_one.timeline["ready"]
    assert dealt.rejected == one_by_one.rejected
    assert dealt.pod_seconds == pytest.approx(one_by_one.pod_seconds)


# --- Knative's behaviour end to end ------------------------------------------------------------


def test_first_request_wakes_the_revision_at_once():
    """The activator reports the first request at once and the autoscaler ticks on it
    (MultiScaler.Poke): the pod is created at the request, not at the next 2 s tick, so the
    request waits one cold start plus its service."""
    cold = ColdStart(process_start_seconds=1.0, scheduling_seconds=4.0, image_cached=True)
    result = run(arrivals([10.5], 120), CONSTANT_10MS, CURRENT_LIKE, cold)
    assert result.latency[0] == pytest.approx(5.0 + 0.010)
    assert result.cold[0] and result.proxied[0]


def test_requests_during_a_cold_start_wait_and_count_as_cold():
    traffic = parse("burst:rate=50,idle=10,length=20,duration=200,arrivals=uniform")
    result = run(traffic, CONSTANT_10MS, CURRENT_LIKE)
    first_ready = 10 + FAST_COLD_START.seconds
    waited = result.arrivals < first_ready
    assert np.array_equal(result.cold, waited)
    assert np.all(result.latency[waited] >= first_ready - result.arrivals[waited])
    assert result.error_share == 0


def test_activation_scale_starts_several_pods_from_zero():
    """autoscaler.Scale: activation-scale 3 turns the first non-zero recommendation into 3."""
    result = run(arrivals([5.0], 100), settings=CURRENT_LIKE.replace(activation_scale=3))
    assert pods_over_time(result).max() == 3


def test_max_scale_caps_a_panic():
    result = run(parse("burst:rate=400,idle=5,length=60,duration=200"), settings=CURRENT_LIKE.replace(max_scale=4))
    assert pods_over_time(result).max() == 4
    assert run(parse("burst:rate=400,idle=5,length=60,duration=200")).max_pods == 10


@pytest.mark.parametrize("label, tbc, retention, after_window", [
    ("activator out of the path: waits the grace period", 0, 0, 30),
    ("activator already in the path: no grace needed", 64, 0, 0),
    ("last-pod retention", 64, 120, 120),
])
def test_last_pod_goes_a_stable_window_after_the_traffic(label, tbc, retention, after_window):
    """docs (scale-to-zero) and scaler.handleScaleToZero: the last replica goes once a stable
    window (60 s) passed without traffic, and then either the activator has been in the path
    for scale-to-zero-grace-period (30 s; already true when target-burst-capacity kept it
    there) or, with a retention period, that period has passed."""
    traffic = arrivals(np.arange(5.0, 20.0, 0.1), 300)
    settings = CURRENT_LIKE.replace(scale_down_delay=0, target_burst_capacity=tbc,
                                    scale_to_zero_pod_retention=retention)
    pods = pods_over_time(run(traffic, settings=settings))
    gone = np.nonzero(pods)[0][-1] + 2  # timeline row k is second k + 1
    assert 20 + 60 + after_window <= gone <= 20 + 60 + after_window + 4, label


def test_scale_down_delay_holds_the_pods_after_a_drop():
    traffic = parse("step:from=150,to=10,at=100,duration=200")
    quick = pods_over_time(run(traffic, settings=CURRENT_LIKE.replace(scale_down_delay=0)))
    held = pods_over_time(run(traffic, settings=CURRENT_LIKE.replace(scale_down_delay=120)))
    assert held[100:190].sum() > quick[100:190].sum()


def test_queue_proxy_answers_503_beyond_eleven_times_container_concurrency():
    """Queue-proxy admits containerConcurrency in flight plus 10 x containerConcurrency queued
    (sharedmain.buildBreaker), then 503: 2 + 20 of 100 simultaneous requests get in."""
    slow = PodModel.build(1, 1.0, (1.0,) * 6)
    settings = ONE_POD.replace(container_concurrency=2)
    result = run(arrivals(np.full(100, 5.0), 200), slow, settings, start="warm", warm_pods=1)
    assert result.rejected == 100 - 22


def test_activator_answers_503_beyond_its_queue():
    """The activator holds 10,000 requests per activator (two at least) while no pod is ready."""
    result = run(arrivals(np.full(20_500, 1.0), 30), CONSTANT_10MS, CURRENT_LIKE.replace(max_scale=1))
    assert result.rejected == 500


def test_requests_over_timeout_seconds_count_as_504():
    slow = PodModel.build(1, 10.0, (0.1,) * 6)
    settings = ONE_POD.replace(timeout_seconds=2.0)
    result = run(parse("constant:rate=12,duration=60,arrivals=uniform"), slow, settings, start="warm", warm_pods=1)
    assert result.timed_out == int(np.sum(result.latency > 2.0)) > 0
    assert result.error_share == pytest.approx(result.timed_out / result.requests)


def test_pod_seconds_count_every_pod_for_its_whole_life():
    result = run(parse("constant:rate=5,duration=100"), settings=CURRENT_LIKE.replace(min_scale=2, max_scale=2))
    assert result.pod_seconds == pytest.approx(200.0)


@pytest.mark.slow
def test_an_hour_at_1000_requests_per_second_runs_in_seconds():
    """Prints the wall time (a figure, not a verdict: machines differ)."""
    traffic = parse("constant:rate=1000,duration=3600")
    started = time.perf_counter()
    result = run(traffic, settings=CURRENT_LIKE.replace(max_scale=60))
    print(f"\none simulated hour at 1,000 req/s ({result.requests:,} requests): "
          f"{time.perf_counter() - started:.1f} s, p99 {1000 * result.percentile(99):.0f} ms")
    assert result.requests > 3_500_000
    assert not np.isnan(result.latency).any()


def test_the_activator_counts_only_its_own_requests_at_a_pod():
    """pkg/activator/net/throttler.go: each pod tracker's breaker counts the requests this
    activator sent; requests that reached the pod directly are invisible to it. Queue-proxy
    counts them all."""
    pod = sim.Pod(0, created=0.0, ready_at=0.0)
    pod.ends.extend([1.0, 2.0, 3.0])  # three direct requests in flight
    assert pod.slot_time(2) == 0.0  # the activator may still send two
    pod.ends.append(4.0)
    pod.activator_ends.extend([4.0])
    pod.ends.append(5.0)
    pod.activator_ends.append(5.0)
    assert pod.slot_time(2) == 4.0  # its two are in flight: a slot frees when the first ends
    assert pod.in_flight(2.5) == 3
