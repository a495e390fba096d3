"""Batches chosen by the engine's measured cost, and admission by the queue's predicted wait.

The references are cost formulas written here: BatchCost must recover them from observed
batches, and the batcher must pick, of the batches it may form, the one a formula says scores
the most real tokens per second. Admission is checked against the wait those formulas predict.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from model.batch_cost import BatchCost
from model.batcher import Batcher, Overloaded
from tests.fakes import FakeEngine


def formula(per_batch: float, per_token: float, per_pair: float):
    """Seconds of a batch of `texts` rows padded to `longest` tokens."""
    return lambda texts, longest: per_batch + per_token * texts * longest + per_pair * texts * longest ** 2


class KnownCost:
    """A cost model given by a formula (the batcher's choice is checked against it), at a known pace."""

    fitted = True

    def __init__(self, seconds, tokens_per_second: float | None = None) -> None:
        self.seconds = seconds
        self.pace = tokens_per_second
        self.observed: list[tuple[int, int, int, float]] = []

    def observe(self, texts: int, longest: int, real_tokens: int, seconds: float) -> None:
        self.observed.append((texts, longest, real_tokens, seconds))  # the formula stays the truth

    def tokens_per_second(self) -> float | None:
        return self.pace


def text_of(tokens: int, tag: str) -> str:
    """A text the fake engine counts as `tokens` tokens (its words plus two special tokens)."""
    return " ".join([tag] + ["word"] * (tokens - 3))


@pytest.fixture
def engine():
    engine = FakeEngine()
    yield engine
    engine.release()


def occupy_engine(batcher: Batcher, engine: FakeEngine):
    engine.hold()
    blocker = batcher.submit(["blocker"])
    assert engine.running.wait(10), "the engine never started a batch"
    return blocker


# --- the fit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("truth", [
    formula(0.004, 2e-5, 0.0),  # fixed cost per call and linear work
    formula(0.0, 1e-5, 4e-8),  # no fixed cost, attention's square dominates long texts
    formula(0.002, 1e-5, 1e-8),
])
def test_the_fit_recovers_the_cost_of_shapes_it_never_saw(truth):
    cost = BatchCost()
    seen = [(texts, longest) for texts in (1, 2, 4, 8, 16) for longest in (8, 24, 64)]
    for texts, longest in seen:
        cost.observe(texts, longest, texts * longest, truth(texts, longest))
    assert cost.fitted
    for texts, longest in [(3, 40), (12, 16), (32, 128), (1, 300)]:
        assert cost.seconds(texts, longest) == pytest.approx(truth(texts, longest), rel=0.01)


def test_the_pace_is_real_tokens_over_engine_time():
    cost = BatchCost()
    assert cost.tokens_per_second() is None
    batches = [(4, 20, 60, 0.010), (8, 30, 150, 0.030), (1, 10, 10, 0.002)]
    for batch in batches:
        cost.observe(*batch)
    assert cost.tokens_per_second() == pytest.approx((60 + 150 + 10) / (0.010 + 0.030 + 0.002))


def test_too_few_shapes_leave_the_padding_rule_in_charge():
    cost = BatchCost()
    for _ in range(10):
        cost.observe(4, 16, 64, 0.01)
    assert not cost.fitted


# --- the batch the batcher takes --------------------------------------------------------------


def queue_behind_a_blocker(batcher: Batcher, engine: FakeEngine, texts: list[str]):
    blocker = occupy_engine(batcher, engine)
    futures = [batcher.submit([text]) for text in texts]
    engine.release()
    blocker.result(timeout=10)
    for future in futures:
        future.result(timeout=10)
    return engine.batches[2:] if batcher.batching else None


def test_a_fixed_cost_per_call_takes_every_queued_text_in_one_batch(engine):
    batcher = Batcher(engine, max_padding=0.0)  # the padding rule alone would split these lengths
    batcher.cost = KnownCost(formula(0.05, 1e-6, 0.0))
    texts = [text_of(n, f"t{n}") for n in (5, 9, 14, 20, 6, 11)]
    batches = queue_behind_a_blocker(batcher, engine, texts)
    assert [sorted(batch) for batch in engine.batches[1:]] == [sorted(texts)]
    assert batches == []
    batcher.stop()


def test_when_padding_is_all_that_costs_texts_of_another_length_wait_for_their_own_batch(engine):
    batcher = Batcher(engine, max_padding=10.0)  # the padding rule alone would take them all
    batcher.cost = KnownCost(formula(0.0, 1e-5, 0.0))
    short = [text_of(4, f"short{n}") for n in range(3)]
    long = [text_of(40, f"long{n}") for n in range(3)]
    queue_behind_a_blocker(batcher, engine, [short[0], long[0], short[1], long[1], short[2], long[2]])
    assert [sorted(batch) for batch in engine.batches[1:]] == [sorted(short), sorted(long)]
    batcher.stop()


@pytest.mark.parametrize("truth", [formula(0.003, 2e-5, 1e-7), formula(0.0005, 1e-5, 5e-8)])
def test_the_next_batch_is_the_one_with_the_most_real_tokens_per_second(engine, truth):
    batcher = Batcher(engine, max_batch_texts=16)
    batcher.cost = KnownCost(truth)
    lengths = [12, 30, 13, 60, 15, 11, 28, 90, 14, 12]
    texts = [text_of(n, f"x{i}") for i, n in enumerate(lengths)]
    queue_behind_a_blocker(batcher, engine, texts)
    first = engine.batches[1]

    # The candidates: the oldest text plus its k nearest in length (ties: the earlier queued).
    oldest = lengths[0]
    order = sorted(range(1, len(lengths)), key=lambda i: abs(lengths[i] - oldest))
    def rate(k: int) -> float:
        chosen = [lengths[0]] + [lengths[i] for i in order[:k]]
        return sum(chosen) / truth(len(chosen), max(chosen))
    best = max(range(len(order) + 1), key=rate)
    expected = [texts[0]] + [texts[i] for i in order[:best]]
    assert sorted(first) == sorted(expected)
    assert 1 < len(first) < len(texts), "the case must need a choice"
    batcher.stop()


@pytest.mark.parametrize("limits, tokens, count, sizes", [
    ({"max_batch_tokens": 100}, 20, 8, [5, 3]),  # 5 x 20 padded tokens
    ({"max_batch_texts": 3}, 8, 7, [3, 3, 1]),
], ids=["padded-tokens", "texts"])
def test_the_limits_still_bound_the_chosen_batch(engine, limits, tokens, count, sizes):
    batcher = Batcher(engine, **limits)
    batcher.cost = KnownCost(formula(1.0, 0.0, 0.0))  # a huge fixed cost: as many as allowed
    texts = [text_of(tokens, f"t{n}") for n in range(count)]
    queue_behind_a_blocker(batcher, engine, texts)
    assert [len(batch) for batch in engine.batches[1:]] == sizes
    batcher.stop()


class SlowEngine(FakeEngine):
    """Takes 2 ms per call plus 0.5 ms per padded token, so its measured cost has a known shape."""

    def predict_encoded(self, encodings):
        time.sleep(0.002 + 0.0005 * len(encodings) * max(len(e) for e in encodings))
        return super().predict_encoded(encodings)


def test_the_batcher_fits_its_cost_model_on_the_engine_times_it_measures():
    engine = SlowEngine()
    batcher = Batcher(engine)
    for n in range(12):
        batcher.submit([text_of(4 + 2 * n, f"solo{n}")]).result(timeout=10)
    assert batcher.cost.fitted
    truth = formula(0.002, 0.0005, 0.0)(1, 20)
    assert truth * 0.8 < batcher.cost.seconds(1, 20) < truth * 3, "sleeping only adds time, never removes it"
    assert batcher.cost.tokens_per_second() < 1 / 0.0005
    batcher.stop()


# --- admission --------------------------------------------------------------------------------


def test_a_request_is_refused_at_once_when_the_queued_work_would_outlast_the_wait_limit(engine):
    batcher = Batcher(engine, max_wait_seconds=1.25)  # admission plans for 80% of it: 1.0 s
    batcher.cost = KnownCost(formula(0.0, 0.01, 0.0), tokens_per_second=100.0)
    blocker = occupy_engine(batcher, engine)
    queued = [batcher.submit([text_of(30, f"q{n}")]) for n in range(3)]  # 90 tokens: 0.9 s of work
    admitted = batcher.submit([text_of(30, "still within")])  # 0.9 s ahead of it: admitted
    started = time.perf_counter()
    with pytest.raises(Overloaded, match="engine time"):
        batcher.submit(["one more"])  # 120 tokens = 1.2 s ahead of it
    assert time.perf_counter() - started < 0.05, "refused on arrival, not after waiting"
    engine.release()
    for future in [blocker, *queued, admitted]:
        future.result(timeout=10)
    np.testing.assert_array_equal(batcher.submit(["one more"]).result(timeout=10), engine.expected(["one more"]))
    batcher.stop()


def test_the_rest_of_the_running_batch_counts_in_the_predicted_wait(engine):
    """The running batch is predicted to take 0.8 s: 0.3 s queued behind it is over the 1 s
    admission plans for (80% of the 1.25 s limit)."""
    batcher = Batcher(engine, max_wait_seconds=1.25)
    batcher.cost = KnownCost(formula(0.0, 0.01, 0.0), tokens_per_second=100.0)
    engine.hold()
    running = batcher.submit([text_of(80, "running")])
    assert engine.running.wait(10), "the engine never started a batch"
    queued = batcher.submit([text_of(30, "queued")])  # nothing queued ahead of it: admitted
    started = time.perf_counter()
    with pytest.raises(Overloaded, match="engine time"):
        batcher.submit([text_of(3, "behind")])  # 0.8 s running + 0.3 s queued ahead
    assert time.perf_counter() - started < 0.05, "refused on arrival, not after waiting"
    engine.release()
    for future in (running, queued):
        future.result(timeout=10)
    batcher.stop()


@pytest.mark.parametrize(("waited_for_a_thread", "admitted"), [(0.65, True), (0.75, False)])
def test_the_wait_before_reaching_the_batcher_counts_in_admission(engine, waited_for_a_thread, admitted):
    """0.3 s of work is queued; admission plans for 1 s (80% of 1.25 s). A request that spent
    0.75 s waiting for a request thread would start after 1.05 s: refused at once; after 0.65 s,
    0.95 s: admitted."""
    batcher = Batcher(engine, max_wait_seconds=1.25)
    batcher.cost = KnownCost(formula(0.0, 0.01, 0.0), tokens_per_second=100.0)
    blocker = occupy_engine(batcher, engine)
    time.sleep(0.05)  # past the running batch's predicted 0.03 s (3 tokens): only the queue counts
    queued = batcher.submit([text_of(30, "queued")])
    if admitted:
        late = batcher.submit(["waited for a thread"], waited_for_a_thread)
    else:
        with pytest.raises(Overloaded, match=r"0\.30 s of engine time after 0\.75 s waiting for a request thread"):
            batcher.submit(["waited for a thread"], waited_for_a_thread)
    engine.release()
    for future in (blocker, queued, *([late] if admitted else [])):
        future.result(timeout=10)
    batcher.stop()


def test_a_request_that_waited_the_whole_limit_before_reaching_an_idle_batcher_is_shed(engine):
    """The limit is on the whole wait before a text starts, the wait for a request thread included."""
    batcher = Batcher(engine, max_wait_seconds=0.5)
    with pytest.raises(Overloaded, match="queued for more than 0.5 s"):
        batcher.submit(["waited long for a thread"], 0.6).result(timeout=10)
    assert batcher.submit(["found a thread free"], 0.0).result(timeout=10).shape == (1, 2)
    assert engine.batches == [["found a thread free"]]
    batcher.stop()


class SlowTokenizer(FakeEngine):
    def tokenize(self, texts):
        time.sleep(0.6)
        return super().tokenize(texts)


def test_a_requests_own_tokenizing_does_not_count_as_waiting():
    """Only waiting for others counts: a request whose own texts take longer than the limit to
    tokenize (a large request), on an idle batcher, is served."""
    engine = SlowTokenizer()
    batcher = Batcher(engine, max_wait_seconds=0.5)
    np.testing.assert_array_equal(batcher.submit(["slow to tokenize"], 0.1).result(timeout=10),
                                  engine.expected(["slow to tokenize"]))
    batcher.stop()


@pytest.mark.parametrize(("waited", "next_batch"), [
    (1.05, ["oldest", "other"]),  # its slack is spent: either newer text would make it start late
    (0.65, ["oldest", "new0", "other"]),  # slack for one newer text, not for two
    (0.1, ["oldest", "new0", "new1"]),  # slack to spare: the oldest's length decides
])
def test_a_newer_text_joins_ahead_of_an_older_one_only_while_the_older_still_starts_in_time(engine, waited, next_batch):
    """Admission plans each text's start from the tokens queued ahead of it; each newer text taken
    first delays it by its own tokens. At 100 tokens/s, a 1.5 s limit plans for 1.2 s: after
    `waited`, the text of another length has (1.2 - waited) x 100 tokens left, 20 of them for the
    oldest ahead of it, the rest to spare for newer 20-token texts."""
    batcher = Batcher(engine, max_batch_texts=3, max_wait_seconds=1.5)
    batcher.cost = KnownCost(formula(1.0, 0.0, 0.0), tokens_per_second=100.0)  # more texts, better
    blocker = occupy_engine(batcher, engine)
    oldest = batcher.submit([text_of(20, "oldest")])
    other_length = batcher.submit([text_of(60, "other")])
    time.sleep(waited)
    newer = [batcher.submit([text_of(20, f"new{n}")]) for n in range(2)]  # 80 then 100 tokens ahead: admitted
    engine.release()
    for future in [blocker, oldest, other_length, *newer]:
        future.result(timeout=10)
    assert [text.split()[0] for text in engine.batches[1]] == next_batch
    batcher.stop()


def test_a_newer_text_needs_no_slack_from_older_texts_in_the_same_batch(engine):
    """Late or not, texts taken in this batch are not delayed by a newer text joining them."""
    batcher = Batcher(engine, max_batch_texts=3, max_wait_seconds=1.5)  # plans for 1.2 s
    batcher.cost = KnownCost(formula(1.0, 0.0, 0.0), tokens_per_second=100.0)
    blocker = occupy_engine(batcher, engine)
    older = [batcher.submit([text_of(20, f"older{n}")]) for n in range(2)]
    time.sleep(1.05)  # the second older text has no slack left: (1.2 - 1.05) x 100 < 20 ahead
    newer = batcher.submit([text_of(20, "newer")])
    engine.release()
    for future in [blocker, *older, newer]:
        future.result(timeout=10)
    assert [text.split()[0] for text in engine.batches[1]] == ["older0", "older1", "newer"]
    batcher.stop()


def test_a_text_that_starts_after_its_planned_wait_but_within_the_limit_is_served(engine):
    """The planned share leaves room for the pace to vary: only the limit itself sheds."""
    batcher = Batcher(engine, max_wait_seconds=1.0)  # admission plans for 0.8 s
    batcher.cost = KnownCost(formula(0.0, 0.01, 0.0), tokens_per_second=1000.0)
    blocker = occupy_engine(batcher, engine)
    behind = batcher.submit(["behind the blocker"])
    time.sleep(0.9)  # the blocker ran far longer than its pace said
    engine.release()
    blocker.result(timeout=10)
    np.testing.assert_array_equal(behind.result(timeout=10), engine.expected(["behind the blocker"]))
    batcher.stop()


def test_waiting_for_the_batchers_lock_while_work_is_queued_counts_in_the_next_batchs_time(engine):
    """Under load the engine thread waits for the batcher's lock among the request threads
    between two batches; the queue waits through it too, so the pace must include it. Here the
    test holds the lock for 0.2 s as a crowd of submitting threads would."""
    batcher = Batcher(engine)
    batcher.cost = recorded = KnownCost(formula(0.001, 0.0, 0.0))
    engine.hold()
    first = batcher.submit(["first"])
    assert engine.running.wait(10), "the engine never started a batch"
    queued = batcher.submit(["queued behind it"])
    with batcher._condition:
        engine.release()
        first.result(timeout=10)
        time.sleep(0.2)
    queued.result(timeout=10)
    batcher.stop()
    assert len(recorded.observed) == 2
    assert recorded.observed[1][3] >= 0.2


def test_an_idle_engine_is_not_counted_in_the_next_batchs_time(engine):
    """Waiting for work is not work: a batch after a pause is timed from when it was taken."""
    batcher = Batcher(engine)
    batcher.cost = recorded = KnownCost(formula(0.001, 0.0, 0.0))
    batcher.submit(["first"]).result(timeout=10)
    time.sleep(0.3)
    batcher.submit(["after a pause"]).result(timeout=10)
    batcher.stop()
    assert len(recorded.observed) == 2
    assert recorded.observed[1][3] < 0.25  # the 0.3 s pause is not in it


def test_a_batch_costs_the_engine_threads_whole_turn_not_only_the_engine_call(engine):
    """Handing out the rows (waking the request threads, which then compete for the GIL) is time
    the queue waits too: the cost model must learn it, or admission under load predicts short."""
    batcher = Batcher(engine)
    batcher.cost = recorded = KnownCost(formula(0.001, 0.0, 0.0))
    engine.hold()
    future = batcher.submit(["slow to hand out"])
    future.add_done_callback(lambda _: time.sleep(0.1))  # runs on the engine thread, at set_result
    engine.release()
    future.result(timeout=10)
    batcher.stop()  # joins the engine thread: its turn is over and observed
    assert len(recorded.observed) == 1
    assert recorded.observed[0][3] >= 0.1


def test_a_request_with_nothing_queued_ahead_is_always_admitted(engine):
    """An idle service serves any request within the limits, however slow the engine measured."""
    batcher = Batcher(engine, max_wait_seconds=0.1, max_queue_texts=64)
    batcher.cost = KnownCost(formula(0.0, 1.0, 0.0), tokens_per_second=1.0)
    large = [text_of(200, f"large{n}") for n in range(64)]  # 12,800 tokens: hours at this pace
    np.testing.assert_array_equal(batcher.submit(large).result(timeout=10), engine.expected(large))
    blocker = occupy_engine(batcher, engine)  # the engine busy, nothing queued: still admitted
    behind = batcher.submit(large[:8])
    engine.release()
    blocker.result(timeout=10)
    np.testing.assert_array_equal(behind.result(timeout=10), engine.expected(large[:8]))
    batcher.stop()


def test_overload_by_predicted_wait_is_a_503_with_retry_after_over_http(engine):
    import app as app_module
    from model.cache import PredictionCache
    from model.predictor import Predictor
    from model.settings import Settings

    settings = Settings(retry_after_seconds=2, queue_max_wait_seconds=0.5)
    batcher = Batcher(engine, max_wait_seconds=settings.queue_max_wait_seconds)
    batcher.cost = KnownCost(formula(0.0, 0.01, 0.0), tokens_per_second=100.0)
    cache = PredictionCache(None, namespace="admission", label_count=len(engine.labels))
    client = app_module.create_app(Predictor(engine, batcher, cache, model_string="fake@0"), settings).test_client()
    blocker = occupy_engine(batcher, engine)
    queued = batcher.submit([text_of(60, "ahead")])  # 0.6 s of engine time ahead
    started = time.perf_counter()
    response = client.post("/predict", json={"text": ["refused"]})
    elapsed = time.perf_counter() - started
    engine.release()
    blocker.result(timeout=10)
    queued.result(timeout=10)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert "overloaded" in response.get_json()["detail"]
    assert elapsed < 0.25, f"answered after {elapsed:.2f} s, not at once"
    assert client.post("/predict", json={"text": ["refused"]}).status_code == 200  # the retry succeeds
    batcher.stop()


# --- the pace and the fit on edge cases ----------------------------------------------------------


def test_batches_without_real_tokens_give_no_pace_instead_of_zero():
    """A pace of zero would make every queued token an infinite wait; no tokens means no pace yet."""
    cost = BatchCost()
    cost.observe(1, 0, 0, 0.01)
    assert cost.tokens_per_second() is None


def test_a_single_real_token_already_gives_a_pace():
    cost = BatchCost()
    cost.observe(1, 1, 1, 0.01)
    assert cost.tokens_per_second() == pytest.approx(100.0)


def test_the_fit_keeps_the_one_feature_that_explains_the_times_when_the_others_would_be_negative():
    """Orthogonal features: the best fit with coefficients >= 0 is the target clipped at zero,
    here (0, 2, 0); every fit of two or three features needs a negative coefficient."""
    from model.batch_cost import _non_negative_least_squares

    features = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    target = np.array([-1.0, 2.0, -3.0, 0.0])
    assert _non_negative_least_squares(features, target) == pytest.approx([0.0, 2.0, 0.0], abs=1e-12)


def test_the_fit_uses_two_features_when_the_third_would_be_negative():
    from model.batch_cost import _non_negative_least_squares

    features = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    target = np.array([-1.0, 2.0, 3.0])
    assert _non_negative_least_squares(features, target) == pytest.approx([0.0, 2.0, 3.0], abs=1e-12)


# --- the cost model's choice at its edges ----------------------------------------------------------


def test_when_no_neighbour_pays_off_the_oldest_text_runs_alone(engine):
    """Padding is all that costs: 5 real tokens in 5 s-units alone beat 25 in 40 with a 20-token text."""
    batcher = Batcher(engine, max_padding=10.0)
    batcher.cost = KnownCost(formula(0.0, 1e-5, 0.0))
    short, long = text_of(5, "short"), text_of(20, "long")
    queue_behind_a_blocker(batcher, engine, [short, long])
    assert engine.batches[1:] == [[short], [long]]
    batcher.stop()


def test_queued_work_of_exactly_the_planned_wait_is_still_admitted(engine):
    batcher = Batcher(engine, max_wait_seconds=2.5)  # admission plans for 80% of it: 2.0 s
    batcher.cost = KnownCost(formula(0.0, 0.01, 0.0), tokens_per_second=10.0)
    blocker = occupy_engine(batcher, engine)
    time.sleep(0.35)  # past the running batch's predicted 0.3 s (3 tokens): only the queue counts
    ahead = batcher.submit([text_of(20, "ahead")])  # 20 tokens at 10 per second: exactly 2.0 s
    at_limit = batcher.submit(["admitted"])
    message = r"^the queued texts need about 2\.30 s of engine time after 0\.00 s waiting for a request thread \(admitted up to 2 s of the 2\.5 s limit\)$"
    with pytest.raises(Overloaded, match=message):
        batcher.submit(["refused"])  # 23 tokens ahead: 2.3 s
    engine.release()
    for future in (blocker, ahead, at_limit):
        future.result(timeout=10)
    batcher.stop()


def test_a_batch_that_took_no_time_is_not_counted():
    cost = BatchCost()
    cost.observe(4, 10, 40, 0.0)
    assert cost.tokens_per_second() is None
    cost.observe(1, 10, 10, 0.01)
    cost.observe(4, 10, 40, 0.0)  # its 40 tokens would make the pace 5,000 tokens per second
    assert cost.tokens_per_second() == pytest.approx(1000.0)


def test_three_shapes_are_enough_for_a_fit_and_two_are_not():
    truth = formula(0.002, 1e-5, 1e-8)
    cost = BatchCost()
    for texts, longest in [(1, 16), (4, 64)]:
        cost.observe(texts, longest, texts * longest, truth(texts, longest))
    assert not cost.fitted
    cost.observe(16, 128, 16 * 128, truth(16, 128))
    assert cost.fitted
    assert cost.seconds(8, 32) == pytest.approx(truth(8, 32), rel=1e-6)


def test_times_that_do_not_grow_with_the_tokens_leave_the_padding_rule_in_charge():
    """A fixed time per batch whatever its shape says nothing about padding: no cost model from it."""
    cost = BatchCost()
    for texts, longest in [(1, 16), (4, 64), (16, 128), (2, 8)]:
        cost.observe(texts, longest, texts * longest, 0.01)
    assert not cost.fitted


def test_once_fitted_the_model_is_refitted_every_eighth_batch():
    """A first fit on three shapes; then the engine gets twice as slow: the model keeps its first
    fit for seven batches and moves to the new times with the eighth."""
    first, slower = formula(0.002, 1e-5, 1e-8), formula(0.004, 2e-5, 2e-8)
    cost = BatchCost()
    shapes = [(1, 16), (4, 64), (16, 128), (2, 32), (8, 16), (1, 100), (3, 50), (6, 20)]
    for texts, longest in shapes[:3]:
        cost.observe(texts, longest, texts * longest, first(texts, longest))
    assert cost.seconds(8, 32) == pytest.approx(first(8, 32), rel=1e-6)
    for texts, longest in shapes[:7]:
        cost.observe(texts, longest, texts * longest, slower(texts, longest))
        assert cost.seconds(8, 32) == pytest.approx(first(8, 32), rel=1e-6), "refitted before the eighth batch"
    cost.observe(*shapes[7], shapes[7][0] * shapes[7][1], slower(*shapes[7]))
    assert cost.seconds(8, 32) > 1.3 * first(8, 32), "not refitted on the eighth batch"
    for texts, longest in shapes[:7]:
        cost.observe(texts, longest, texts * longest, slower(texts, longest))
    before = cost.seconds(8, 32)
    cost.observe(*shapes[7], shapes[7][0] * shapes[7][1], slower(*shapes[7]))
    assert cost.seconds(8, 32) > before, "the next eighth batch refits again"


def test_neighbours_are_the_texts_closest_in_length_not_the_shortest(engine):
    """Oldest 20 tokens; 21 and 22 are its neighbours, 4 is the shortest: with a fixed cost per call
    [20, 21, 22] scores the most tokens per second (63 / 1.66 ms), ahead of all four (67 / 1.88 ms)."""
    batcher = Batcher(engine)
    batcher.cost = KnownCost(formula(0.001, 1e-5, 0.0))
    oldest, shortest, near, nearer = text_of(20, "oldest"), text_of(4, "shortest"), text_of(22, "near"), text_of(21, "nearer")
    queue_behind_a_blocker(batcher, engine, [oldest, shortest, near, nearer])
    assert engine.batches[1:] == [[oldest, nearer, near], [shortest]]
    batcher.stop()


def test_the_model_and_the_pace_forget_batches_older_than_the_last_256():
    """The engine moved to a CPU twice as slow: after 256 batches there, nothing of the old one is left."""
    before, after = formula(0.002, 1e-5, 1e-8), formula(0.004, 2e-5, 2e-8)
    shapes = [(1, 16), (4, 64), (16, 128), (2, 32)]
    cost = BatchCost()
    for texts, longest in shapes * 4:
        cost.observe(texts, longest, texts * longest, before(texts, longest))
    for texts, longest in shapes * 66:  # 264 batches: the last refit (every 8th) sees only these
        cost.observe(texts, longest, texts * longest, after(texts, longest))
    assert cost.seconds(8, 32) == pytest.approx(after(8, 32), rel=1e-6)
    tokens = sum(texts * longest for texts, longest in shapes)
    assert cost.tokens_per_second() == pytest.approx(tokens / sum(after(*shape) for shape in shapes), rel=1e-9)
