"""The Redis cache against a real redis-server: exact round trip, keys, TTL, and failure tolerance."""

from __future__ import annotations

import hashlib
import time

import numpy as np
from prometheus_client import REGISTRY

from model.cache import PredictionCache
from tests.conftest import wait_until


def errors(operation: str) -> float:
    return REGISTRY.get_sample_value("sentiment_cache_errors_total", {"operation": operation}) or 0.0


def make_cache(url, namespace="weights-a|onnx-fp32", **options) -> PredictionCache:
    # a timeout well above a Redis round trip on a busy machine: a slow answer is not an outage here
    options = {"ttl_seconds": 600, "key_prefix": "cache-test:", "timeout_seconds": 1.0, "retry_seconds": 0.5} | options
    return PredictionCache(url, namespace=namespace, label_count=2, **options)


def rows(texts):
    generator = np.random.default_rng(len(texts))
    values = generator.random((len(texts), 2), dtype=np.float32)
    return {text: row / row.sum() for text, row in zip(texts, values)}


def test_without_a_url_the_cache_is_disabled():
    cache = make_cache(None)
    assert cache.state() == "disabled"
    assert cache.get_many(["a"]) is None
    assert cache.set_many(rows(["a"])) is False


def test_a_hit_returns_exactly_the_stored_scores(redis_server):
    cache = make_cache(redis_server.url, namespace="exact")
    stored = rows(["first text", "second text", "é ü 漢字 🙂"])
    assert cache.set_many(stored)
    found = cache.get_many(["second text", "never stored", "é ü 漢字 🙂", "first text"])
    assert found[1] is None
    for text, row in zip(["second text", "é ü 漢字 🙂", "first text"], [found[0], found[2], found[3]]):
        assert row.dtype == np.float32
        assert row.tobytes() == np.asarray(stored[text], dtype=np.float32).tobytes()
    assert cache.state() == "ok"


def test_keys_carry_the_prefix_and_hash_the_namespace_and_text(redis_server):
    cache = make_cache(redis_server.url, namespace="fingerprint|onnx-int8", key_prefix="svc:")
    expected = "svc:" + hashlib.sha256(b"fingerprint|onnx-int8|hello").hexdigest()
    assert cache.key("hello") == expected
    cache.set_many(rows(["hello"]))
    assert redis_server.client().exists(expected) == 1


def test_entries_expire_after_the_ttl(redis_server):
    cache = make_cache(redis_server.url, namespace="ttl", ttl_seconds=321)
    cache.set_many(rows(["expiring"]))
    ttl = redis_server.client().ttl(cache.key("expiring"))
    assert 0 < ttl <= 321


def test_another_namespace_never_sees_the_entries(redis_server):
    first = make_cache(redis_server.url, namespace="weights-a|onnx-fp32")
    other_precision = make_cache(redis_server.url, namespace="weights-a|onnx-int8")
    other_weights = make_cache(redis_server.url, namespace="weights-b|onnx-fp32")
    first.set_many(rows(["shared text"]))
    assert first.get_many(["shared text"])[0] is not None
    assert other_precision.get_many(["shared text"]) == [None]
    assert other_weights.get_many(["shared text"]) == [None]


def test_reads_are_one_mget_for_all_texts(redis_server):
    cache = make_cache(redis_server.url, namespace="mget")
    client = redis_server.client()
    client.config_resetstat()
    cache.get_many([f"text {n}" for n in range(50)])
    stats = client.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1
    assert "cmdstat_get" not in stats


def test_a_value_of_the_wrong_size_is_a_miss(redis_server):
    cache = make_cache(redis_server.url, namespace="corrupt")
    redis_server.client().set(cache.key("odd"), b"not floats")
    assert cache.get_many(["odd"]) == [None]


def test_a_stopped_redis_is_bypassed_then_used_again(redis_factory):
    server = redis_factory()
    cache = make_cache(server.url, namespace="outage")
    cache.set_many(rows(["before"]))
    server.stop()
    before = errors("get")
    assert cache.get_many(["before"]) is None
    assert cache.state() == "unavailable"
    assert errors("get") == before + 1
    assert cache.get_many(["before"]) is None  # within the retry window: Redis is not even called
    assert cache.set_many(rows(["during"])) is False
    assert errors("get") == before + 1
    server.start()
    wait_until(lambda: cache.get_many(["again"]) == [None], 10, "the cache to use Redis again")
    assert cache.state() == "ok"
    assert cache.set_many(rows(["again"]))
    assert cache.get_many(["again"])[0] is not None


def test_a_frozen_redis_times_out_and_is_bypassed(redis_factory):
    server = redis_factory()
    cache = make_cache(server.url, namespace="frozen")
    cache.set_many(rows(["kept"]))
    server.freeze()
    try:
        before = errors("get")
        assert cache.get_many(["kept"]) is None
        assert errors("get") == before + 1
        assert cache.state() == "unavailable"
    finally:
        server.thaw()
    found = wait_until(lambda: cache.get_many(["kept"]), 10, "the cache to use Redis again")
    assert found[0] is not None


def test_ping_reports_the_state(redis_factory):
    server = redis_factory()
    cache = make_cache(server.url, namespace="ping")
    assert cache.ping() == "ok"
    server.stop()
    assert cache.ping() == "unavailable"


# --- rows kept in memory in front of Redis -------------------------------------------------------


def test_rows_redis_accepted_or_returned_are_then_served_from_memory(redis_server):
    writer = make_cache(redis_server.url, namespace="local-rows")
    reader = make_cache(redis_server.url, namespace="local-rows")
    stored = rows(["written here", "read from redis"])
    assert writer.set_many({"written here": stored["written here"]})
    assert writer.set_many({"read from redis": stored["read from redis"]}) and reader.get_many(["read from redis"])
    redis_server.client().delete(writer.key("written here"), writer.key("read from redis"))  # Redis no longer has them
    for cache, text in ((writer, "written here"), (reader, "read from redis")):
        (row,) = cache.get_local([text]).values()
        assert row.tobytes() == np.asarray(stored[text], dtype=np.float32).tobytes()
    assert reader.get_local(["written here"]) == {}, "only this worker's own reads and writes"


def test_rows_in_memory_live_no_longer_than_the_redis_entry(redis_server):
    cache = make_cache(redis_server.url, namespace="local-lifetime", ttl_seconds=1, local_seconds=60)
    cache.set_many(rows(["short-lived"]))
    assert cache.get_local(["short-lived"])
    wait_until(lambda: redis_server.client().exists(cache.key("short-lived")) == 0, 5, "Redis to expire the entry")
    assert cache.get_local(["short-lived"]) == {}


def test_memory_holds_at_most_its_capacity_and_the_oldest_rows_leave_first(redis_server):
    cache = make_cache(redis_server.url, namespace="local-capacity", local_texts=3)
    for text in ("one", "two", "three", "four"):
        cache.set_many(rows([text]))
    assert set(cache.get_local(["one", "two", "three", "four"])) == {"two", "three", "four"}


def test_without_redis_nothing_is_kept_in_memory(redis_factory):
    assert make_cache(None).get_local(["anything"]) == {}
    server = redis_factory()
    cache = make_cache(server.url, namespace="local-outage")
    server.stop()
    assert cache.set_many(rows(["not accepted"])) is False
    assert cache.get_local(["not accepted"]) == {}, "a row Redis did not accept is not served later"


def test_another_namespace_never_sees_the_rows_in_memory(redis_server):
    first = make_cache(redis_server.url, namespace="weights-a|onnx-fp32|local")
    other_precision = make_cache(redis_server.url, namespace="weights-a|onnx-int8|local")
    first.set_many(rows(["seen by one model"]))
    assert first.get_local(["seen by one model"])
    assert other_precision.get_local(["seen by one model"]) == {}
    assert other_precision.get_many(["seen by one model"]) == [None]


def test_a_row_of_a_text_up_to_1000_characters_is_kept_in_memory_and_a_longer_one_is_not(redis_server):
    cache = make_cache(redis_server.url, namespace="local-length")
    longest_kept, too_long = "k" * 1000, "k" * 1001
    assert cache.set_many(rows([longest_kept, too_long]))
    assert set(cache.get_local([longest_kept, too_long])) == {longest_kept}
    assert cache.get_many([too_long])[0] is not None, "the longer text is still in Redis"


def test_a_row_stored_again_leaves_memory_last(redis_server):
    cache = make_cache(redis_server.url, namespace="local-refresh", local_texts=3)
    for text in ("one", "two", "three", "one", "four"):
        cache.set_many(rows([text]))
    assert set(cache.get_local(["one", "two", "three", "four"])) == {"one", "three", "four"}


def test_rows_in_memory_expire_after_their_own_lifetime_while_redis_keeps_them(redis_server):
    cache = make_cache(redis_server.url, namespace="local-seconds", ttl_seconds=600, local_seconds=0.2)
    cache.set_many(rows(["brief in memory"]))
    assert set(cache.get_local(["brief in memory"])) == {"brief in memory"}
    wait_until(lambda: cache.get_local(["brief in memory"]) == {}, 5, "the row in memory to expire")
    assert cache.get_many(["brief in memory"])[0] is not None


def test_nothing_to_read_or_write_makes_no_redis_call_and_no_error(redis_server):
    cache = make_cache(redis_server.url, namespace="empty-calls")
    client = redis_server.client()
    client.config_resetstat()
    before = errors("get"), errors("set")
    assert cache.get_many([]) is None
    assert cache.set_many({}) is False
    assert (errors("get"), errors("set")) == before
    assert cache.state() == "ok"
    assert set(client.info("commandstats")) <= {"cmdstat_config", "cmdstat_info"}


def test_writes_are_one_pipeline_without_a_transaction(redis_server):
    cache = make_cache(redis_server.url, namespace="pipeline")
    client = redis_server.client()
    client.config_resetstat()
    assert cache.set_many(rows([f"text {n}" for n in range(5)]))
    stats = client.info("commandstats")
    assert stats["cmdstat_set"]["calls"] == 5
    assert "cmdstat_multi" not in stats and "cmdstat_exec" not in stats


def test_an_outage_is_logged_once_with_the_operation_and_the_recovery_once(redis_factory, caplog):
    server = redis_factory()
    cache = make_cache(server.url, namespace="outage-log", retry_seconds=0.2)
    assert cache.set_many(rows(["before"]))
    server.stop()
    with caplog.at_level("INFO", logger="model.cache"):
        assert cache.get_many(["before"]) is None
        time.sleep(0.3)  # past the retry window: the next call tries Redis again
        failed_sets = errors("set")
        assert cache.set_many(rows(["during"])) is False  # fails again while unavailable: counted, not logged
        assert errors("set") == failed_sets + 1
        server.start()
        wait_until(lambda: cache.get_many(["again"]) == [None], 10, "the cache to use Redis again")
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "model.cache"]
    assert len(messages) == 2, messages
    assert messages[0][0] == "WARNING"
    assert messages[0][1].startswith("redis get failed (ConnectionError: ")
    assert messages[0][1].endswith("); serving uncached, retrying in 0.2 s")
    assert messages[1] == ("INFO", "redis is reachable again; cache back in use")


def test_a_failed_ping_is_logged_as_a_ping(redis_factory, caplog):
    server = redis_factory()
    cache = make_cache(server.url, namespace="ping-log")
    server.stop()
    with caplog.at_level("WARNING", logger="model.cache"):
        assert cache.ping() == "unavailable"
    (message,) = [r.getMessage() for r in caplog.records if r.name == "model.cache"]
    assert message.startswith("redis ping failed (ConnectionError: ")
    assert "Connection refused" in message or "connecting to" in message


def test_a_failed_call_is_tried_once_on_one_connection():
    """The breaker decides when Redis is tried again, not the client: one connection per failed call."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []

    def hang_up_on_everyone():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)
            connection.close()

    threading.Thread(target=hang_up_on_everyone, daemon=True).start()
    try:
        cache = make_cache(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", namespace="one-try")
        before = errors("get")
        assert cache.get_many(["anything"]) is None
        assert errors("get") == before + 1
        time.sleep(0.2)  # a retry would connect again meanwhile
        assert len(accepted) == 1
    finally:
        listener.close()


def test_close_lets_go_of_the_redis_connection(redis_server):
    client = redis_server.client()

    def connected() -> int:
        return client.info("clients")["connected_clients"]

    cache = make_cache(redis_server.url, namespace="close")
    before = connected()
    cache.set_many(rows(["opens a connection"]))
    assert connected() == before + 1
    cache.close()
    wait_until(lambda: connected() == before, 5, "the connection to close")


def test_a_cache_built_without_options_has_the_services_documented_defaults(redis_server):
    """The defaults README's settings table gives: prefix `sentiment:`, a day's TTL, 50 ms socket
    timeout, 2 s retry window, 4096 rows kept in memory for 60 s."""
    cache = PredictionCache(redis_server.url, namespace="defaults", label_count=2)
    assert cache.set_many(rows(["with the defaults"]))
    key = "sentiment:" + hashlib.sha256(b"defaults|with the defaults").hexdigest()
    client = redis_server.client()
    assert 86400 - 5 <= client.ttl(key) <= 86400
    connection = cache._client.connection_pool.connection_kwargs
    assert (connection["socket_timeout"], connection["socket_connect_timeout"]) == (0.05, 0.05)
    assert cache.retry_seconds == 2.0
    assert (cache._local.capacity, cache._local.lifetime_seconds) == (4096, 60.0)
    client.delete(key)
    cache.close()


def test_a_new_cache_is_ok_and_its_first_answer_logs_nothing(redis_server, caplog):
    cache = make_cache(redis_server.url, namespace="fresh")
    assert cache.state() == "ok"
    with caplog.at_level("INFO", logger="model.cache"):
        assert cache.set_many(rows(["first call"]))
    assert [r.getMessage() for r in caplog.records if r.name == "model.cache"] == []


def test_a_read_after_an_idle_second_is_one_mget_without_a_health_check_ping(redis_server):
    """Every read costs one round trip, however long the connection sat idle."""
    cache = make_cache(redis_server.url, namespace="idle")
    cache.get_many(["opens the connection"])
    client = redis_server.client()
    client.config_resetstat()
    time.sleep(1.2)
    cache.get_many(["after an idle second"])
    stats = client.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1
    assert "cmdstat_ping" not in stats


def test_rows_given_in_float64_are_stored_and_read_back_as_float32(redis_server):
    cache = make_cache(redis_server.url, namespace="float64-in")
    given = np.array([0.1, 0.9], dtype=np.float64)
    assert cache.set_many({"computed in float64": given})
    assert len(redis_server.client().get(cache.key("computed in float64"))) == 2 * 4
    other_worker = make_cache(redis_server.url, namespace="float64-in")
    (row,) = other_worker.get_many(["computed in float64"])
    assert row.dtype == np.float32
    assert row.tolist() == given.astype(np.float32).tolist()


def test_a_memory_of_one_row_keeps_the_latest(redis_server):
    cache = make_cache(redis_server.url, namespace="local-one", local_texts=1)
    cache.set_many(rows(["older"]))
    cache.set_many(rows(["latest"]))
    assert set(cache.get_local(["older", "latest"])) == {"latest"}


def test_a_text_with_a_lone_surrogate_is_cached_like_any_other(redis_server):
    """JSON lets a client send "\\ud800"; Python decodes it to a lone surrogate, which UTF-8 cannot encode strictly."""
    cache = make_cache(redis_server.url, namespace="surrogate")
    text = "half an emoji \ud83d"
    stored = rows([text])
    assert cache.set_many(stored)
    expected_key = "cache-test:" + hashlib.sha256("surrogate|half an emoji ".encode() + b"\xed\xa0\xbd").hexdigest()
    assert cache.key(text) == expected_key
    (row,) = make_cache(redis_server.url, namespace="surrogate").get_many([text])
    assert row.tobytes() == np.asarray(stored[text], dtype=np.float32).tobytes()
