// Admission: an open loop (a constant arrival rate, whatever the answers take) of one new short
// text per request. Below capacity every request should be answered; above it the service must
// refuse at once (503 + Retry-After) what it cannot serve within QUEUE_MAX_WAIT_SECONDS, and
// keep the latency of what it admits bounded. Reports 200s and 503s apart.
//
//   k6/run.sh admission  RPS (default 20), DURATION (20s), MAX_VUS (200), SLO_P99_MS (500)
import { Counter, Trend } from 'k6/metrics';
import {
  SUMMARY_TREND_STATS, checkPrediction, discoverLabels, envNumber, predict, sloP99Ms, uniqueTexts,
  randomShortText,
} from './lib/sentiment.js';
import { metricValue, summaryHandler } from './lib/summary.js';

const SLO_MS = sloP99Ms(500);
const RPS = envNumber('RPS', 20);

const admitted = new Trend('latency_admitted', true);
const refused = new Trend('latency_refused', true);
const refusedWithoutRetryAfter = new Counter('refused_without_retry_after');

export const options = {
  scenarios: {
    admission: {
      executor: 'constant-arrival-rate',
      rate: RPS,
      timeUnit: '1s',
      duration: __ENV.DURATION || '20s',
      preAllocatedVUs: Math.min(envNumber('MAX_VUS', 200), Math.max(20, RPS)),
      maxVUs: envNumber('MAX_VUS', 200),
    },
  },
  thresholds: {
    // 503 is the service's promised answer to overload: counted apart, not a failure here.
    http_req_failed: ['rate<0.001'],
    'http_req_duration{status:200}': [`p(99)<${SLO_MS}`],
    checks: ['rate>0.999'],
    refused_without_retry_after: ['count==0'],
    'http_reqs{status:200}': ['count>=0'],
    'http_reqs{status:503}': ['count>=0'],
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  return { labels: discoverLabels() };
}

export default function (data) {
  const texts = uniqueTexts(1, randomShortText);
  const response = predict(texts, { expected: [200, 503] });
  if (response.status === 503) {
    refused.add(response.timings.duration);
    if (!response.headers['Retry-After']) refusedWithoutRetryAfter.add(1);
    return;
  }
  admitted.add(response.timings.duration);
  checkPrediction(response, texts, data.labels);
}

export const handleSummary = summaryHandler('admission', (data) => ({
  offered_rps: RPS,
  answered_rps: metricValue(data, 'http_reqs{status:200}', 'rate'),
  refused_rps: metricValue(data, 'http_reqs{status:503}', 'rate'),
  ok: metricValue(data, 'http_reqs{status:200}', 'count'),
  refused: metricValue(data, 'http_reqs{status:503}', 'count'),
  errors: metricValue(data, 'http_req_failed', 'passes'),
  dropped_iterations: metricValue(data, 'dropped_iterations', 'count'),
  admitted_p50_ms: metricValue(data, 'latency_admitted', 'med'),
  admitted_p99_ms: metricValue(data, 'latency_admitted', 'p(99)'),
  refused_p50_ms: metricValue(data, 'latency_refused', 'med'),
  refused_p99_ms: metricValue(data, 'latency_refused', 'p(99)'),
}));
