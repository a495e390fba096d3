// Cold start: the latency of the first answer from a service that was not running.
//
// Against a Knative route (BASE_URL set): optionally wait IDLE_SECONDS so the revision scales
// to zero, then send one request; the activator holds it until a pod is ready, so its
// latency is the cold start. COLD_ROUNDS repeats idle + cold request.
//
// Locally (k6/run.sh coldstart): the runner stops the service and starts it again at the
// instant PROCESS_START_EPOCH_MS it passes here; this script polls /predict from that
// instant until the first 200, so the figure is process start to first answer.
//
// Then WARM_REQUESTS more requests measure the warm latency for comparison.
//
//   COLD_SLO_MS (default 10000), SLO_P99_MS (warm, default 150), IDLE_SECONDS (0),
//   COLD_ROUNDS (1), WAKE_TIMEOUT_SECONDS (120), POLL_MS (25), WARM_REQUESTS (20)
import { sleep } from 'k6';
import { Trend } from 'k6/metrics';
import {
  SUMMARY_TREND_STATS, checkPrediction, envNumber, predict, sloP99Ms, uniqueText,
} from './lib/sentiment.js';
import { metricValue, summaryHandler } from './lib/summary.js';

const COLD_SLO_MS = envNumber('COLD_SLO_MS', 10000);
const WARM_SLO_MS = sloP99Ms(150);
const IDLE_SECONDS = envNumber('IDLE_SECONDS', 0);
const ROUNDS = envNumber('COLD_ROUNDS', 1);
const WAKE_TIMEOUT_SECONDS = envNumber('WAKE_TIMEOUT_SECONDS', 120);
const POLL_MS = envNumber('POLL_MS', 25);
const WARM_REQUESTS = envNumber('WARM_REQUESTS', 20);
const PROCESS_START_EPOCH_MS = envNumber('PROCESS_START_EPOCH_MS', 0);

const coldStart = new Trend('cold_start_ms', true);

export const options = {
  scenarios: {
    coldstart: {
      executor: 'per-vu-iterations',
      vus: 1,
      iterations: ROUNDS,
      maxDuration: `${ROUNDS * (IDLE_SECONDS + WAKE_TIMEOUT_SECONDS + 60)}s`,
    },
  },
  thresholds: {
    cold_start_ms: [`max<${COLD_SLO_MS}`],
    'http_req_failed{phase:warm}': ['rate<0.001'],
    'http_req_duration{phase:warm}': [`p(99)<${WARM_SLO_MS}`],
    checks: ['rate==1'],
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

// Local: poll from the announced process start until the service answers.
function firstAnswerAfterProcessStart(texts) {
  const wait = PROCESS_START_EPOCH_MS - Date.now();
  if (wait > 0) sleep(wait / 1000);
  const deadline = PROCESS_START_EPOCH_MS + WAKE_TIMEOUT_SECONDS * 1000;
  while (Date.now() < deadline) {
    // Refused connections and 503s while loading are expected here, not failures of the run.
    const response = predict(texts, { tags: { phase: 'wake' }, timeout: '5s', expected: [200, 503] });
    if (response.status === 200) return { response, elapsedMs: Date.now() - PROCESS_START_EPOCH_MS };
    sleep(POLL_MS / 1000);
  }
  throw new Error(`no answer within ${WAKE_TIMEOUT_SECONDS} s of the process start`);
}

// Knative: the activator holds the request until a pod is ready.
function firstAnswerFromZero(texts) {
  if (IDLE_SECONDS > 0) sleep(IDLE_SECONDS);
  const started = Date.now();
  const response = predict(texts, { tags: { phase: 'cold' }, timeout: `${WAKE_TIMEOUT_SECONDS}s` });
  return { response, elapsedMs: Date.now() - started };
}

function labelsOf(response) {
  try {
    return response.json('predictions.0').map((entry) => entry.label).sort();
  } catch (error) {
    return [];
  }
}

export default function () {
  const texts = [uniqueText()];
  const { response, elapsedMs } = PROCESS_START_EPOCH_MS > 0
    ? firstAnswerAfterProcessStart(texts) : firstAnswerFromZero(texts);
  const labels = labelsOf(response);
  if (checkPrediction(response, texts, labels, { phase: 'cold' })) coldStart.add(elapsedMs);
  for (let i = 0; i < WARM_REQUESTS; i += 1) {
    const warmTexts = [uniqueText(undefined, i + 1)];
    checkPrediction(predict(warmTexts, { tags: { phase: 'warm' } }), warmTexts, labels, { phase: 'warm' });
  }
}

export const handleSummary = summaryHandler('coldstart', (data) => ({
  mode: PROCESS_START_EPOCH_MS > 0 ? 'process start to first answer' : 'first request to an idle route',
  rounds: ROUNDS,
  cold_start_ms: metricValue(data, 'cold_start_ms', 'max'),
  cold_start_median_ms: metricValue(data, 'cold_start_ms', 'med'),
  warm_p50_ms: metricValue(data, 'http_req_duration{phase:warm}', 'med'),
  warm_p99_ms: metricValue(data, 'http_req_duration{phase:warm}', 'p(99)'),
}));
