"""Traffic shapes of the planner: generated rates and replays of recorded runs."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone

import numpy as np
import pytest

from knative.plan.traffic import TrafficError, parse


def test_constant_poisson_traffic_has_the_rate_and_exponential_gaps():
    traffic = parse("constant:rate=200,duration=300")
    assert traffic.arrivals.size == pytest.approx(60_000, abs=3 * np.sqrt(60_000))
    gaps = np.diff(traffic.arrivals)
    assert gaps.mean() == pytest.approx(1 / 200, rel=0.02)
    assert gaps.std() == pytest.approx(gaps.mean(), rel=0.05)  # exponential: sd = mean


def test_uniform_arrivals_are_evenly_spaced_like_k6_arrival_rate():
    traffic = parse("constant:rate=50,duration=10,arrivals=uniform")
    assert traffic.arrivals.size == 500
    assert np.allclose(np.diff(traffic.arrivals), 1 / 50)


def test_burst_is_zero_outside_its_window():
    traffic = parse("burst:rate=100,idle=60,length=30,duration=200,seed=3")
    assert traffic.arrivals.min() >= 60 and traffic.arrivals.max() < 90
    assert traffic.duration == 200
    assert traffic.peak_rate() == pytest.approx(100, rel=0.15)


def test_step_changes_rate_at_its_time():
    arrivals = parse("step:from=10,to=100,at=50,duration=100,arrivals=uniform").arrivals
    assert np.sum(arrivals < 50) == 500 and np.sum(arrivals >= 50) == 5000


def test_diurnal_traffic_is_lowest_at_the_start_and_highest_at_half_period():
    traffic = parse("diurnal:low=10,peak=110,period=1000,duration=1000,arrivals=uniform")
    assert traffic.mean_rate == pytest.approx(60, rel=0.01)
    counts = np.bincount((traffic.arrivals // 100).astype(int))
    assert counts.argmax() in (4, 5) and counts.argmin() in (0, 9)


def test_same_seed_same_arrivals_other_seed_others():
    assert np.array_equal(parse("constant:rate=20,duration=60,seed=5").arrivals, parse("constant:rate=20,duration=60,seed=5").arrivals)
    assert not np.array_equal(parse("constant:rate=20,duration=60,seed=5").arrivals, parse("constant:rate=20,duration=60,seed=6").arrivals)


@pytest.mark.parametrize("spec, message", [
    ("square:rate=1", "unknown shape"),
    ("constant:duration=10", "missing rate"),
    ("constant:rate=fast", "not a number"),
    ("constant:rate=-1", "negative"),
    ("constant:rate", "not key=value"),
    ("constant:rate=5,arrivals=bursty", "poisson or uniform"),
    ("replay:speed=2", "needs path"),
])
def test_bad_shapes_are_refused_with_the_reason(spec, message):
    with pytest.raises(TrafficError, match=message):
        parse(spec)


K6_HEADER = "metric_name,timestamp,metric_value,check,error,error_code,expected_response,group,method,name,proto,scenario,service,status,subproto,tls_version,url,extra_tags,metadata\n"


def k6_row(metric: str, timestamp: str, value: float, group: str = "") -> str:
    return f"{metric},{timestamp},{value},,,,true,{group},POST,http://x/predict,HTTP/1.1,default,,200,,,http://x/predict,,\n"


def test_replay_of_a_k6_csv_with_whole_second_timestamps_spreads_each_second(tmp_path):
    """k6's default CSV time format is whole Unix seconds: requests of a second are spread over it;
    setup requests and other metrics are left out."""
    rows = [k6_row("http_req_duration", "1700000000", 12.0, "::setup")]
    rows += [k6_row("http_req_duration", "1700000010", 20.0) for _ in range(4)]
    rows += [k6_row("http_reqs", "1700000010", 1.0), k6_row("http_req_duration", "1700000012", 20.0)]
    path = tmp_path / "timeseries.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(K6_HEADER + "".join(rows))
    traffic = parse(f"replay:path={path}")
    assert np.allclose(traffic.arrivals, [0.125, 0.375, 0.625, 0.875, 2.5])
    assert traffic.duration == 3


def test_replay_of_a_k6_csv_with_fine_timestamps_starts_each_request_at_end_minus_duration(tmp_path):
    path = tmp_path / "run.csv"
    path.write_text(K6_HEADER + k6_row("http_req_duration", "1700000000500", 100.0)
                    + k6_row("http_req_duration", "1700000001250", 50.0))
    assert np.allclose(parse(f"replay:path={path}").arrivals, [0.0, 0.8])


def test_replay_of_access_logs_envoy_common_log_format_and_epoch(tmp_path):
    envoy = tmp_path / "istio.log"
    envoy.write_text('[2026-11-30T17:24:42.100Z] "POST /predict HTTP/1.1" 200 - 20 300 15 14 "-"\n'
                     'not a request line\n'
                     '[2026-11-30T17:24:42.600Z] "POST /predict HTTP/1.1" 200 - 20 300 15 14 "-"\n')
    assert np.allclose(parse(f"replay:path={envoy}").arrivals, [0.0, 0.5])
    clf = tmp_path / "access.log"
    clf.write_text('10.0.0.1 - - [30/Nov/2026:17:24:42 +0000] "POST /predict HTTP/1.1" 200 512\n' * 2
                   + '10.0.0.1 - - [30/Nov/2026:17:24:44 +0000] "POST /predict HTTP/1.1" 200 512\n')
    assert np.allclose(parse(f"replay:path={clf}").arrivals, [0.25, 0.75, 2.5])
    epoch = tmp_path / "epoch.log"
    start = datetime(2026, 11, 30, tzinfo=timezone.utc).timestamp()
    epoch.write_text(f"{start + 1.5} POST /predict\n{start:.3f} POST /predict\n")
    replayed = parse(f"replay:path={epoch},speed=2")
    assert np.allclose(replayed.arrivals, [0.0, 0.75])


def test_shapes_joined_with_plus_are_superposed():
    day = parse("constant:rate=10,duration=100,arrivals=uniform+burst:rate=50,idle=40,length=10,arrivals=uniform")
    assert day.arrivals.size == 1000 + 500
    assert day.duration == 40 + 10 + 300  # the longest part (the burst's default tail of 300 s)
    assert np.all(np.diff(day.arrivals) >= 0)
