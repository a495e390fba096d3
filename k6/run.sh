#!/usr/bin/env bash
# Run one k6 scenario and keep everything it produced in k6/results/<scenario>-<UTC time>/.
#
#   k6/run.sh SCENARIO [k6 run args...]     SCENARIO: smoke burst ramp cache batch admission coldstart
#
# Which service, in this order:
#   BASE_URL set (e.g. a Knative route, HOST=<ksvc host> when reached by IP): only run k6.
#   MODEL_DIR set: start a local stack (redis-server from the venv, or the REDIS_URL given;
#     Gunicorn serving MODEL_DIR on a free port), wait for /ready, run k6, stop the stack.
#     coldstart always needs this: it stops the service it started and starts it again while
#     k6 polls, so the figure is process start to first answer.
#   else the service answering on 127.0.0.1:PORT (8080), the one `make run` serves: wait for
#     /ready, run k6 against it, leave it running.
#
# Results: summary.json (scenario summary), summary-export.json (k6's own), report.html
#   (k6 web dashboard), timeseries.csv.gz (every sample), timeseries.png (k6/plot.py),
#   service.log and redis.log for a local stack.
# Knobs: RUN_TIMEOUT_SECONDS (900) bounds k6, READY_TIMEOUT_SECONDS (120) the start-up,
#   RESULTS_ROOT (k6/results) holds the run directories;
#   the scenario's own variables (SLO_P99_MS, BURST_RPS, ...) pass through the environment.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_BIN="$ROOT/.venv/bin"
K6="${K6:-$VENV_BIN/k6}"
PYTHON="${PYTHON:-$VENV_BIN/python}"
RUN_TIMEOUT_SECONDS="${RUN_TIMEOUT_SECONDS:-900}"
READY_TIMEOUT_SECONDS="${READY_TIMEOUT_SECONDS:-120}"
RESULTS_ROOT="${RESULTS_ROOT:-$ROOT/k6/results}"
# Head start given to k6 before the service process starts in the local cold-start run.
K6_HEAD_START_MS=3000

REDIS_PID=""
SERVICE_PID=""
K6_PID=""

die() {
  echo "k6/run.sh: $*" >&2
  exit 2
}

usage() {
  local scenarios=() script
  for script in "$ROOT"/k6/*.js; do
    scenarios+=("$(basename "$script" .js)")
  done
  die "usage: k6/run.sh SCENARIO [k6 args...]; SCENARIO is one of: ${scenarios[*]}"
}

now_ms() {
  date +%s%3N
}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_redis() {
  if [[ -n "${REDIS_URL:-}" ]]; then
    echo "using REDIS_URL=$REDIS_URL"
    return
  fi
  local port
  port="$(free_port)"
  "$VENV_BIN/redis-server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$RESULTS/redis.log" &
  REDIS_PID=$!
  export REDIS_URL="redis://127.0.0.1:$port/0"
  for _ in $(seq 100); do
    "$VENV_BIN/redis-cli" -p "$port" ping >/dev/null 2>&1 && return
    sleep 0.05
  done
  die "redis-server did not answer on port $port (see $RESULTS/redis.log)"
}

start_service() {
  (cd "$ROOT" && PORT="$SERVICE_PORT" exec "$VENV_BIN/gunicorn" -c gunicorn.conf.py app:app) \
    >>"$RESULTS/service.log" 2>&1 &
  SERVICE_PID=$!
}

wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT_SECONDS))
  until curl -fsS -o /dev/null "$BASE_URL/ready" 2>/dev/null; do
    [[ -z "$SERVICE_PID" ]] || kill -0 "$SERVICE_PID" 2>/dev/null || die "the service exited during start-up (see $RESULTS/service.log)"
    ((SECONDS < deadline)) || die "the service was not ready within ${READY_TIMEOUT_SECONDS}s (see $RESULTS/service.log)"
    sleep 0.2
  done
}

# SIGTERM, then wait for the graceful shutdown; SIGKILL if it hangs.
stop_process() {
  local pid="$1"
  if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  stop_process "$SERVICE_PID"
  stop_process "$REDIS_PID"
}

# On Ctrl-C or SIGTERM: let k6 stop gracefully (it still writes its summary), then exit
# through the EXIT trap, which stops the local stack.
# shellcheck disable=SC2329  # invoked by the INT/TERM traps
interrupted() {
  if [[ -n "$K6_PID" ]]; then
    kill -TERM "$K6_PID" 2>/dev/null || true
    wait "$K6_PID" 2>/dev/null || true
  fi
  exit "$1"
}

check_model_dir() {
  [[ -n "${MODEL_DIR:-}" ]] || die "$1"
  [[ -e "$MODEL_DIR" ]] || die "MODEL_DIR=$MODEL_DIR does not exist"
}

# The service on PORT, if /health says it is one of ours: `make run` serves there.
running_service_url() {
  local url="http://127.0.0.1:${PORT:-8080}"
  curl -fsS --max-time 2 "$url/health" 2>/dev/null | grep -q '"status": *"ok"' || return 1
  echo "$url"
}

use_running_service() {
  export BASE_URL="$1"
  wait_ready
  echo "using the service running at $BASE_URL"
}

start_local_stack() {
  start_redis
  SERVICE_PORT="$(free_port)"
  export BASE_URL="http://127.0.0.1:$SERVICE_PORT"
  start_service
  wait_ready
  echo "local service ready at $BASE_URL (MODEL_DIR=$MODEL_DIR, REDIS_URL=$REDIS_URL)"
}

# k6 runs in the background so that a signal reaches the traps at once (bash runs a trap only
# after the foreground command ends); k6_wait returns its exit status.
k6_start() {
  # Port -1: no dashboard server (k6 would wait for open browsers); the report is still exported.
  # The dashboard exports only after a few aggregation periods: 1 s keeps short runs covered.
  K6_WEB_DASHBOARD=true K6_WEB_DASHBOARD_PORT=-1 K6_WEB_DASHBOARD_EXPORT="$RESULTS/report.html" \
    K6_WEB_DASHBOARD_PERIOD="${K6_WEB_DASHBOARD_PERIOD:-1s}" \
    SUMMARY_JSON="$RESULTS/summary.json" \
    timeout --signal=INT --kill-after=30 "$RUN_TIMEOUT_SECONDS" \
    "$K6" run --summary-export "$RESULTS/summary-export.json" --out "csv=$RESULTS/timeseries.csv.gz" \
    "$@" "$SCRIPT" &
  K6_PID=$!
}

k6_wait() {
  local status=0
  wait "$K6_PID" || status=$?
  K6_PID=""
  return "$status"
}

k6_run() {
  k6_start "$@"
  k6_wait
}

# Local cold start: k6 starts first and polls from an announced instant; the service process
# starts at that instant. k6's own start-up is thereby kept out of the figure.
run_local_coldstart() {
  stop_process "$SERVICE_PID"
  local start_at delay_ms
  start_at=$(($(now_ms) + K6_HEAD_START_MS))
  # Refused connections while the process starts are logged by k6 on every poll: keep them in a file.
  PROCESS_START_EPOCH_MS="$start_at" k6_start --log-output "file=$RESULTS/k6.log" "$@"
  delay_ms=$((start_at - $(now_ms)))
  if ((delay_ms > 0)); then
    sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))"
  fi
  start_service
  echo "service process started $(($(now_ms) - start_at)) ms after the announced instant"
  k6_wait
}

main() {
  [[ $# -ge 1 ]] || usage
  SCENARIO="$1"
  shift
  SCRIPT="$ROOT/k6/$SCENARIO.js"
  [[ "$SCENARIO" =~ ^[a-z0-9_-]+$ && -f "$SCRIPT" ]] || usage
  [[ -x "$K6" ]] || K6="$(command -v k6)" || die "k6 not found: run make install"
  local running=""
  if [[ -z "${BASE_URL:-}" ]]; then
    if [[ -n "${MODEL_DIR:-}" || "$SCENARIO" == coldstart ]]; then
      check_model_dir "MODEL_DIR is not set: coldstart starts and restarts a service of its own from a checkpoint or a built artifact (python -m model build), or set BASE_URL"
    elif ! running="$(running_service_url)"; then
      die "no service answers on 127.0.0.1:${PORT:-8080} and MODEL_DIR is not set: start one with make run, point MODEL_DIR at a checkpoint or a built artifact (python -m model build), or set BASE_URL"
    fi
  fi

  RESULTS="$RESULTS_ROOT/$SCENARIO-$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$RESULTS"
  trap cleanup EXIT
  trap 'interrupted 130' INT
  trap 'interrupted 143' TERM

  local status=0
  if [[ -n "$running" ]]; then
    use_running_service "$running"
    k6_run "$@" || status=$?
  elif [[ -z "${BASE_URL:-}" ]]; then
    start_local_stack
    if [[ "$SCENARIO" == coldstart ]]; then
      run_local_coldstart "$@" || status=$?
    else
      k6_run "$@" || status=$?
    fi
  else
    echo "running against BASE_URL=$BASE_URL${HOST:+ (Host: $HOST)}"
    k6_run "$@" || status=$?
  fi

  local plot_status=0
  "$PYTHON" "$ROOT/k6/plot.py" "$RESULTS/timeseries.csv.gz" --out "$RESULTS/timeseries.png" \
    --summary "$RESULTS/summary.json" --title "k6 $SCENARIO" || plot_status=$?
  [[ -f "$RESULTS/report.html" ]] || echo "k6/run.sh: no report.html (the web dashboard needs a run of a few seconds)" >&2
  echo "results: $RESULTS"
  ((status == 0)) || { echo "k6 exited with status $status" >&2; exit "$status"; }
  exit "$plot_status"
}

main "$@"
