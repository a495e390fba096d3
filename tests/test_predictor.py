"""The predictor: dedupe, one cache round trip, only missing texts computed, answers in order."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
import math

import numpy as np
import pytest
from prometheus_client import REGISTRY

from model.batcher import Batcher, Overloaded
from model.cache import PredictionCache
from model.engines import predict_texts
from model.predictor import Predictor
from model.settings import Settings
from tests.conftest import wait_until
from tests.fakes import FakeEngine
from tests.reference import as_dict, softmax_by_label


def texts_counted(source: str) -> float:
    return REGISTRY.get_sample_value("sentiment_texts_total", {"source": source}) or 0.0


def make_predictor(engine: FakeEngine, redis_url: str | None, namespace: str, **batcher_options) -> Predictor:
    cache = PredictionCache(
        redis_url, namespace=namespace, label_count=len(engine.labels), key_prefix="predictor-test:", timeout_seconds=1.0)
    return Predictor(engine, Batcher(engine, **batcher_options), cache, model_string="fake@0123456789ab")


@pytest.fixture
def engine():
    engine = FakeEngine(labels=("joy", "anger", "neutral"))
    yield engine
    engine.release()


def test_every_input_is_answered_in_order_and_duplicates_computed_once(engine):
    predictor = make_predictor(engine, None, "order")
    texts = ["b text", "a text", "b text", "c text", "a text"]
    prediction = predictor.predict(texts)
    assert sorted(t for batch in engine.batches for t in batch) == ["a text", "b text", "c text"]
    assert len(prediction.scores) == len(texts)
    for text, ranked in zip(texts, prediction.scores):
        expected = dict(zip(engine.labels, engine.expected([text])[0].tolist()))
        assert dict(ranked) == pytest.approx(expected, abs=0)
    assert prediction.scores[0] == prediction.scores[2]
    predictor.close()


def test_labels_are_all_present_sorted_by_score_and_sum_to_one(engine):
    predictor = make_predictor(engine, None, "ranked")
    for ranked in predictor.predict([f"sentence {n}" for n in range(20)]).scores:
        labels = [label for label, _ in ranked]
        scores = [score for _, score in ranked]
        assert sorted(labels) == sorted(engine.labels)
        assert scores == sorted(scores, reverse=True)
        assert math.isclose(sum(scores), 1.0, abs_tol=1e-4)
        assert all(isinstance(score, float) and 0 <= score <= 1 for score in scores)
    assert predictor.labels == engine.labels
    predictor.close()


def test_warmup_runs_one_engine_batch_and_the_model_string_is_kept(engine):
    predictor = make_predictor(engine, None, "warmup")
    predictor.warmup()
    assert engine.batches == [["warm-up"]]
    assert predictor.model_string == "fake@0123456789ab"
    predictor.close()


def test_without_redis_every_answer_is_bypass(engine):
    predictor = make_predictor(engine, None, "bypass")
    assert predictor.predict(["x"]).cache_status == "bypass"
    assert predictor.predict(["x"]).cache_status == "bypass"
    assert predictor.cache_state() == "disabled"
    predictor.close()


def test_miss_then_hit_then_partial_computing_only_new_texts(engine, redis_server):
    predictor = make_predictor(engine, redis_server.url, "statuses")
    computed, from_cache = texts_counted("computed"), texts_counted("cache")
    first = predictor.predict(["one", "two", "one"])
    assert first.cache_status == "miss"
    second = predictor.predict(["two", "one"])
    assert second.cache_status == "hit"
    assert second.scores == [first.scores[1], first.scores[0]]  # exactly the computed scores
    engine.batches.clear()
    third = predictor.predict(["one", "three", "four", "three"])
    assert third.cache_status == "partial"
    assert sorted(t for batch in engine.batches for t in batch) == ["four", "three"]
    assert texts_counted("computed") - computed == 2 + 2
    assert texts_counted("cache") - from_cache == 2 + 1
    predictor.close()


def test_an_unreachable_redis_serves_uncached(engine, redis_factory):
    server = redis_factory()
    predictor = make_predictor(engine, server.url, "outage")
    assert predictor.predict(["cached first"]).cache_status == "miss"
    server.stop()
    prediction = predictor.predict(["cached first", "new"])
    assert prediction.cache_status == "bypass"
    assert len(prediction.scores) == 2
    assert predictor.cache_state() == "unavailable"
    predictor.close()


def test_overload_reaches_the_caller(engine):
    predictor = make_predictor(engine, None, "overload", max_queue_texts=2)
    engine.hold()
    blocker = predictor.batcher.submit(["blocker"])
    assert engine.running.wait(10)
    try:
        with pytest.raises(Overloaded):
            predictor.predict(["a", "b", "c"])
    finally:
        engine.release()
    blocker.result(timeout=10)
    predictor.close()


@pytest.mark.slow  # loads torch and a checkpoint (the first also exports ONNX)
def test_from_settings_serves_the_real_tiny_model(tiny_artifact, redis_server):
    settings = Settings(model_dir=tiny_artifact, redis_url=redis_server.url, cache_key_prefix="predictor-real:")
    predictor = Predictor.from_settings(settings)
    predictor.warmup()
    manifest = json.loads((tiny_artifact / "manifest.json").read_text())
    assert predictor.model_string == f"{manifest['model_id']}@{manifest['fingerprint'][:12]}"
    assert predictor.labels == tuple(manifest["labels"])
    assert predictor.cache_state() == "ok"
    texts = ["I love this film", "what a waste of time"]
    miss, hit = predictor.predict(texts), predictor.predict(texts)
    assert (miss.cache_status, hit.cache_status) == ("miss", "hit")
    assert hit.scores == miss.scores
    direct = predict_texts(predictor.engine, texts)
    for ranked, row in zip(miss.scores, direct):
        assert dict(ranked) == pytest.approx(dict(zip(predictor.labels, row.tolist())), abs=1e-6)
    keys = redis_server.client().keys("predictor-real:*")
    assert len(keys) == 2
    predictor.close()


def test_scores_are_float32_exact_after_the_cache(engine, redis_server):
    predictor = make_predictor(engine, redis_server.url, "float32")
    computed = predictor.predict(["exactness"]).scores[0]
    cached = predictor.predict(["exactness"]).scores[0]
    assert cached == computed
    assert [score for _, score in computed] == sorted(
        np.asarray(engine.expected(["exactness"])[0], dtype=np.float32).tolist(), reverse=True)
    predictor.close()


# --- single flight ------------------------------------------------------------------------------


def computations_of(engine: FakeEngine, text: str) -> int:
    return sum(batch.count(text) for batch in engine.batches)


@pytest.mark.parametrize("redis", [False, True], ids=["no-redis", "redis"])
def test_concurrent_identical_requests_share_one_computation(engine, redis_server, redis):
    """A text posted by many clients at once costs one engine slot; every client gets its scores."""
    predictor = make_predictor(engine, redis_server.url if redis else None, f"single-flight-{redis}")
    clients, trending = 32, f"a trending review everyone posts at once ({redis})"
    shared_before = texts_counted("shared")
    engine.hold()
    blocker = predictor.batcher.submit(["blocker"])  # the engine is busy: the trending text queues
    assert engine.running.wait(10)
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(predictor.predict, [trending, f"own text {n}"]) for n in range(clients)]
        wait_until(lambda: len(predictor.batcher._queue) == clients + 1, 10, "every request to queue its texts")
        engine.release()
        predictions = [future.result(timeout=30) for future in futures]
    blocker.result(timeout=10)

    assert computations_of(engine, trending) == 1
    expected = sorted(engine.expected([trending])[0].tolist(), reverse=True)
    for n, prediction in enumerate(predictions):
        assert [score for _, score in prediction.scores[0]] == expected
        assert dict(prediction.scores[1]) == dict(zip(engine.labels, engine.expected([f"own text {n}"])[0].tolist()))
    assert texts_counted("shared") - shared_before == clients - 1
    predictor.close()


def test_a_failed_shared_computation_fails_every_request_waiting_on_it_then_is_retried():
    engine = FakeEngine(fail_on="doomed text")
    predictor = make_predictor(engine, None, "single-flight-failure")
    engine.hold()
    blocker = predictor.batcher.submit(["blocker"])
    assert engine.running.wait(10)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(predictor.predict, ["doomed text", f"own text {n}"]) for n in range(8)]
        wait_until(lambda: len(predictor.batcher._queue) == 8 + 1, 10, "every request to queue its texts")
        engine.release()
        errors = [future.exception(timeout=30) for future in futures]
    blocker.result(timeout=10)
    assert all(isinstance(error, RuntimeError) and "doomed text" in str(error) for error in errors)
    assert computations_of(engine, "doomed text") == 1
    engine.fail_on = None
    assert predictor.predict(["doomed text"]).scores  # nothing left in flight: computed again
    assert computations_of(engine, "doomed text") == 2
    predictor.close()


# --- a real checkpoint through from_settings, against torch's softmax computed here ----------------


def torch_predictor(checkpoint, redis_url: str | None, prefix: str) -> Predictor:
    return Predictor.from_settings(Settings(
        model_dir=checkpoint, backend="torch", precision="fp32", redis_url=redis_url, cache_key_prefix=prefix))


@pytest.mark.slow  # loads torch and a checkpoint (the first also exports ONNX)
def test_two_checkpoints_with_the_same_labels_never_share_cache_entries(tiny_checkpoint, tmp_path, redis_server):
    """Same labels, same backend and precision, other weights: the second model must compute its
    own answers, not read the first one's from the shared Redis."""
    from model.builder.checkpoints import build_tiny_checkpoint

    other = build_tiny_checkpoint(tmp_path / "other-weights", seed=7)
    texts = ["the same words for both models", "and a second sentence"]
    first = torch_predictor(tiny_checkpoint, redis_server.url, "two-models:")
    second = torch_predictor(other, redis_server.url, "two-models:")
    try:
        assert first.labels == second.labels
        assert first.predict(texts).cache_status == "miss"
        answer = second.predict(texts)
        assert answer.cache_status == "miss"
        for ranked, expected in zip(answer.scores, softmax_by_label(other, texts), strict=True):
            assert as_dict(ranked) == pytest.approx(expected, abs=1e-5)
        assert second.predict(texts).cache_status == "hit"
    finally:
        first.close()
        second.close()


@pytest.mark.slow  # loads torch and a checkpoint (the first also exports ONNX)
def test_labels_follow_id2label_indices_not_the_order_config_json_lists_them(tmp_path):
    from model.builder.checkpoints import build_tiny_checkpoint

    checkpoint = build_tiny_checkpoint(tmp_path / "shuffled", labels=("joy", "anger", "neutral"), seed=3)
    config_path = checkpoint / "config.json"
    config = json.loads(config_path.read_text())
    config["id2label"] = {"2": "neutral", "0": "joy", "1": "anger"}  # as some exporters write it
    config_path.write_text(json.dumps(config))
    texts = ["a joyful day", "an angry rant about nothing at all"]
    predictor = torch_predictor(checkpoint, None, "unused:")
    try:
        assert predictor.labels == ("joy", "anger", "neutral")
        for ranked, expected in zip(predictor.predict(texts).scores, softmax_by_label(checkpoint, texts), strict=True):
            assert as_dict(ranked) == pytest.approx(expected, abs=1e-5)
    finally:
        predictor.close()


def test_a_text_posted_twice_in_one_request_is_computed_once(engine):
    predictor = make_predictor(engine, None, "twice")
    prediction = predictor.predict(["same words", "same words"])
    assert engine.batches == [["same words"]]
    expected = dict(zip(engine.labels, engine.expected(["same words"])[0].tolist()))
    assert [dict(ranked) for ranked in prediction.scores] == [expected, expected]
    predictor.close()


def test_another_worker_answers_from_redis_with_a_hit_and_computes_nothing(engine, redis_server):
    """A second predictor (another worker: its own memory, the same Redis) reads the first one's rows."""
    first = make_predictor(engine, redis_server.url, "second-worker")
    second = make_predictor(engine, redis_server.url, "second-worker")
    texts = ["stored by the first worker", "and this one too"]
    assert first.predict(texts).cache_status == "miss"
    engine.batches.clear()
    from_cache = texts_counted("cache")
    answer = second.predict(texts)
    assert answer.cache_status == "hit"
    assert engine.batches == []
    assert texts_counted("cache") - from_cache == 2
    for text, ranked in zip(texts, answer.scores):
        assert dict(ranked) == dict(zip(engine.labels, engine.expected([text])[0].tolist()))
    first.close()
    second.close()


def test_warmup_warns_once_when_redis_is_unreachable_and_stays_quiet_when_it_answers(engine, redis_factory, caplog):
    server = redis_factory()
    reachable = make_predictor(engine, server.url, "warmup-ok")
    with caplog.at_level("WARNING", logger="model.predictor"):
        reachable.warmup()
    assert [r for r in caplog.records if r.name == "model.predictor"] == []
    server.stop()
    unreachable = make_predictor(engine, server.url, "warmup-down")
    with caplog.at_level("WARNING", logger="model.predictor"):
        unreachable.warmup()
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "model.predictor"] == [
        ("WARNING", "redis is unreachable at start-up; serving uncached until it answers")]
    assert unreachable.cache_state() == "unavailable"
    reachable.close()
    unreachable.close()


class LookupsSeen(dict):
    """The predictor's in-flight map, recording which texts a request looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.looked_up: list[str] = []

    def __getitem__(self, text):
        self.looked_up.append(text)
        return super().__getitem__(text)


def test_a_request_sharing_a_failed_computation_gets_the_engine_error():
    """The only text of the second request is being computed for the first: it waits for that
    computation, and its failure is the second request's failure too, with the engine's message."""
    engine = FakeEngine(fail_on="doomed alone")
    predictor = make_predictor(engine, None, "single-flight-shared-failure")
    predictor._in_flight = LookupsSeen()
    engine.hold()
    blocker = predictor.batcher.submit(["blocker"])
    assert engine.running.wait(10)
    with ThreadPoolExecutor(2) as pool:
        owner = pool.submit(predictor.predict, ["doomed alone"])
        wait_until(lambda: len(predictor.batcher._queue) == 1, 10, "the first request to queue its text")
        sharer = pool.submit(predictor.predict, ["doomed alone"])
        wait_until(lambda: "doomed alone" in predictor._in_flight.looked_up, 10, "the second request to share it")
        engine.release()
        errors = [owner.exception(timeout=30), sharer.exception(timeout=30)]
    blocker.result(timeout=10)
    assert [type(error) for error in errors] == [RuntimeError, RuntimeError]
    assert all("engine failure on 'doomed alone'" in str(error) for error in errors)
    assert computations_of(engine, "doomed alone") == 1
    predictor.close()


def test_the_wait_for_a_request_thread_reaches_admission_and_none_is_counted_when_not_given(engine):
    """With a 0.5 s limit, a request that already waited 0.6 s for a thread is shed before its
    batch starts; the same text without a stated wait is served."""
    predictor = make_predictor(engine, None, "thread-wait", max_wait_seconds=0.5)
    with pytest.raises(Overloaded, match="queued for more than 0.5 s"):
        predictor.predict(["waited too long"], waited_seconds=0.6)
    served = predictor.predict(["waited too long"])
    assert as_dict(served.scores[0]) == as_dict(list(zip(engine.labels, engine.expected(["waited too long"])[0].tolist())))
    predictor.close()
