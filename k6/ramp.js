// Ramp: climb through a staircase of arrival rates to find the knee, the highest rate the
// service sustains with p99 under the SLO and no errors. Each step's requests carry the tag
// step=<rate> so the summary can judge every step apart; the ramp itself is tagged "rise".
// Steps past the knee are expected to break the SLO: the thresholds only require the first
// step to meet it (the service must work at all), and the report names the knee.
//
//   k6/run.sh ramp       RATES (default 10,25,50,75,100,150,200,300 req/s), STEP (10 s held),
//                        RISE (2 s between steps), MAX_VUS (300), SLO_P99_MS (150)
import exec from 'k6/execution';
import {
  SUMMARY_TREND_STATS, checkPrediction, discoverLabels, envNumber, predict, sloP99Ms, uniqueText,
} from './lib/sentiment.js';
import { metricValue, summaryHandler } from './lib/summary.js';

const SLO_MS = sloP99Ms(150);
const RATES = (__ENV.RATES || '10,25,50,75,100,150,200,300').split(',').map(Number);
const STEP_SECONDS = envNumber('STEP', 10);
const RISE_SECONDS = envNumber('RISE', 2);
// A step counts as sustained when k6 managed to send nearly its target rate.
const SUSTAINED_SHARE = 0.95;

if (RATES.some((rate) => !(rate > 0))) throw new Error(`RATES=${__ENV.RATES} must be positive numbers`);

function stages() {
  return RATES.flatMap((rate) => [
    { duration: `${RISE_SECONDS}s`, target: rate },
    { duration: `${STEP_SECONDS}s`, target: rate },
  ]);
}

// The tag of the moment `elapsedMs` after the scenario started: the step's rate, or "rise".
function stepTag(elapsedMs) {
  const period = (RISE_SECONDS + STEP_SECONDS) * 1000;
  const index = Math.floor(elapsedMs / period);
  if (index >= RATES.length) return 'rise';
  return elapsedMs - index * period < RISE_SECONDS * 1000 ? 'rise' : String(RATES[index]);
}

// Submetrics only reach the summary when a threshold names them: these always-true
// thresholds exist so the report can read each step's figures.
function perStepThresholds() {
  const thresholds = {};
  for (const rate of RATES) {
    thresholds[`http_req_duration{step:${rate}}`] = ['max>=0'];
    thresholds[`http_req_failed{step:${rate}}`] = ['rate>=0'];
    thresholds[`http_reqs{step:${rate}}`] = ['count>=0'];
  }
  const first = RATES[0];
  thresholds[`http_req_duration{step:${first}}`] = [`p(99)<${SLO_MS}`];
  thresholds[`http_req_failed{step:${first}}`] = ['rate<0.001'];
  thresholds[`checks{step:${first}}`] = ['rate>0.999'];
  return thresholds;
}

export const options = {
  scenarios: {
    ramp: {
      executor: 'ramping-arrival-rate',
      startRate: 0,
      timeUnit: '1s',
      preAllocatedVUs: 20,
      maxVUs: envNumber('MAX_VUS', 300),
      stages: stages(),
    },
  },
  thresholds: perStepThresholds(),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  return { labels: discoverLabels() };
}

export default function (data) {
  const tags = { step: stepTag(Date.now() - exec.scenario.startTime) };
  const texts = [uniqueText()];
  checkPrediction(predict(texts, { tags }), texts, data.labels, tags);
}

function judgeStep(data, rate) {
  const p99 = metricValue(data, `http_req_duration{step:${rate}}`, 'p(99)');
  const failed = metricValue(data, `http_req_failed{step:${rate}}`, 'rate');
  const achieved = (metricValue(data, `http_reqs{step:${rate}}`, 'count') || 0) / STEP_SECONDS;
  const ok = p99 !== null && p99 < SLO_MS && failed === 0 && achieved >= SUSTAINED_SHARE * rate;
  return { rate, achieved_rps: achieved, p99_ms: p99, failed_share: failed, ok };
}

// The knee: the highest step that met the SLO with no errors. On a busy machine a lower step
// can miss by a hair, so the first missed step is reported next to it rather than folded in.
function knee(steps) {
  const passed = steps.filter((step) => step.ok).map((step) => step.rate);
  const missed = steps.filter((step) => !step.ok).map((step) => step.rate);
  return {
    knee_rps: passed.length > 0 ? Math.max(...passed) : null,
    first_missed_rps: missed.length > 0 ? Math.min(...missed) : null,
  };
}

export const handleSummary = summaryHandler('ramp', (data) => {
  const steps = RATES.map((rate) => judgeStep(data, rate));
  return { slo_p99_ms: SLO_MS, ...knee(steps), steps };
});
