// Cache: a hot set of texts requested with a skewed (Zipf-like) popularity, the way real
// traffic repeats itself. Reports the share of answers served from Redis (X-Cache: hit) and
// the latency of hits and misses apart. The hot set is salted per run, so each run starts cold,
// unless WARM=1: then setup requests every hot text once and the run measures hits only.
// HOT_SALT fixes the salt, so that a second run asks for the same hot set.
// Open loop at RPS by default; VUS=N makes it a closed loop of N clients (each sends its next
// request when the last is answered), which measures the most hits per second.
//
//   k6/run.sh cache      RPS (default 50) or VUS, DURATION (20s), HOT_SET (100 texts), ZIPF_S (1.1),
//                        WARM (0), HOT_SALT (random), MIN_HIT_SHARE (0.8), SLO_P99_MS (150)
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  SUMMARY_TREND_STATS, cacheStatus, checkPrediction, discoverLabels, envNumber, predict, sloP99Ms,
  standardThresholds, textAt,
} from './lib/sentiment.js';
import { metricValue, summaryHandler } from './lib/summary.js';

const SLO_MS = sloP99Ms(150);
const HOT_SET = envNumber('HOT_SET', 100);
const ZIPF_S = envNumber('ZIPF_S', 1.1);
const MIN_HIT_SHARE = envNumber('MIN_HIT_SHARE', 0.8);

const STATUSES = ['hit', 'miss', 'partial', 'bypass', 'absent'];

const cacheHit = new Rate('cache_hit');
const answers = new Counter('cache_answers');
const hitLatency = new Trend('latency_cache_hit', true);
const missLatency = new Trend('latency_cache_miss', true);

const DURATION = __ENV.DURATION || '20s';
const CLOSED_LOOP = { executor: 'constant-vus', vus: envNumber('VUS', 0), duration: DURATION };
const OPEN_LOOP = {
  executor: 'constant-arrival-rate',
  rate: envNumber('RPS', 50),
  timeUnit: '1s',
  duration: DURATION,
  preAllocatedVUs: 20,
  maxVUs: envNumber('MAX_VUS', 100),
};
const WARM = envNumber('WARM', 0) === 1;

export const options = {
  scenarios: { cache: CLOSED_LOOP.vus > 0 ? CLOSED_LOOP : OPEN_LOOP },
  thresholds: {
    ...standardThresholds(SLO_MS),
    cache_hit: [`rate>${MIN_HIT_SHARE}`],
    // Always true: they only bring the count of each X-Cache value into the summary.
    ...Object.fromEntries(STATUSES.map((status) => [`cache_answers{x_cache:${status}}`, ['count>=0']])),
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

// Cumulative Zipf weights: rank k is requested in proportion to 1 / k^s.
function zipfCumulative(size, s) {
  const cumulative = [];
  let total = 0;
  for (let rank = 1; rank <= size; rank += 1) {
    total += 1 / rank ** s;
    cumulative.push(total);
  }
  return cumulative.map((value) => value / total);
}

const CUMULATIVE = zipfCumulative(HOT_SET, ZIPF_S);

function zipfIndex() {
  const u = Math.random();
  let low = 0;
  let high = CUMULATIVE.length - 1;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (CUMULATIVE[middle] < u) low = middle + 1;
    else high = middle;
  }
  return low;
}

export function setup() {
  // The salt makes this run's hot set new to the cache; the same for every VU.
  const salt = __ENV.HOT_SALT || Date.now().toString(36);
  const hotSet = Array.from({ length: HOT_SET }, (_, i) => `${textAt(i)} [hot ${salt}-${i}]`);
  // One text a request, as the run asks for them (a whole-response cache keys on the body).
  for (let i = 0; WARM && i < hotSet.length; i += 1) predict([hotSet[i]], { tags: { phase: 'setup' } });
  return { labels: discoverLabels(), hotSet };
}

export default function (data) {
  const texts = [data.hotSet[zipfIndex()]];
  const response = predict(texts);
  checkPrediction(response, texts, data.labels);
  const status = cacheStatus(response);
  cacheHit.add(status === 'hit');
  answers.add(1, { x_cache: status });
  if (status === 'hit') hitLatency.add(response.timings.duration);
  if (status === 'miss') missLatency.add(response.timings.duration);
}

// The share a perfect cache would reach: every request but the first of each text is a hit.
function idealHitShare(requests) {
  if (!requests) return null;
  let expectedDistinct = 0;
  CUMULATIVE.forEach((value, i) => {
    const probability = value - (i === 0 ? 0 : CUMULATIVE[i - 1]);
    expectedDistinct += 1 - (1 - probability) ** requests;
  });
  return 1 - expectedDistinct / requests;
}

export const handleSummary = summaryHandler('cache', (data) => ({
  hot_set: HOT_SET,
  zipf_s: ZIPF_S,
  hit_share: metricValue(data, 'cache_hit', 'rate'),
  ideal_hit_share: idealHitShare(metricValue(data, 'cache_hit', 'passes') + metricValue(data, 'cache_hit', 'fails')),
  answers: Object.fromEntries(STATUSES.map((status) => [status, metricValue(data, `cache_answers{x_cache:${status}}`, 'count')])),
  requests: metricValue(data, 'http_reqs', 'count'),
  requests_per_second: metricValue(data, 'http_reqs', 'rate'),
  p50_ms: metricValue(data, 'http_req_duration', 'med'),
  p99_ms: metricValue(data, 'http_req_duration', 'p(99)'),
  hit_p50_ms: metricValue(data, 'latency_cache_hit', 'med'),
  miss_p50_ms: metricValue(data, 'latency_cache_miss', 'med'),
}));
