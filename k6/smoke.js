// Smoke: a few VUs for ~10 s exercising every check of the /predict contract, the alias
// path, request-id echo, health/readiness and one rejected input.
//
//   k6/run.sh smoke            (local stack)      SLO_P99_MS (default 150), VUS (2), DURATION (10s)
import { check, sleep } from 'k6';
import {
  SUMMARY_TREND_STATS, checkPrediction, discoverLabels, envNumber, get, predict, randomShortText,
  postJson, sloP99Ms, standardThresholds, uniqueText,
} from './lib/sentiment.js';
import { summaryHandler } from './lib/summary.js';

const SLO_MS = sloP99Ms(150);

export const options = {
  scenarios: {
    smoke: { executor: 'constant-vus', vus: envNumber('VUS', 2), duration: __ENV.DURATION || '10s' },
  },
  thresholds: { ...standardThresholds(SLO_MS), checks: ['rate==1'] },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

// Compared entry by entry: k6 parses JSON objects with no fixed key order, so no stringify.
function sameFirstAndLast(response) {
  try {
    const predictions = response.json().predictions;
    const first = predictions[0];
    const last = predictions[predictions.length - 1];
    return first.length === last.length
      && first.every((entry, i) => entry.label === last[i].label && entry.score === last[i].score);
  } catch (error) {
    return false;
  }
}

export function setup() {
  const ready = get('/ready', { phase: 'setup' });
  if (ready.status !== 200) throw new Error(`GET /ready answered ${ready.status}: the service is not ready`);
  return { labels: discoverLabels() };
}

export default function (data) {
  const single = [uniqueText()];
  checkPrediction(predict(single), single, data.labels);

  // Several texts with a duplicate, on the alias path: one answer per text, in input order.
  const repeated = uniqueText(randomShortText(), 1);
  const several = [repeated, uniqueText(randomShortText(), 2), repeated];
  const answer = predict(several, { path: '/project-predict' });
  checkPrediction(answer, several, data.labels);
  check(answer, { 'a repeated text gets the same scores': sameFirstAndLast });

  const requestId = `smoke-${__VU}-${__ITER}`;
  const echoed = predict([randomShortText()], { extraHeaders: { 'X-Request-ID': requestId } });
  check(echoed, { 'X-Request-ID echoed': (r) => r.headers['X-Request-Id'] === requestId });

  check(get('/health'), { 'health is 200': (r) => r.status === 200 });

  // A blank text is the client's mistake: 422 with a JSON body, counted as an expected status.
  const rejected = postJson({ text: ['   '] }, { expected: [422] });
  check(rejected, { 'blank text rejected with 422 JSON': (r) => r.status === 422 && r.json('detail') !== undefined });

  sleep(0.1);
}

export const handleSummary = summaryHandler('smoke');
