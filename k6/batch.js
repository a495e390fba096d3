// Batch: many texts per request (default 32, mixed lengths up to a few hundred words), all new
// to the cache. Counts texts scored per second, the figure that matters for bulk clients.
//
//   k6/run.sh batch      BATCH_TEXTS (default 32), TEXTS (any | short: one-liners only),
//                        VUS (2), DURATION (20s), SLO_P99_MS (2000)
import { Counter } from 'k6/metrics';
import {
  SUMMARY_TREND_STATS, checkPrediction, discoverLabels, envNumber, predict, randomShortText, randomText,
  sloP99Ms, standardThresholds, uniqueTexts,
} from './lib/sentiment.js';
import { metricValue, summaryHandler } from './lib/summary.js';

const SLO_MS = sloP99Ms(2000);
const BATCH_TEXTS = envNumber('BATCH_TEXTS', 32);
const TEXTS = __ENV.TEXTS || 'any';
if (!['any', 'short'].includes(TEXTS)) throw new Error(`TEXTS=${TEXTS}: use any or short`);
// Long reviews cost the model far more than one-liners (attention grows with length).
const pickText = TEXTS === 'short' ? randomShortText : randomText;

const textsScored = new Counter('texts_scored');

export const options = {
  scenarios: {
    batch: { executor: 'constant-vus', vus: envNumber('VUS', 2), duration: __ENV.DURATION || '20s' },
  },
  thresholds: standardThresholds(SLO_MS),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  return { labels: discoverLabels() };
}

export default function (data) {
  const texts = uniqueTexts(BATCH_TEXTS, pickText);
  const response = predict(texts);
  if (checkPrediction(response, texts, data.labels)) textsScored.add(texts.length);
}

export const handleSummary = summaryHandler('batch', (data) => ({
  batch_texts: BATCH_TEXTS,
  texts: TEXTS,
  texts_per_second: metricValue(data, 'texts_scored', 'rate'),
  requests: metricValue(data, 'http_reqs', 'count'),
  p50_ms: metricValue(data, 'http_req_duration', 'med'),
  p99_ms: metricValue(data, 'http_req_duration', 'p(99)'),
}));
