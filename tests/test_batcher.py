"""The continuous batcher: immediate start when idle, queued work combined, limits, isolation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import REGISTRY

from model.batcher import Batcher, Overloaded
from tests.conftest import wait_until
from tests.fakes import FakeEngine


def wait_for(event: threading.Event) -> None:
    assert event.wait(timeout=10), "the engine never started a batch"


def occupy_engine(batcher: Batcher, engine: FakeEngine):
    """Hold the engine inside a first batch, so that what is submitted next queues; its future."""
    engine.hold()
    blocker = batcher.submit(["blocker"])
    wait_for(engine.running)
    return blocker


@pytest.fixture
def engine():
    engine = FakeEngine()
    yield engine
    engine.release()


def test_an_idle_batcher_runs_a_submission_at_once_as_one_batch(engine):
    batcher = Batcher(engine)
    texts = ["a text of six words here", "five words in this one", "and six words in this text"]
    scores = batcher.submit(texts).result(timeout=10)
    assert engine.batches == [sorted(texts, key=lambda t: len(t.split()))]
    np.testing.assert_array_equal(scores, engine.expected(texts))
    assert scores.dtype == np.float32, "the engine's float32 rows, not widened"
    batcher.stop()


def test_work_queued_during_a_batch_runs_together_in_the_next_batch(engine):
    batcher = Batcher(engine)
    engine.hold()
    first = batcher.submit(["first request"])
    wait_for(engine.running)
    later = [batcher.submit([f"queued request {n}", f"its second text {n}"]) for n in range(5)]
    engine.release()
    first.result(timeout=10)
    results = [future.result(timeout=10) for future in later]
    assert len(engine.batches) == 2
    queued_texts = [text for n in range(5) for text in (f"queued request {n}", f"its second text {n}")]
    assert sorted(engine.batches[1]) == sorted(queued_texts)
    for n, scores in enumerate(results):
        np.testing.assert_array_equal(scores, engine.expected([f"queued request {n}", f"its second text {n}"]))
    batcher.stop()


def test_concurrent_submissions_each_get_exactly_their_own_scores(engine):
    """Texts of many lengths, so batches are reordered by length and padded inside the batcher."""
    batcher = Batcher(engine, max_batch_texts=16, max_padding=10)
    requests = [[f"request {n} text {i} " + "word " * ((7 * n + 5 * i) % 23) for i in range(1 + n % 4)] for n in range(64)]
    assert len({len(text.split()) for texts in requests for text in texts}) > 16
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda texts: batcher.submit(texts).result(timeout=10), requests))
    for texts, scores in zip(requests, results):
        np.testing.assert_array_equal(scores, engine.expected(texts))
    assert all(len(batch) <= 16 for batch in engine.batches)
    batcher.stop()


def test_batches_respect_the_text_limit_and_split_a_request(engine):
    batcher = Batcher(engine, max_batch_texts=4)
    blocker = occupy_engine(batcher, engine)
    texts = [f"text number {n}" for n in range(10)]
    future = batcher.submit(texts)
    engine.release()
    blocker.result(timeout=10)
    np.testing.assert_array_equal(future.result(timeout=10), engine.expected(texts))
    assert [len(batch) for batch in engine.batches[1:]] == [4, 4, 2]
    batcher.stop()


def test_batches_respect_the_padded_token_limit(engine):
    batcher = Batcher(engine, max_batch_texts=64, max_batch_tokens=64)
    blocker = occupy_engine(batcher, engine)
    texts = [" ".join(["word"] * n) for n in (3, 30, 5, 14, 8, 20, 2)]
    future = batcher.submit(texts)
    engine.release()
    blocker.result(timeout=10)
    np.testing.assert_array_equal(future.result(timeout=10), engine.expected(texts))
    for batch in engine.batches[1:]:
        lengths = [len(e) for e in engine.tokenize(batch)]
        assert len(batch) * max(lengths) <= 64 or len(batch) == 1
        assert lengths == sorted(lengths)  # sorted by length inside the batch
    assert sorted(t for batch in engine.batches[1:] for t in batch) == sorted(texts)


def test_the_oldest_text_goes_next_with_texts_of_its_length(engine):
    """A long text queued first is not overtaken; texts close to its length fill its batch."""
    batcher = Batcher(engine, max_batch_texts=3)
    blocker = occupy_engine(batcher, engine)
    oldest = batcher.submit([" ".join(["long"] * 40)])
    shorts = batcher.submit(["tiny one", "tiny two"])
    near = batcher.submit([" ".join(["near"] * 36), " ".join(["close"] * 38)])
    engine.release()
    for future in (blocker, oldest, shorts, near):
        future.result(timeout=10)
    assert engine.batches[1] == [" ".join(["near"] * 36), " ".join(["close"] * 38), " ".join(["long"] * 40)]
    assert engine.batches[2] == ["tiny one", "tiny two"]
    batcher.stop()


def test_padding_stays_within_its_share_of_the_real_tokens(engine):
    """Mixed lengths are split into batches of similar lengths instead of padding short texts."""
    batcher = Batcher(engine, max_batch_texts=64, max_padding=0.25)
    blocker = occupy_engine(batcher, engine)
    texts = [" ".join(["word"] * n) for n in (3, 40, 4, 38, 3, 36, 5, 41)]
    future = batcher.submit(texts)
    engine.release()
    blocker.result(timeout=10)
    np.testing.assert_array_equal(future.result(timeout=10), engine.expected(texts))
    for batch in engine.batches[1:]:
        lengths = [len(e) for e in engine.tokenize(batch)]
        assert len(batch) * max(lengths) <= 1.25 * sum(lengths)
    assert sorted(len(batch) for batch in engine.batches[1:]) == [4, 4]


def test_a_full_queue_refuses_at_once_and_accepts_again_later(engine):
    batcher = Batcher(engine, max_queue_texts=4)
    blocker = occupy_engine(batcher, engine)
    queued = batcher.submit(["one", "two", "three"])
    with pytest.raises(Overloaded, match=r"^3 texts are queued \(limit 4\)$"):
        batcher.submit(["four", "five"])
    fits = batcher.submit(["four"])
    engine.release()
    for future in (blocker, queued, fits):
        future.result(timeout=10)
    np.testing.assert_array_equal(batcher.submit(["again"]).result(timeout=10), engine.expected(["again"]))
    batcher.stop()


def test_an_engine_error_fails_only_the_requests_of_that_batch(caplog):
    engine = FakeEngine(fail_on="boom")
    batcher = Batcher(engine, max_batch_texts=1)
    blocker = occupy_engine(batcher, engine)
    failing = batcher.submit(["boom"])
    fine = batcher.submit(["fine"])
    engine.release()
    blocker.result(timeout=10)
    with pytest.raises(RuntimeError, match="boom"):
        failing.result(timeout=10)
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "model.batcher"] == [
        ("ERROR", "engine batch of 1 texts failed: engine failure on 'boom'")]
    np.testing.assert_array_equal(fine.result(timeout=10), engine.expected(["fine"]))
    np.testing.assert_array_equal(batcher.submit(["after"]).result(timeout=10), engine.expected(["after"]))
    batcher.stop()


def test_stop_finishes_queued_work_then_refuses(engine):
    batcher = Batcher(engine)
    blocker = occupy_engine(batcher, engine)
    queued = [batcher.submit([f"queued {n}"]) for n in range(3)]
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    engine.release()
    stopper.join(timeout=10)
    assert not stopper.is_alive()
    blocker.result(timeout=1)
    for n, future in enumerate(queued):
        np.testing.assert_array_equal(future.result(timeout=1), engine.expected([f"queued {n}"]))
    with pytest.raises(Overloaded, match="^the service is shutting down$"):
        batcher.submit(["too late"])


def test_without_batching_each_request_runs_alone_in_chunks(engine):
    batcher = Batcher(engine, max_batch_texts=3, batching=False)
    requests = [[f"request {n} text {i}" for i in range(5)] for n in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda texts: batcher.submit(texts).result(timeout=10), requests))
    for texts, scores in zip(requests, results):
        np.testing.assert_array_equal(scores, engine.expected(texts))
    owners = [{text.split(" text ")[0] for text in batch} for batch in engine.batches]
    assert all(len(owner) == 1 for owner in owners)  # never two requests in one engine call
    assert sorted(len(batch) for batch in engine.batches) == sorted([3, 2] * 8)
    batcher.stop()


def test_each_text_is_tokenized_once_and_its_encoding_reaches_the_engine(engine):
    batcher = Batcher(engine, max_batch_texts=2)
    blocker = occupy_engine(batcher, engine)
    texts = ["one two", "three four five", "six", "seven eight"]
    future = batcher.submit(texts)
    engine.release()
    blocker.result(timeout=10)
    np.testing.assert_array_equal(future.result(timeout=10), engine.expected(texts))
    assert engine.tokenized == ["blocker", *texts]  # batching did not tokenize again
    assert sorted(t for batch in engine.batches[1:] for t in batch) == sorted(texts)
    batcher.stop()


def test_batch_metrics_are_recorded(engine):
    def sample(name):
        return REGISTRY.get_sample_value(name) or 0.0

    before = {name: sample(name) for name in (
        "sentiment_batch_size_texts_count", "sentiment_batch_size_texts_sum",
        "sentiment_queue_wait_seconds_count", "sentiment_inference_duration_seconds_count")}
    batcher = Batcher(engine)
    batcher.submit(["one", "two", "three"]).result(timeout=10)
    batcher.stop()
    assert sample("sentiment_batch_size_texts_count") - before["sentiment_batch_size_texts_count"] == 1
    assert sample("sentiment_batch_size_texts_sum") - before["sentiment_batch_size_texts_sum"] == 3
    assert sample("sentiment_queue_wait_seconds_count") - before["sentiment_queue_wait_seconds_count"] == 3
    inference = "sentiment_inference_duration_seconds_count"
    assert sample(inference) - before[inference] == 1


def test_texts_that_waited_too_long_are_refused_not_computed(engine):
    batcher = Batcher(engine, max_wait_seconds=0.05)
    blocker = occupy_engine(batcher, engine)
    stale = batcher.submit(["waited too long", "its sibling"])
    time.sleep(0.2)  # only has to exceed the 0.05 s bound: the engine is held meanwhile
    engine.release()
    blocker.result(timeout=10)
    with pytest.raises(Overloaded, match="queued for more than"):
        stale.result(timeout=10)
    assert not any("waited too long" in batch or "its sibling" in batch for batch in engine.batches)
    np.testing.assert_array_equal(batcher.submit(["fresh"]).result(timeout=10), engine.expected(["fresh"]))
    batcher.stop()


def test_the_wait_limit_counts_waiting_not_the_requests_own_batches(engine):
    """A request larger than one batch is computed to the end, however long its own batches take;
    one queued behind it is still shed when it waited too long."""
    batcher = Batcher(engine, max_batch_texts=2, max_wait_seconds=0.2)
    engine.hold()
    texts = [f"large request text {n}" for n in range(6)]
    large = batcher.submit(texts)  # idle engine: its first batch starts at once, then is held
    wait_for(engine.running)
    behind = batcher.submit(["queued behind the large request"])
    time.sleep(0.4)  # the large request's own first batch outlasts the wait limit
    engine.release()
    np.testing.assert_array_equal(large.result(timeout=10), engine.expected(texts))
    with pytest.raises(Overloaded, match="queued for more than"):
        behind.result(timeout=10)
    batcher.stop()


def test_without_batching_texts_waiting_for_the_engine_are_bounded_and_counted_back(engine):
    """Texts running and texts waiting for the engine add up against the limit, and in queued_texts()."""
    batcher = Batcher(engine, max_batch_texts=4, max_queue_texts=4, batching=False)
    engine.hold()
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = pool.submit(lambda: batcher.submit(["first", "second"]).result(timeout=10))
        assert engine.running.wait(10)
        waiting = pool.submit(lambda: batcher.submit(["third"]).result(timeout=10))
        wait_until(lambda: batcher.queued_texts() == 3, 10, "the second request to wait for the engine")
        with pytest.raises(Overloaded, match=r"^3 texts are waiting \(limit 4\)$"):
            batcher.submit(["fourth", "fifth"])
        engine.release()
        np.testing.assert_array_equal(running.result(timeout=10), engine.expected(["first", "second"]))
        np.testing.assert_array_equal(waiting.result(timeout=10), engine.expected(["third"]))
    assert batcher.queued_texts() == 0
    # Counted back: a request up to the limit is served again.
    four = ["a", "b", "c", "d"]
    np.testing.assert_array_equal(batcher.submit(four).result(timeout=10), engine.expected(four))
    batcher.stop()
    with pytest.raises(Overloaded, match="^the service is shutting down$"):
        batcher.submit(["late"])


# --- the padding rule at its edges (before the cost model is fitted) -----------------------------


def words(tokens: int, tag: str) -> str:
    """A text the fake engine counts as `tokens` tokens (its words plus two special tokens)."""
    return " ".join([tag] + ["w"] * (tokens - 3))


def first_batch_after_a_blocker(batcher: Batcher, engine: FakeEngine, texts: list[str]) -> list[str]:
    """Queue `texts` (one request each, in order) behind a held batch; the engine's next batch."""
    blocker = occupy_engine(batcher, engine)
    futures = [batcher.submit([text]) for text in texts]
    engine.release()
    for future in (blocker, *futures):
        future.result(timeout=10)
    batcher.stop()
    return engine.batches[1]


def test_a_batch_exactly_at_the_padded_token_limit_is_taken_whole(engine):
    texts = [words(10, f"t{n}") for n in range(4)]  # 4 x 10 = 40 padded tokens
    assert sorted(first_batch_after_a_blocker(Batcher(engine, max_batch_tokens=40), engine, texts)) == sorted(texts)


def test_a_text_over_the_token_limit_is_passed_over_for_a_farther_one_that_fits(engine):
    """Oldest 10 tokens; 14 is nearer in length but 2 x 14 > 25 tokens; 5 is farther and fits."""
    oldest, nearer, farther = words(10, "oldest"), words(14, "nearer"), words(5, "farther")
    batcher = Batcher(engine, max_batch_tokens=25, max_padding=10.0)
    assert first_batch_after_a_blocker(batcher, engine, [oldest, nearer, farther]) == [farther, oldest]


def test_padding_exactly_at_its_share_joins_and_just_over_it_does_not(engine):
    # 6 and 10 tokens: 2 x 10 = 20 padded = 1.25 x 16 real; 5 and 10: 20 > 1.25 x 15.
    at_limit = [words(6, "six"), words(10, "ten")]
    assert sorted(first_batch_after_a_blocker(Batcher(engine, max_padding=0.25), engine, at_limit)) == sorted(at_limit)
    engine.batches.clear()
    over = [words(5, "five"), words(10, "ten")]
    assert first_batch_after_a_blocker(Batcher(engine, max_padding=0.25), engine, over) == [over[0]]


def test_a_text_over_the_padding_share_is_passed_over_for_a_farther_one_within_it(engine):
    """Oldest 10 tokens: 7 is nearer but 2 x 10 > 1.17 x 17; 14 is farther and 2 x 14 <= 1.17 x 24."""
    oldest, nearer, farther = words(10, "oldest"), words(7, "nearer"), words(14, "farther")
    batcher = Batcher(engine, max_padding=0.17)
    assert first_batch_after_a_blocker(batcher, engine, [oldest, nearer, farther]) == [oldest, farther]


# --- without batching: failures, waits and the queue count ---------------------------------------


def test_without_batching_an_engine_error_reaches_the_caller():
    engine = FakeEngine(fail_on="broken")
    batcher = Batcher(engine, batching=False)
    with pytest.raises(RuntimeError, match="engine failure on 'broken'"):
        batcher.submit(["fine", "broken"]).result(timeout=10)


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "alone"])
def test_the_queue_wait_observed_is_at_most_the_time_waited(engine, batching):
    def sample(name):
        return REGISTRY.get_sample_value(name) or 0.0

    count, total = sample("sentiment_queue_wait_seconds_count"), sample("sentiment_queue_wait_seconds_sum")
    batcher = Batcher(engine, max_batch_texts=2, batching=batching)
    started = time.perf_counter()
    batcher.submit(["one", "two", "three"]).result(timeout=10)
    elapsed = time.perf_counter() - started
    batcher.stop()
    assert sample("sentiment_queue_wait_seconds_count") - count == 3
    assert 0 <= sample("sentiment_queue_wait_seconds_sum") - total <= 3 * elapsed


# --- defaults, the engine thread, and what the engine hands back ----------------------------------


def test_an_empty_submission_is_a_programming_error():
    batcher = Batcher(FakeEngine())
    with pytest.raises(ValueError, match=r"^submit\(\) needs at least one text$"):
        batcher.submit([])
    batcher.stop()


def test_a_batcher_built_without_options_has_the_services_documented_defaults(engine):
    """The defaults README's settings table gives: 64 texts and 8192 padded tokens per batch, 1024
    queued texts, 25% padding, 10 s of queue wait, batching on."""
    batcher = Batcher(engine)
    assert (batcher.max_batch_texts, batcher.max_batch_tokens, batcher.max_queue_texts) == (64, 8192, 1024)
    assert (batcher.max_padding, batcher.max_wait_seconds, batcher.batching) == (0.25, 10.0, True)
    batcher.stop()


def test_the_engine_thread_is_a_named_daemon_thread(engine):
    """A thread listing (py-spy, faulthandler) names it; as a daemon thread it lets a worker exit
    without stop()."""
    def engine_threads():
        return [thread for thread in threading.enumerate() if thread.name == "engine-batcher"]

    before = set(engine_threads())
    batcher = Batcher(engine)
    (started,) = set(engine_threads()) - before
    assert started.daemon
    batcher.stop()


def test_stop_with_a_timeout_returns_while_a_batch_still_runs(engine):
    batcher = Batcher(engine)
    blocker = occupy_engine(batcher, engine)
    started = time.perf_counter()
    batcher.stop(timeout=0.2)
    waited = time.perf_counter() - started
    engine.release()
    blocker.result(timeout=10)
    assert 0.2 <= waited < 5, f"stop(timeout=0.2) returned after {waited:.2f} s"


class ShortEngine(FakeEngine):
    """Drops the last row of every batch of more than one text."""

    def predict_encoded(self, encodings):
        scores = super().predict_encoded(encodings)
        return scores[:-1] if len(scores) > 1 else scores


def test_an_engine_that_returns_too_few_rows_fails_the_batch_with_the_counts():
    engine = ShortEngine(labels=("a", "b", "c"))
    batcher = Batcher(engine)
    blocker = occupy_engine(batcher, engine)
    short = [batcher.submit([f"text {n}"]) for n in range(2)]
    engine.release()
    blocker.result(timeout=10)
    for future in short:
        with pytest.raises(RuntimeError, match=r"^engine returned 1 rows for 2 texts$"):
            future.result(timeout=10)
    batcher.stop()


def test_the_inference_time_observed_is_at_most_the_time_the_batch_took(engine):
    def sample(name):
        return REGISTRY.get_sample_value(name) or 0.0

    count, total = (sample(f"sentiment_inference_duration_seconds_{part}") for part in ("count", "sum"))
    batcher = Batcher(engine)
    started = time.perf_counter()
    batcher.submit(["one", "two"]).result(timeout=10)
    elapsed = time.perf_counter() - started
    batcher.stop()
    assert sample("sentiment_inference_duration_seconds_count") - count == 1
    assert 0 <= sample("sentiment_inference_duration_seconds_sum") - total <= elapsed
