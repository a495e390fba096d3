"""Traffic shapes: the arrival times of requests, in seconds from the start of a simulation.

A shape is written `KIND:key=value,...` on the command line:

    constant:rate=50,duration=600
    step:from=20,to=200,at=60,duration=600          rate jumps from `from` to `to` at `at`
    burst:rate=300,idle=60,length=120,duration=600  zero, then `rate` for `length` s, then zero
    diurnal:low=20,peak=400,period=3600,duration=3600   1 - cos day curve, lowest at t=0
    replay:path=FILE[,speed=1]                      arrival times of a recorded run (see below)

Shapes joined with `+` are superposed (their arrivals merged), e.g. a day with a burst on top:
`diurnal:low=0,peak=150,period=3600+burst:rate=100,idle=1200,length=120,duration=3600`.

Every generated shape (not replay) takes `arrivals=poisson` (default: independent clients, what
real traffic looks like) or `arrivals=uniform` (evenly spaced, what k6's arrival-rate executors
send), and `seed=N`.

Replay reads, by file name:
- a k6 CSV (`k6 run --out csv=FILE`, `.csv` or `.csv.gz`; k6/run.sh keeps one per run as
  `timeseries.csv.gz`): one arrival per `http_req_duration` sample outside k6's setup and
  teardown, at the sample's time minus its duration. k6 writes whole seconds by default
  (K6_CSV_TIME_FORMAT=unix); the requests of one such second are spread evenly over it.
- anything else as an access log, one request per line, the first timestamp of each line
  being either in brackets, ISO 8601 (Envoy's and so Istio's default access log:
  `[2026-11-30T17:24:42.123Z] "POST /predict ...`) or common log format (nginx, Apache:
  `[30/Nov/2026:17:24:42 +0000]`), or a Unix time in seconds at the start of the line. Lines
  without a timestamp are skipped. Whole-second timestamps are spread evenly over their second.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

# Resolution of the rate curve that generated shapes are integrated on.
GRID_SECONDS = 0.05


class TrafficError(ValueError):
    """A traffic shape that cannot be parsed or read."""


@dataclass(frozen=True)
class Traffic:
    """Sorted arrival times over [0, duration), and the spec they came from."""

    arrivals: np.ndarray
    duration: float
    spec: str

    @property
    def mean_rate(self) -> float:
        return self.arrivals.size / self.duration if self.duration else 0.0

    def peak_rate(self, window_seconds: float = 10.0) -> float:
        """Highest arrival rate over any aligned window of `window_seconds`."""
        if self.arrivals.size == 0:
            return 0.0
        counts = np.bincount((self.arrivals // window_seconds).astype(np.int64))
        return float(counts.max() / window_seconds)


def parse(spec: str, default_seed: int = 1) -> Traffic:
    """A shape, or several joined with `+` (superposed; each part has its own seed)."""
    parts = [parse_one(part, default_seed + number) for number, part in enumerate(spec.split("+"))]
    if len(parts) == 1:
        return parts[0]
    arrivals = np.sort(np.concatenate([part.arrivals for part in parts]))
    return Traffic(arrivals, max(part.duration for part in parts), spec)


def parse_one(spec: str, default_seed: int) -> Traffic:
    kind, _, rest = spec.partition(":")
    params = _params(rest, spec)
    seed = int(params.pop("seed", default_seed))
    if kind == "replay":
        if "path" not in params:
            raise TrafficError(f"{spec}: replay needs path=FILE")
        return replay(Path(params["path"]), float(params.get("speed", 1.0)), spec)
    arrivals_kind = params.pop("arrivals", "poisson")
    rate, duration = _rate_curve(kind, params, spec)
    return Traffic(generate(rate, duration, arrivals_kind, seed), duration, spec)


def _params(text: str, spec: str) -> dict[str, str]:
    params = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise TrafficError(f"{spec}: {item!r} is not key=value")
        params[key.strip()] = value.strip()
    return params


def _number(params: dict[str, str], key: str, spec: str, default: float | None = None) -> float:
    if key not in params:
        if default is None:
            raise TrafficError(f"{spec}: missing {key}=")
        return default
    try:
        value = float(params[key])
    except ValueError:
        raise TrafficError(f"{spec}: {key}={params[key]} is not a number") from None
    if value < 0:
        raise TrafficError(f"{spec}: {key} must not be negative")
    return value


def _rate_curve(kind: str, params: dict[str, str], spec: str):
    """(rate function of t in req/s, duration in s) of a generated shape."""
    n = lambda key, default=None: _number(params, key, spec, default)  # noqa: E731
    if kind == "constant":
        rate = n("rate")
        return (lambda t: np.full_like(t, rate)), n("duration", 600)
    if kind == "step":
        low, high, at = n("from"), n("to"), n("at")
        return (lambda t: np.where(t < at, low, high)), n("duration", 600)
    if kind == "burst":
        rate, idle, length = n("rate"), n("idle", 60), n("length", 120)
        return (lambda t: np.where((t >= idle) & (t < idle + length), rate, 0.0)), n("duration", idle + length + 300)
    if kind == "diurnal":
        low, peak, period = n("low"), n("peak"), n("period", 86400)
        return (lambda t: low + (peak - low) * (1 - np.cos(2 * np.pi * t / period)) / 2), n("duration", period)
    raise TrafficError(f"{spec}: unknown shape {kind!r} (constant, step, burst, diurnal, replay)")


def generate(rate, duration: float, arrivals: str, seed: int) -> np.ndarray:
    """Arrival times of a process with intensity `rate(t)` on [0, duration).

    Both kinds map points of a unit-rate process through the inverse of the cumulative rate
    Lambda(t): Poisson maps the points of a unit-rate Poisson process (time-varying Poisson
    arrivals), uniform maps k + 1/2 (evenly spaced at the current rate).
    """
    if duration <= 0:
        raise TrafficError("duration must be positive")
    grid = np.arange(0.0, duration + GRID_SECONDS, GRID_SECONDS)
    cumulative = np.concatenate([[0.0], np.cumsum(rate(grid[:-1]) * GRID_SECONDS)])
    total = cumulative[-1]
    if arrivals == "poisson":
        rng = np.random.default_rng(seed)
        unit = np.cumsum(rng.exponential(1.0, int(total + 10 * np.sqrt(total + 1) + 10)))
        unit = unit[unit < total]
    elif arrivals == "uniform":
        unit = np.arange(0.5, total, 1.0)
    else:
        raise TrafficError(f"arrivals={arrivals}: use poisson or uniform")
    # Where the rate is zero Lambda is flat; interp then returns the left edge of the flat part.
    times = np.interp(unit, cumulative, grid)
    return np.sort(times[times < duration])


# --- replay ------------------------------------------------------------------------------------


def replay(path: Path, speed: float, spec: str) -> Traffic:
    if not path.is_file():
        raise TrafficError(f"{spec}: {path} does not exist")
    if speed <= 0:
        raise TrafficError(f"{spec}: speed must be positive")
    name = path.name.lower()
    stamps, whole_seconds = k6_csv_arrivals(path) if name.endswith((".csv", ".csv.gz")) else access_log_arrivals(path)
    if stamps.size == 0:
        raise TrafficError(f"{spec}: no request found in {path}")
    # Time 0 is the first request, or the start of its second when only seconds are known.
    origin = np.floor(stamps.min()) if whole_seconds else stamps.min()
    arrivals = np.sort(stamps - origin) / speed
    duration = float(np.floor(arrivals[-1]) + 1)
    return Traffic(arrivals, duration, spec)


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def k6_csv_arrivals(path: Path) -> tuple[np.ndarray, bool]:
    """Request start times (s) from a k6 CSV: http_req_duration samples, setup/teardown excluded;
    and whether the file only had whole seconds."""
    times, durations = [], []
    with _open_text(path) as handle:
        for row in csv.DictReader(handle):
            if row.get("metric_name") != "http_req_duration":
                continue
            if row.get("group", "").startswith(("::setup", "::teardown")):
                continue
            times.append(_k6_time(row["timestamp"]))
            durations.append(float(row["metric_value"]) / 1000.0)
    stamps = np.asarray(times, dtype=float)
    if stamps.size and np.all(stamps == np.floor(stamps)):
        return spread_whole_seconds(stamps), True  # the end second is all that is known
    return stamps - np.asarray(durations), False


def _k6_time(text: str) -> float:
    """k6's timestamp column: unix seconds (default), milli/micro/nanoseconds, or RFC 3339."""
    if re.fullmatch(r"\d+", text):
        value = int(text)
        for digits, scale in ((19, 1e9), (16, 1e6), (13, 1e3)):
            if len(text) >= digits:
                return value / scale
        return float(value)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


_BRACKETED = re.compile(r"\[([^\]]+)\]")
_LEADING_EPOCH = re.compile(r"^\s*(\d{9,}(?:\.\d+)?)\b")


def access_log_arrivals(path: Path) -> tuple[np.ndarray, bool]:
    stamps = []
    whole_seconds = True
    with _open_text(path) as handle:
        for line in handle:
            stamp = _line_time(line)
            if stamp is not None:
                stamps.append(stamp)
                whole_seconds = whole_seconds and stamp == int(stamp)
    array = np.asarray(stamps, dtype=float)
    return (spread_whole_seconds(array), True) if whole_seconds else (array, False)


def _line_time(line: str) -> float | None:
    epoch = _LEADING_EPOCH.match(line)
    if epoch:
        return float(epoch.group(1))
    bracketed = _BRACKETED.search(line)
    if not bracketed:
        return None
    text = bracketed.group(1)
    for parse in (lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")),
                  lambda s: datetime.strptime(s, "%d/%b/%Y:%H:%M:%S %z")):
        try:
            return parse(text).timestamp()
        except ValueError:
            continue
    return None


def spread_whole_seconds(stamps: np.ndarray) -> np.ndarray:
    """Timestamps known to the second: the k requests of a second at (j + 1/2)/k into it."""
    seconds, counts = np.unique(np.floor(stamps), return_counts=True)
    offsets = np.concatenate([(np.arange(c) + 0.5) / c for c in counts]) if counts.size else np.array([])
    return np.repeat(seconds, counts) + offsets
