"""Predictor.from_settings wires every batching and cache setting to the engine it loads.

The engine is the fake one (no torch, so the test is fast enough for mutation runs) standing in
for load_engine's answer; what is checked is what the settings promise: the limits the batcher
applies, the Redis keys, their lifetime and namespace (the model's fingerprint and precision), and
the rows kept in memory. The slow tests of test_predictor.py run the same code on a real checkpoint.
"""

from __future__ import annotations

import hashlib

import pytest

import model.engines
from model.artifacts import ResolvedModel
from model.predictor import Predictor
from model.settings import Settings
from tests.fakes import FakeEngine

FINGERPRINT = "ab" * 32  # the sha256 of the weights, as ResolvedModel carries it


class LoadedEngine(FakeEngine):
    """The fake engine plus what load_engine's engines carry: the model they serve."""

    description = "onnx-int8"

    def __init__(self) -> None:
        super().__init__(labels=("joy", "anger", "neutral"))
        self.model = ResolvedModel(
            model_id="acme/sentiment-tiny", revision=None, fingerprint_sha256=FINGERPRINT,
            labels=self.labels, max_length=512, pad_token="[PAD]", checkpoint_dir=None, artifact_dir=None)


@pytest.fixture
def loaded(monkeypatch):
    """from_settings with load_engine answering the fake engine; the settings it was given are kept."""
    engine = LoadedEngine()
    given = []

    def load_engine(settings):
        given.append(settings)
        return engine

    monkeypatch.setattr(model.engines, "load_engine", load_engine)
    predictors = []

    def build(**settings) -> Predictor:
        chosen = Settings(**settings)
        predictor = Predictor.from_settings(chosen)
        predictors.append(predictor)
        assert given[-1] is chosen
        return predictor

    yield build, engine
    engine.release()
    for predictor in predictors:
        predictor.close()


def test_the_model_string_names_the_model_and_its_short_fingerprint(loaded):
    build, engine = loaded
    predictor = build()
    assert predictor.model_string == "acme/sentiment-tiny@" + FINGERPRINT[:12]
    assert predictor.engine is engine
    assert predictor.labels == ("joy", "anger", "neutral")


def test_the_batcher_takes_its_limits_from_the_settings(loaded):
    build, _ = loaded
    batcher = build(batch_max_texts=7, batch_max_tokens=300, queue_max_texts=211, batch_max_padding=0.4,
                    queue_max_wait_seconds=3.5).batcher
    assert (batcher.max_batch_texts, batcher.max_batch_tokens, batcher.max_queue_texts) == (7, 300, 211)
    assert (batcher.max_padding, batcher.max_wait_seconds, batcher.batching) == (0.4, 3.5, True)


def test_batching_off_in_the_settings_runs_each_request_alone(loaded):
    build, engine = loaded
    predictor = build(batching=False, batch_max_texts=2)
    assert predictor.batcher.batching is False
    predictor.predict(["one", "two", "three"])
    assert engine.batches == [["one", "two"], ["three"]]  # chunks of BATCH_MAX_TEXTS, no engine thread


def test_redis_keys_carry_the_prefix_the_fingerprint_and_the_engine_precision(loaded, redis_server):
    build, _ = loaded
    predictor = build(redis_url=redis_server.url, cache_key_prefix="wiring:", cache_ttl_seconds=777,
                      cache_timeout_seconds=1.0)
    assert predictor.predict(["a text to cache"]).cache_status == "miss"
    key = "wiring:" + hashlib.sha256(f"{FINGERPRINT}|onnx-int8|a text to cache".encode()).hexdigest()
    client = redis_server.client()
    assert client.exists(key) == 1
    assert 0 < client.ttl(key) <= 777
    assert len(client.get(key)) == 3 * 4, "one float32 per label of the engine"


def test_a_second_worker_built_from_the_same_settings_reads_the_first_ones_rows(loaded, redis_server):
    build, engine = loaded
    settings = {"redis_url": redis_server.url, "cache_key_prefix": "wiring-shared:", "cache_timeout_seconds": 1.0}
    assert build(**settings).predict(["shared between workers"]).cache_status == "miss"
    engine.batches.clear()
    answer = build(**settings).predict(["shared between workers"])
    assert answer.cache_status == "hit"
    assert engine.batches == []
    assert dict(answer.scores[0]) == dict(zip(engine.labels, engine.expected(["shared between workers"])[0].tolist()))


def test_the_cache_takes_its_timeouts_and_memory_rows_from_the_settings(loaded, redis_server):
    build, _ = loaded
    predictor = build(redis_url=redis_server.url, cache_timeout_seconds=0.3, cache_retry_seconds=4.5,
                      cache_local_texts=5, cache_local_seconds=12.0, cache_ttl_seconds=30)
    cache = predictor.cache
    connection = cache._client.connection_pool.connection_kwargs
    assert (connection["socket_timeout"], connection["socket_connect_timeout"]) == (0.3, 0.3)
    assert cache.retry_seconds == 4.5
    assert (cache._local.capacity, cache._local.lifetime_seconds) == (5, 12.0)
    assert cache.state() == "ok"


def test_without_a_redis_url_the_predictor_serves_uncached(loaded):
    build, _ = loaded
    predictor = build()
    assert predictor.cache_state() == "disabled"
    assert predictor.predict(["x"]).cache_status == "bypass"
