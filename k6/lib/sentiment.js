// What every scenario shares: where the service is, how to call /predict, what a correct
// answer looks like (the HTTP contract in the README), which texts to send, and the default
// thresholds.
//
// Environment:
//   BASE_URL    service root, default http://127.0.0.1:8080 (a Knative route: http://<ingress IP>)
//   HOST        Host header, for a Knative route reached by IP without DNS
//               (e.g. -e HOST=sentiment.default.example.com); unset = the URL's own host
//   SLO_P99_MS  the p99 latency objective of the scenario (each scenario has its own default)
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const HOST = __ENV.HOST || '';

// The contract: scores sum to 1 within 1e-4.
const SCORE_SUM_TOLERANCE = 1e-4;
// Texts up to this many characters count as "short" (one-liners, a sentence or two).
const SHORT_TEXT_CHARS = 160;
const CACHE_STATUSES = ['hit', 'miss', 'partial', 'bypass'];

// --- configuration --------------------------------------------------------------------------

export function envNumber(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error(`${name}=${raw} is not a number`);
  return value;
}

export function sloP99Ms(defaultMs) {
  return envNumber('SLO_P99_MS', defaultMs);
}

// The thresholds every scenario starts from: no failed requests, p99 under the SLO, all checks.
export function standardThresholds(sloMs) {
  return {
    http_req_failed: ['rate<0.001'],
    http_req_duration: [`p(99)<${sloMs}`],
    checks: ['rate>0.999'],
  };
}

// p99 needs to be in the summary for the thresholds report and the JSON summary.
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'];

// --- texts ----------------------------------------------------------------------------------

const ALL_TEXTS = new SharedArray('texts', () => JSON.parse(open('../data/texts.json')).texts);
const SHORT_TEXTS = new SharedArray('short texts', () =>
  JSON.parse(open('../data/texts.json')).texts.filter((text) => text.length <= SHORT_TEXT_CHARS));

// Random per VU and per run (init code runs once per VU), so "unique" texts stay unique
// across runs against the same Redis.
const SALT = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

export function textAt(index) {
  return ALL_TEXTS[index % ALL_TEXTS.length];
}

export function randomText() {
  return ALL_TEXTS[Math.floor(Math.random() * ALL_TEXTS.length)];
}

export function randomShortText() {
  return SHORT_TEXTS[Math.floor(Math.random() * SHORT_TEXTS.length)];
}

// A text no earlier request sent (cache miss): run, VU and iteration ids appended.
export function uniqueText(base = randomShortText(), slot = 0) {
  const vu = exec.vu.idInTest;
  const iteration = exec.vu.iterationInScenario;
  return `${base} [${SALT}-${vu}-${iteration}-${slot}]`;
}

export function uniqueTexts(count, pick = randomText) {
  return Array.from({ length: count }, (_, slot) => uniqueText(pick(), slot));
}

// --- requests -------------------------------------------------------------------------------

export function headers(extra = {}) {
  const result = { 'Content-Type': 'application/json', ...extra };
  if (HOST) result.Host = HOST;
  return result;
}

// POST a JSON body to /predict (or the alias); `expected` lists the statuses that are not failures.
export function postJson(body, { path = '/predict', tags = {}, timeout = '60s', extraHeaders = {}, expected = [200] } = {}) {
  return http.post(`${BASE_URL}${path}`, JSON.stringify(body), {
    headers: headers(extraHeaders),
    tags: { endpoint: path, ...tags },
    timeout,
    responseCallback: http.expectedStatuses(...expected),
  });
}

export function predict(texts, options = {}) {
  return postJson({ text: texts }, options);
}

export function get(path, tags = {}) {
  return http.get(`${BASE_URL}${path}`, { headers: headers(), tags: { endpoint: path, ...tags } });
}

// --- answer checks --------------------------------------------------------------------------

function parse(response) {
  try {
    return response.json();
  } catch (error) {
    return null;
  }
}

function isSortedDescending(scores) {
  return scores.every((score, i) => i === 0 || scores[i - 1] >= score);
}

// Every inner list names each label once, scores in [0, 1], sorted descending, summing to 1.
function wellFormedScores(inner, labels) {
  if (!Array.isArray(inner) || inner.length !== labels.length) return false;
  const names = inner.map((entry) => entry.label);
  if (new Set(names).size !== names.length || !labels.every((label) => names.includes(label))) return false;
  const scores = inner.map((entry) => entry.score);
  if (!scores.every((score) => typeof score === 'number' && score >= 0 && score <= 1)) return false;
  const sum = scores.reduce((total, score) => total + score, 0);
  return isSortedDescending(scores) && Math.abs(sum - 1) <= SCORE_SUM_TOLERANCE;
}

// The label set of the model, taken from one answer (labels come from the model's config).
export function discoverLabels() {
  const response = predict(['label discovery'], { tags: { phase: 'setup' } });
  const body = parse(response);
  if (response.status !== 200 || !body || !Array.isArray(body.predictions)) {
    throw new Error(`POST ${BASE_URL}/predict answered ${response.status}: ${String(response.body).slice(0, 200)}`);
  }
  return body.predictions[0].map((entry) => entry.label).sort();
}

// Checks one /predict answer against the contract; returns true when all of them pass.
export function checkPrediction(response, texts, labels, tags = {}) {
  const body = parse(response);
  const predictions = body && Array.isArray(body.predictions) ? body.predictions : null;
  return check(response, {
    'status is 200': (r) => r.status === 200,
    'one prediction per text': () => predictions !== null && predictions.length === texts.length,
    'every label once, scores sorted, sum 1': () =>
      predictions !== null && predictions.every((inner) => wellFormedScores(inner, labels)),
    'model is named': () => body !== null && typeof body.model === 'string' && body.model.length > 0,
    'X-Cache header present': (r) => CACHE_STATUSES.includes(r.headers['X-Cache']),
  }, tags);
}

export function cacheStatus(response) {
  return response.headers['X-Cache'] || 'absent';
}
