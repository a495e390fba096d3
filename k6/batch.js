// Batch: many texts per request (default 32, mixed lengths up to a few hundred words), all new
// to the cache. Counts texts scored per second, the figure that matters for bulk clients.
// TEXTS=long sends texts past the model's 512-token window: with BATCH_TEXTS=128 (MAX_BATCH_TEXTS)
// and ITERATIONS=1 it times the largest request the API accepts, the figure the answer deadline
// (responseStartTimeoutSeconds) must cover.
//
//   k6/run.sh batch      BATCH_TEXTS (default 32), TEXTS (any | short: one-liners only | long),
//                        VUS (2), DURATION (20s) or ITERATIONS (per VU), SLO_P99_MS (2000)
import { Counter } from 'k6/metrics';
import {
  SUMMARY_TREND_STATS, checkPrediction, discoverLabels, envNumber, predict, randomShortText, randomText,
  sloP99Ms, standardThresholds, uniqueTexts,
} from './lib/sentiment.js';
import { metricValue, summaryHandler } from './lib/summary.js';

const SLO_MS = sloP99Ms(2000);
const BATCH_TEXTS = envNumber('BATCH_TEXTS', 32);
const TEXTS = __ENV.TEXTS || 'any';
const PICKERS = { any: randomText, short: randomShortText, long: longText };
if (!(TEXTS in PICKERS)) throw new Error(`TEXTS=${TEXTS}: use any, short or long`);
// Long reviews cost the model far more than one-liners (attention grows with length).
const pickText = PICKERS[TEXTS];
const ITERATIONS = envNumber('ITERATIONS', 0);
// Characters that surely exceed 512 tokens (English runs at ~4-5 characters a token).
const LONG_TEXT_CHARS = 4000;

const textsScored = new Counter('texts_scored');

export const options = {
  scenarios: {
    batch: ITERATIONS > 0
      ? { executor: 'per-vu-iterations', vus: envNumber('VUS', 2), iterations: ITERATIONS, maxDuration: '30m' }
      : { executor: 'constant-vus', vus: envNumber('VUS', 2), duration: __ENV.DURATION || '20s' },
  },
  thresholds: standardThresholds(SLO_MS),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

// Reviews joined until the text is well past the model's window (the service truncates it).
function longText() {
  let text = randomText();
  while (text.length < LONG_TEXT_CHARS) text = `${text} ${randomText()}`;
  return text;
}

export function setup() {
  return { labels: discoverLabels() };
}

export default function (data) {
  const texts = uniqueTexts(BATCH_TEXTS, pickText);
  // Past k6's 60 s default: the largest request takes longer than that on small nodes.
  const response = predict(texts, { timeout: '300s' });
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
