"""Read the generated dashboard's queries back, to run them outside Grafana.

render.py draws panels from them and the tests evaluate every one through Prometheus's HTTP API.
Grafana's template variables are substituted the way Grafana would for one chosen value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DASHBOARD_JSON = Path(__file__).resolve().parent / "grafana" / "sentiment-dashboard.json"
SERVICE_METRIC = re.compile(r"\bsentiment_[a-z0-9_]+")


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref_id: str
    expr: str
    legend: str
    instant: bool

    @property
    def reads_service_metrics(self) -> bool:
        """True when the query reads the service's own metrics (not only Knative's)."""
        return bool(SERVICE_METRIC.search(self.expr))


def load_dashboard(path: Path = DASHBOARD_JSON) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel that draws data, including those inside collapsed rows."""
    found = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_queries(dashboard: dict) -> list[PanelQuery]:
    return [
        PanelQuery(
            panel=panel["title"],
            ref_id=target.get("refId", ""),
            expr=target["expr"],
            legend=target.get("legendFormat", ""),
            instant=bool(target.get("instant")),
        )
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variable_queries(dashboard: dict) -> dict[str, str]:
    """name -> query of each query-type template variable (e.g. label_values(...))."""
    return {v["name"]: v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"}


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace $name and ${name} by values[name]; an unknown variable is an error."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for template variable ${name} in: {expr}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


def service_metric_names(text: str) -> set[str]:
    """Names of the service's metrics (sentiment_*) a query or rule file mentions."""
    return set(SERVICE_METRIC.findall(text))


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: {{label}} -> the series' label value."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()
