// Burst: from idle to a high arrival rate within seconds, hold it, back to zero. Every
// request carries one short text nobody sent before (a cache miss), so the model does the work.
//
//   k6/run.sh burst      BURST_RPS (default 150), IDLE (5s), RISE (3s), HOLD (20s), FALL (3s),
//                        MAX_VUS (200), SLO_P99_MS (150)
import {
  SUMMARY_TREND_STATS, checkPrediction, discoverLabels, envNumber, predict, sloP99Ms,
  standardThresholds, uniqueText,
} from './lib/sentiment.js';
import { metricValue, summaryHandler } from './lib/summary.js';

const SLO_MS = sloP99Ms(150);
const BURST_RPS = envNumber('BURST_RPS', 150);

export const options = {
  scenarios: {
    burst: {
      executor: 'ramping-arrival-rate',
      startRate: 0,
      timeUnit: '1s',
      preAllocatedVUs: Math.min(BURST_RPS, 50),
      maxVUs: envNumber('MAX_VUS', 200),
      stages: [
        { duration: __ENV.IDLE || '5s', target: 0 },
        { duration: __ENV.RISE || '3s', target: BURST_RPS },
        { duration: __ENV.HOLD || '20s', target: BURST_RPS },
        { duration: __ENV.FALL || '3s', target: 0 },
      ],
    },
  },
  // An iteration k6 could not start (all VUs busy waiting on the service) is a failure too.
  thresholds: { ...standardThresholds(SLO_MS), dropped_iterations: ['count==0'] },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  return { labels: discoverLabels() };
}

export default function (data) {
  const texts = [uniqueText()];
  checkPrediction(predict(texts), texts, data.labels);
}

export const handleSummary = summaryHandler('burst', (data) => ({
  target_rps: BURST_RPS,
  slo_p99_ms: SLO_MS,
  requests: metricValue(data, 'http_reqs', 'count'),
  p50_ms: metricValue(data, 'http_req_duration', 'med'),
  p99_ms: metricValue(data, 'http_req_duration', 'p(99)'),
  max_ms: metricValue(data, 'http_req_duration', 'max'),
  dropped_iterations: metricValue(data, 'dropped_iterations', 'count'),
}));
