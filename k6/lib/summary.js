// End-of-test report shared by the scenarios: a text summary on stdout and a JSON file.
//
// k6 prints nothing of its own once a script exports handleSummary, so this module writes
// the text itself: thresholds with their verdicts, checks, every metric, and the figures a
// scenario computes (knee rate, cache hit share, ...).
//
// Environment:
//   SUMMARY_JSON  path of the JSON summary to write (k6/run.sh sets it); unset = stdout only
import { BASE_URL, SUMMARY_TREND_STATS } from './sentiment.js';

// Figures are indicative: three decimals are plenty (milliseconds, shares, rates).
function roundFigures(value) {
  if (typeof value === 'number' && Number.isFinite(value)) return Math.round(value * 1000) / 1000;
  if (Array.isArray(value)) return value.map(roundFigures);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, roundFigures(item)]));
  }
  return value;
}

function formatNumber(value) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(1) : value.toFixed(3);
}

function formatValues(metric) {
  const values = metric.values;
  switch (metric.type) {
    case 'trend':
      return SUMMARY_TREND_STATS.filter((stat) => stat in values)
        .map((stat) => `${stat}=${formatNumber(values[stat])}`).join(' ');
    case 'rate':
      return `${(100 * values.rate).toFixed(2)}% (${values.passes} of ${values.passes + values.fails})`;
    case 'counter':
      return `${formatNumber(values.count)} (${formatNumber(values.rate)}/s)`;
    default:
      return Object.entries(values).map(([stat, value]) => `${stat}=${formatNumber(value)}`).join(' ');
  }
}

// [{metric, expression, ok}] for every threshold of the run.
export function thresholdResults(data) {
  const results = [];
  for (const [name, metric] of Object.entries(data.metrics)) {
    for (const [expression, verdict] of Object.entries(metric.thresholds || {})) {
      results.push({ metric: name, expression, ok: verdict.ok });
    }
  }
  return results;
}

function checkResults(group, prefix = '') {
  const own = (group.checks || []).map((c) => ({ name: prefix + c.name, passes: c.passes, fails: c.fails }));
  const nested = (group.groups || []).flatMap((g) => checkResults(g, `${prefix}${g.name} / `));
  return own.concat(nested);
}

// Thresholds that only make a submetric appear in the summary; they cannot fail.
const ALWAYS_TRUE = ['max>=0', 'rate>=0', 'count>=0'];

function formatFigure(name, value) {
  if (!Array.isArray(value)) return [`  ${name}: ${JSON.stringify(value)}`];
  return [`  ${name}:`].concat(value.map((item) => `    ${JSON.stringify(item)}`));
}

function textReport(scenario, data, thresholds, checks, figures) {
  const lines = [`\nscenario ${scenario} against ${BASE_URL}`, '', 'thresholds'];
  const meaningful = thresholds.filter((t) => !ALWAYS_TRUE.includes(t.expression));
  meaningful.sort((a, b) => a.metric.localeCompare(b.metric));
  for (const t of meaningful) {
    const metric = data.metrics[t.metric];
    lines.push(`  ${t.ok ? 'PASS' : 'FAIL'}  ${t.metric}  ${t.expression}   [${formatValues(metric)}]`);
  }
  lines.push('', 'checks');
  for (const c of checks) lines.push(`  ${c.fails === 0 ? 'ok  ' : 'FAIL'}  ${c.name}: ${c.passes} passed, ${c.fails} failed`);
  lines.push('', 'metrics');
  for (const name of Object.keys(data.metrics).sort()) {
    lines.push(`  ${name.padEnd(44, '.')} ${formatValues(data.metrics[name])}`);
  }
  if (Object.keys(figures).length > 0) {
    lines.push('', 'figures');
    for (const [name, value] of Object.entries(figures)) lines.push(...formatFigure(name, value));
  }
  const passed = thresholds.every((t) => t.ok);
  lines.push('', passed ? 'all thresholds passed' : 'THRESHOLDS FAILED', '');
  return lines.join('\n');
}

// A handleSummary for `scenario`; `computeFigures(data)` adds the scenario's own results.
export function summaryHandler(scenario, computeFigures = () => ({})) {
  return function handleSummary(data) {
    const thresholds = thresholdResults(data);
    const checks = checkResults(data.root_group);
    const figures = roundFigures(computeFigures(data));
    const output = { stdout: textReport(scenario, data, thresholds, checks, figures) };
    if (__ENV.SUMMARY_JSON) {
      output[__ENV.SUMMARY_JSON] = JSON.stringify({
        scenario,
        base_url: BASE_URL,
        thresholds_passed: thresholds.every((t) => t.ok),
        thresholds,
        checks,
        figures,
        metrics: data.metrics,
        state: data.state,
      }, null, 1);
    }
    return output;
  };
}

// One value of a metric from the summary data, or null when the metric never got a sample.
export function metricValue(data, name, stat) {
  const metric = data.metrics[name];
  return metric && metric.values[stat] !== undefined ? metric.values[stat] : null;
}
