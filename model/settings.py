"""Every knob of the service: one Settings class, read from the environment (12-factor).

Each field's env var is its name in upper case (``max_batch_texts`` -> ``MAX_BATCH_TEXTS``).
The README's configuration table lists the same fields; `python -m model settings` prints them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_ID = "distilbert-base-uncased-finetuned-sst-2-english"
PRECISIONS_BY_BACKEND = {"onnx": ("fp32", "int8"), "torch": ("fp32", "bf16")}
AUTO_PRECISION = "auto"  # onnx: the precision the artifact's manifest recommends; torch: fp32


class ConfigurationError(SystemExit):
    """Start-up stops with one line that says what to fix (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, case_sensitive=False)

    # --- HTTP server -------------------------------------------------------------------------
    port: int = Field(8080, ge=1, le=65535, description="TCP port bound on 0.0.0.0 (Knative sets PORT).")
    web_concurrency: int = Field(1, ge=1, le=64, description="Gunicorn worker processes; each loads the model.")
    gunicorn_threads: int = Field(32, ge=1, le=1024, description="Request threads per worker; they wait on the batcher.")
    request_timeout_seconds: int = Field(60, ge=1, description="Gunicorn worker timeout: a worker silent this long is restarted.")
    graceful_timeout_seconds: int = Field(25, ge=1, description="On SIGTERM, time given to in-flight requests before exit.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level of the service.")
    keepalive_seconds: int = Field(
        95, ge=0, le=3600,
        description="Idle seconds a client connection is kept open; above the 90 s idle timeout of Go proxies "
        "(Knative queue-proxy, activator) so the proxy, not Gunicorn, closes idle connections.",
    )
    access_log: bool = Field(False, description="One log line per request on stdout; off by default (throughput).")
    k_revision: str | None = Field(None, description="Knative revision name (Knative sets K_REVISION); sent as X-Revision.")

    # --- API limits (shared/API.md) ----------------------------------------------------------
    max_batch_texts: int = Field(128, ge=1, le=4096, description="Most texts in one request.")
    max_text_chars: int = Field(20000, ge=1, description="Most characters in one text.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body; larger gets 413.")
    retry_after_seconds: int = Field(1, ge=1, description="Retry-After sent with every 503.")

    # --- Model and engine --------------------------------------------------------------------
    model_id: str = Field(DEFAULT_MODEL_ID, description="Hugging Face model id, used when MODEL_DIR is unset.")
    model_revision: str | None = Field(None, description="Hub revision (commit) of MODEL_ID; unset = the hub's default.")
    model_dir: Path | None = Field(None, description="Local checkpoint or built artifact; wins over MODEL_ID.")
    artifact_cache_dir: Path = Field(
        Path("~/.cache/sentiment-service").expanduser(),
        description="Where a plain checkpoint is built into an ONNX artifact on first start.",
    )
    backend: Literal["onnx", "torch"] = Field("onnx", description="Inference engine: onnx (serving) or torch (reference).")
    precision: Literal["auto", "fp32", "int8", "bf16"] = Field(
        AUTO_PRECISION,
        description="auto = what the artifact recommends (int8 when it passed the build's int8 quality gate, "
        "see docs/engine.md; else fp32); onnx: int8 or fp32; torch: fp32 (auto) or bf16.",
    )
    max_sequence_tokens: int = Field(512, ge=8, le=8192, description="Longer texts are truncated to this many tokens.")
    intra_op_threads: int = Field(0, ge=0, le=256, description="Engine threads per worker; 0 = CPUs / WEB_CONCURRENCY.")

    # --- Dynamic batching --------------------------------------------------------------------
    batching: bool = Field(True, description="Cross-request batching; off runs each request alone.")
    batch_max_texts: int = Field(64, ge=1, le=4096, description="Most texts in one engine batch.")
    batch_max_tokens: int = Field(8192, ge=64, description="Most padded tokens (texts x longest) in one engine batch.")
    batch_max_padding: float = Field(
        0.25, ge=0, le=10,
        description="Until the engine's measured cost model is fitted (its first few batches): padding a batch may "
        "add, as a share of its real tokens; after that, batches are chosen by measured tokens per second.",
    )
    queue_max_texts: int = Field(
        1024, ge=1, description="Texts waiting for the engine; past this, 503 + Retry-After. At least MAX_BATCH_TEXTS."
    )
    queue_max_wait_seconds: float = Field(
        10.0, gt=0, le=600,
        description="A request is refused at once (503 + Retry-After) when its wait for a request thread plus the "
        "texts queued ahead of it at the engine's measured pace exceed 80% of this (never with nothing queued ahead; "
        "the rest absorbs the pace's variation), and one whose texts waited this long (for a thread, then queued) and "
        "none reached the engine gets 503; the time its own batches take does not count. Below GRACEFUL_TIMEOUT_SECONDS.",
    )

    # --- Redis cache -------------------------------------------------------------------------
    redis_url: str | None = Field(None, description="redis:// or rediss:// URL; unset = no cache.")
    cache_ttl_seconds: int = Field(86400, ge=1, description="Lifetime of a cached prediction.")
    cache_key_prefix: str = Field("sentiment:", description="Prefix of every cache key, to share a Redis.")
    cache_timeout_seconds: float = Field(0.05, gt=0, le=10, description="Socket timeout of each Redis call.")
    cache_retry_seconds: float = Field(2.0, ge=0, le=300, description="After a Redis failure, bypass it this long before retrying.")
    cache_local_texts: int = Field(
        4096, ge=0, le=1_000_000,
        description="Rows each worker keeps in memory in front of Redis (texts up to 1000 characters); 0 = none.",
    )
    cache_local_seconds: float = Field(
        60.0, gt=0, le=86400, description="Lifetime of a row kept in memory (at most CACHE_TTL_SECONDS)."
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> "Settings":
        allowed = PRECISIONS_BY_BACKEND[self.backend]
        if self.precision not in (AUTO_PRECISION, *allowed):
            raise ValueError(f"PRECISION={self.precision} does not go with BACKEND={self.backend}; use one of {allowed}")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return self

    @model_validator(mode="after")
    def _check_limits_agree(self) -> "Settings":
        """Limits that contradict each other would refuse a valid request forever or cut a drain short.

        What depends on the deployment (Knative's timeoutSeconds and containerConcurrency) is
        checked against these rules by the manifest tests; the app cannot read the manifest.
        """
        if self.max_batch_texts > self.queue_max_texts:
            raise ValueError(
                f"MAX_BATCH_TEXTS={self.max_batch_texts} is above QUEUE_MAX_TEXTS={self.queue_max_texts}: a request of "
                f"{self.max_batch_texts} texts could never be queued; raise QUEUE_MAX_TEXTS or lower MAX_BATCH_TEXTS"
            )
        if self.queue_max_wait_seconds >= self.graceful_timeout_seconds:
            raise ValueError(
                f"QUEUE_MAX_WAIT_SECONDS={self.queue_max_wait_seconds:g} is not below GRACEFUL_TIMEOUT_SECONDS="
                f"{self.graceful_timeout_seconds}: on SIGTERM a queued request would be cut off instead of answered "
                "or shed with 503; lower QUEUE_MAX_WAIT_SECONDS or raise GRACEFUL_TIMEOUT_SECONDS"
            )
        return self


def load_settings() -> Settings:
    """Read the environment; a bad value stops start-up with one line naming the variable."""
    try:
        return Settings()
    except ValidationError as error:
        first = error.errors()[0]
        if not first["loc"]:  # a rule across fields: its message names the variables
            raise ConfigurationError(f"invalid configuration: {first.get('ctx', {}).get('error', first['msg'])}") from None
        name = "_".join(str(part) for part in first["loc"]).upper()
        raise ConfigurationError(f"invalid configuration: {name}: {first['msg']}") from None


def settings_table() -> str:
    """The configuration table of the README, as an operator writes the values in the environment."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `{name.upper()}` | {env_default(name)} | {field.description} |")
    return "\n".join(rows)


def env_default(name: str) -> str:
    """A field's default as the environment spells it: `false`, `~/.cache/...`, or unset."""
    default = Settings.model_fields[name].default
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, Path):
        return f"`{str(default).replace(str(Path.home()), '~', 1)}`"
    return f"`{default}`"
