"""Gunicorn configuration: `gunicorn -c gunicorn.conf.py app:app`.

Every value comes from model/settings.py (environment variables). Threaded workers (gthread):
request threads wait on the batcher while one engine thread per worker computes. The model is
loaded in each worker after fork, never in the master (ONNX Runtime's thread pools do not
survive fork), and warmed up before the worker accepts its first connection.

Console: one line per start-up phase with its time (imports, model load, warm-up, ready);
Gunicorn's own start and stop lines only at LOG_LEVEL=debug. A start that fails (a bad setting,
the port taken, a model that cannot be loaded) prints one line on stderr saying what to fix and
exits with status 1; a worker that cannot load the model stops the whole service that way
instead of being restarted forever.
"""

import errno
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def _process_start_time() -> float:
    """Wall-clock time this (master) process started, from /proc; now, where /proc is missing."""
    try:
        with open("/proc/self/stat") as handle:
            start_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - max(age, 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


PROCESS_START = _process_start_time()

from model.settings import ConfigurationError, load_settings  # noqa: E402  (after the start time)


def _fail_start(reason: str):
    """The one line of a failed start, then exit status 1 (no traceback, no Gunicorn lines)."""
    print(f"sentiment: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _check_port_free(port: int) -> None:
    """Gunicorn would retry a taken port five times, one error line each: say it once, up front."""
    if "GUNICORN_FD" in os.environ or "LISTEN_FDS" in os.environ:
        return  # the sockets are inherited (re-exec or socket activation): the port is ours
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Gunicorn binds
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as error:
            hint = "stop what listens there or set PORT" if error.errno == errno.EADDRINUSE else "set PORT"
            raise ConfigurationError(f"cannot listen on port {port}: {error.strerror}; {hint}") from None



def build_plain_checkpoint(settings) -> None:
    """(master, before any worker) A plain checkpoint served by ONNX: build its artifact on first start.

    The server only loads built artifacts. Here, at the entry point, `python -m model build`
    builds a plain checkpoint (MODEL_DIR, or MODEL_ID from the hub) once into
    ARTIFACT_CACHE_DIR/<fingerprint>-b<generation>/, in a child process so that torch never enters the
    server's processes. Without the build extra, start-up stops with the command to run.
    """
    from model.artifacts import MANIFEST_NAME, cached_artifact_dir, locate_model

    if settings.backend != "onnx":
        return
    try:
        source = locate_model(settings)
    except ConfigurationError:
        return  # a model that cannot be found is reported by the worker, like any load failure
    if source.artifact_dir is not None:
        return
    target = cached_artifact_dir(source.fingerprint_sha256, settings.artifact_cache_dir)
    if (target / MANIFEST_NAME).is_file():
        return
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("model.builder") is None:
        raise ConfigurationError(
            f"{source.checkpoint_dir} is a plain checkpoint and this installation cannot build it (no build extra): "
            f"run `python -m model build --model-dir {source.checkpoint_dir} --out DIR` and set MODEL_DIR=DIR"
        )
    named = ["--model-dir", str(source.checkpoint_dir)] if settings.model_dir else ["--model-id", settings.model_id]
    if settings.model_revision and not settings.model_dir:
        named += ["--revision", settings.model_revision]
    command = [sys.executable, "-m", "model", "build", *named, "--artifact-cache-dir", str(settings.artifact_cache_dir)]
    print(f"sentiment: building {source.checkpoint_dir} into an ONNX artifact in {target} (first start only)",
          file=sys.stderr, flush=True)
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigurationError(f"cannot build {source.checkpoint_dir} into an ONNX artifact: {reason}")


try:
    settings = load_settings()
    _check_port_free(settings.port)
    build_plain_checkpoint(settings)
except ConfigurationError as error:
    _fail_start(str(error))

# prometheus_client picks single- or multi-process mode when it is first imported (in the
# workers, by the app): the directory must be set, and fresh, before that.
_metrics_dir = None
if settings.web_concurrency > 1:
    _metrics_dir = tempfile.mkdtemp(prefix="sentiment-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

# Progress (INFO and below) on stdout, warnings and errors on stderr: a failed start leaves
# exactly its one line on stderr, and log collectors read the stream as the severity.
_progress = logging.StreamHandler(sys.stdout)
_progress.addFilter(lambda record: record.levelno < logging.WARNING)
_problems = logging.StreamHandler(sys.stderr)
_problems.setLevel(logging.WARNING)
logging.basicConfig(
    level=settings.log_level.upper(),
    handlers=[_progress, _problems],
    format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
)

# The first worker that cannot start writes why into this file and exits; the master prints it
# as the one line of the failed start (on_exit). Gunicorn's own account of the failure (exit
# code, shutting down, reason) would bury that line: it is filtered out.
_start_dir = tempfile.mkdtemp(prefix="sentiment-start-")
_FAILURE_FILE = os.path.join(_start_dir, "failure")


def _worker_failure() -> str | None:
    try:
        with open(_FAILURE_FILE, encoding="utf-8", errors="replace") as reported:
            return reported.readline().strip() or None
    except FileNotFoundError:
        return None


class _QuietAfterWorkerFailure(logging.Filter):
    def filter(self, record):
        return _worker_failure() is None


logging.getLogger("gunicorn.error").addFilter(_QuietAfterWorkerFailure())

# --- server ------------------------------------------------------------------------------------

wsgi_app = "app:app"
bind = f"0.0.0.0:{settings.port}"
worker_class = "model.worker.ThreadWaitWorker"  # gthread, telling admission how long a request waited for a thread
workers = settings.web_concurrency
threads = settings.gunicorn_threads
timeout = settings.request_timeout_seconds
graceful_timeout = settings.graceful_timeout_seconds
keepalive = settings.keepalive_seconds
preload_app = False
control_socket_disable = True  # no runtime control socket (gunicorn >= 25): nothing to manage it in a pod
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat file off the container disk
proc_name = "sentiment"
# Gunicorn's info lines (starting, listening, booting worker, ...) would crowd out the phase
# lines: they show at LOG_LEVEL=debug; its warnings and errors always show.
loglevel = "warning" if settings.log_level == "info" else settings.log_level
errorlog = "-"
accesslog = "-" if settings.access_log else None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms id=%({x-request-id}o)s'

WORKER_BOOT_ERROR = 3  # the arbiter halts the whole server on this exit status
_forks = 0


# --- hooks ------------------------------------------------------------------------------------


def pre_fork(server, worker):
    """(master) Workers of the first boot measure `ready` from the master's start (the cold start)."""
    global _forks
    _forks += 1
    worker.sentiment_cold_start = _forks <= server.num_workers


def post_fork(server, worker):
    worker.sentiment_forked_at = time.perf_counter()
    worker.sentiment_forked_wall = time.time()


def post_worker_init(worker):
    """(worker) The app is imported; load the model before this worker accepts a connection.

    A worker accepts only once it can answer, so with several workers no request lands on one
    that is still loading. The load runs on a thread while this one keeps the arbiter's
    heartbeat going: a first start that exports ONNX may take longer than the worker timeout.
    """
    app = worker.app.wsgi()  # the Flask app itself: worker.wsgi wraps it (model/worker.py)
    imports_seconds = time.perf_counter() - worker.sentiment_forked_at
    _drain_on_sigterm(worker, app)
    loader = threading.Thread(
        target=_load_predictor, args=(worker, app, imports_seconds), name="model-loader", daemon=True
    )
    loader.start()
    while loader.is_alive():
        worker.notify()
        loader.join(timeout=1.0)


def worker_exit(server, worker):
    """(worker) After the last in-flight request: finish queued batches, close Redis."""
    app = worker.app.wsgi() if getattr(worker, "wsgi", None) is not None else None  # loaded: see post_worker_init
    predictor = app.extensions["sentiment"].predictor if app is not None else None
    if predictor is not None:
        predictor.close()


def child_exit(server, worker):
    """(master) A dead worker's live gauges must leave the multiprocess totals."""
    if _metrics_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
    reason = _worker_failure()
    shutil.rmtree(_start_dir, ignore_errors=True)
    if reason:
        _fail_start(reason)


# --- helpers ----------------------------------------------------------------------------------


def _drain_on_sigterm(worker, app):
    """SIGTERM: /ready turns 503 at once, then Gunicorn's graceful stop lets in-flight work finish."""
    from app import start_draining

    def on_sigterm(signum, frame):
        start_draining(app)
        worker.handle_exit(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def _load_predictor(worker, app, imports_seconds):
    phases = logging.getLogger("sentiment")
    try:
        started = time.perf_counter()
        from app import attach_predictor
        from model import engines, metrics  # noqa: F401  (counted as imports)
        from model.predictor import Predictor

        imported = time.perf_counter()
        phases.info("imports %.2f s", imports_seconds + imported - started)
        predictor = Predictor.from_settings(settings)
        loaded = time.perf_counter()
        phases.info("model load %.2f s: %s, %s, %d engine threads", loaded - imported, predictor.model_string,
                    predictor.engine.description, engines.engine_threads(settings))
        predictor.warmup()
        warmed = time.perf_counter()
        phases.info("warm-up %.2f s", warmed - loaded)
    except ConfigurationError as error:
        _stop_service(str(error))
    except Exception as error:  # any failure to load means the same: this service cannot serve
        worker.log.debug("model load failed", exc_info=True)
        _stop_service(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    attach_predictor(app, predictor)
    since = PROCESS_START if worker.sentiment_cold_start else worker.sentiment_forked_wall
    _record_startup(predictor, imports_seconds + imported - started, loaded - imported, warmed - loaded,
                    time.time() - since)


def _stop_service(reason):
    """(worker) The first worker that fails tells the master why and exits with the status on which
    the master halts; another one that fails too exits quietly, the master is halting already."""
    try:
        failure = os.open(_FAILURE_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os._exit(1)
    os.write(failure, f"cannot load the model: {reason}\n".encode(errors="replace"))
    os.close(failure)
    os._exit(WORKER_BOOT_ERROR)


def _record_startup(predictor, imports, model_load, warmup, ready):
    from model import metrics

    for phase, seconds in (("imports", imports), ("model_load", model_load), ("warmup", warmup), ("ready", ready)):
        metrics.STARTUP_SECONDS.labels(phase=phase).set(seconds)
    from model.cpu import int8_isa

    resolved = predictor.engine.model
    backend, _, precision = predictor.engine.description.partition("-")
    isa = int8_isa()
    metrics.BUILD_INFO.labels(
        model=predictor.model_string, revision=resolved.revision or "", backend=backend, precision=precision,
        k_revision=settings.k_revision or "", isa=isa,
    ).set(1)
    logging.getLogger("sentiment").info(
        "ready %.2f s after start: %s (%s, CPU int8 kernels %s) on port %d, cache %s",
        ready, predictor.model_string, predictor.engine.description, isa, settings.port, predictor.cache_state(),
    )
