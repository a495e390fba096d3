"""Settings that contradict each other stop start-up with one line; the deployed values obey the
same rules, plus those that need the Knative manifest (timeoutSeconds, containerConcurrency)."""

from __future__ import annotations

import copy

import pytest

from model.settings import ConfigurationError, Settings, load_settings
from tests.test_knative import ENVIRONMENTS, KNATIVE, KUBECTL, config, ksvc, render


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Only what a test sets: not the developer's shell."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def refusal(monkeypatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    message = str(refused.value)
    assert "\n" not in message and "Value error" not in message
    return message


def test_a_request_batch_larger_than_the_queue_is_refused(monkeypatch):
    message = refusal(monkeypatch, MAX_BATCH_TEXTS="4096")
    assert message == (
        "invalid configuration: MAX_BATCH_TEXTS=4096 is above QUEUE_MAX_TEXTS=1024: a request of 4096 texts could "
        "never be queued; raise QUEUE_MAX_TEXTS or lower MAX_BATCH_TEXTS"
    )
    monkeypatch.setenv("QUEUE_MAX_TEXTS", "4096")
    assert load_settings().max_batch_texts == 4096


def test_a_queue_wait_not_below_the_graceful_timeout_is_refused(monkeypatch):
    message = refusal(monkeypatch, QUEUE_MAX_WAIT_SECONDS="25")
    assert message.startswith("invalid configuration: QUEUE_MAX_WAIT_SECONDS=25 is not below GRACEFUL_TIMEOUT_SECONDS=25")
    monkeypatch.setenv("GRACEFUL_TIMEOUT_SECONDS", "26")
    assert load_settings().queue_max_wait_seconds == 25


def test_a_rule_across_fields_is_reported_by_its_own_message(monkeypatch):
    assert refusal(monkeypatch, BACKEND="torch", PRECISION="int8") == (
        "invalid configuration: PRECISION=int8 does not go with BACKEND=torch; use one of ('fp32', 'bf16')"
    )


def test_a_bad_value_names_its_variable_and_stops_with_status_2(monkeypatch):
    monkeypatch.setenv("MAX_BATCH_TEXTS", "many")
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert refused.value.code == 2
    assert str(refused.value) == (
        "invalid configuration: MAX_BATCH_TEXTS: Input should be a valid integer, unable to parse string as an integer")


def test_the_defaults_obey_every_rule():
    load_settings()


# --- the deployed values ---------------------------------------------------------------------------


def deployed_settings(service: dict, configmap: dict[str, str], monkeypatch) -> Settings:
    """The Settings a revision's container starts with: the ConfigMap, then its literal env values."""
    (container,) = service["spec"]["template"]["spec"]["containers"]
    env = {**configmap, **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e}}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def deployment_problems(service: dict, settings: Settings) -> list[str]:
    """The rules between the service's settings and what Knative does with the revision."""
    spec = service["spec"]["template"]["spec"]
    problems = []
    if not settings.queue_max_wait_seconds < settings.graceful_timeout_seconds < spec["timeoutSeconds"]:
        problems.append(
            f"timeoutSeconds={spec['timeoutSeconds']} (also the termination grace period) must exceed "
            f"GRACEFUL_TIMEOUT_SECONDS={settings.graceful_timeout_seconds}, which must exceed QUEUE_MAX_WAIT_SECONDS="
            f"{settings.queue_max_wait_seconds:g}: a queued request gets its answer or its 503 before the proxy's 504"
        )
    if spec["containerConcurrency"] != settings.web_concurrency * settings.gunicorn_threads:
        problems.append(
            f"containerConcurrency={spec['containerConcurrency']} is not WEB_CONCURRENCY x GUNICORN_THREADS="
            f"{settings.web_concurrency * settings.gunicorn_threads}: the hard limit must be what Gunicorn runs at once"
        )
    return problems


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (it renders the kustomize overlays)")
    return {env: render(KNATIVE / "overlays" / env) for env in ENVIRONMENTS}


def test_every_environment_starts_with_settings_that_obey_the_services_rules(manifests, monkeypatch):
    for env, docs in manifests.items():
        try:
            settings = deployed_settings(ksvc(docs), config(docs), monkeypatch)
        except ConfigurationError as error:
            pytest.fail(f"{env}: the service would refuse to start: {error}")
        assert deployment_problems(ksvc(docs), settings) == [], env


def test_the_deployment_rules_catch_a_timeout_or_concurrency_out_of_line(manifests, monkeypatch):
    docs = manifests["prod"]
    settings = deployed_settings(ksvc(docs), config(docs), monkeypatch)
    broken = copy.deepcopy(ksvc(docs))
    broken["spec"]["template"]["spec"].update(timeoutSeconds=settings.graceful_timeout_seconds, containerConcurrency=100)
    problems = deployment_problems(broken, settings)
    assert len(problems) == 2
    assert problems[0].startswith(f"timeoutSeconds={settings.graceful_timeout_seconds} ")
    assert problems[1].startswith("containerConcurrency=100 ")
