"""Checks cluster/grafana-scotd.json, the Grafana dashboard for scotd's ``ray_scotd_*`` counters.

Each rule returns a list of problems. The rules run on the shipped file (no problems expected) and on mutated
in-memory copies (the named problem expected), so a rule that accepts everything fails. No Ray, network or Grafana:
the file is read as JSON and its PromQL checked as text.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from scotd.inference.metrics import METRICS

DASHBOARD = Path(__file__).resolve().parents[1] / "cluster" / "grafana-scotd.json"
DATASOURCE_REF = "${datasource}"
# Ray exports a Counter named ``scotd_<name>`` as ``ray_scotd_<name>_total``.
EXPORTED = {f"ray_scotd_{name}_total" for name in METRICS}
METRIC_NAME = re.compile(r"ray_scotd_\w+")
GRAFANA_VARIABLE = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+")
RUN_VARIABLE = re.compile(r"\$run\b|\$\{run(?::\w+)?\}")
# A label matcher list: label op "value", comma separated (Grafana variables inside the quotes).
MATCHERS = re.compile(r'\s*(?:\w+\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*(?:,\s*|$))*')
COUNTER_SELECTOR = re.compile(r"(ray_scotd_\w+)\s*\{([^}]*)\}")
COUNTER_IN_RATE = re.compile(r"\b(?:rate|increase)\(\s*ray_scotd_\w+\s*\{[^}]*\}\s*\[[^\]]+\]\s*\)")
PANEL_TYPES = {"timeseries", "stat"}

Problems = list[str]


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets(dashboard: dict) -> list[tuple[str, dict]]:
    return [(panel.get("title", f"panel {panel.get('id')}"), target)
            for panel in dashboard.get("panels", []) for target in panel.get("targets", [])]


def exprs(dashboard: dict) -> list[tuple[str, str]]:
    return [(title, target.get("expr", "")) for title, target in targets(dashboard)]


def variable_queries(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            out.append((f"variable {var.get('name')}", query.get("query", "") if isinstance(query, dict) else query))
    return out


def dashboard_model(dashboard: dict) -> Problems:
    """The top-level fields Grafana's import needs, and panels it can draw."""
    problems = []
    if dashboard.get("title") != "scotd":
        problems.append(f"title is {dashboard.get('title')!r}, not 'scotd'")
    if not isinstance(dashboard.get("uid"), str) or not re.fullmatch(r"[\w-]{1,40}", dashboard["uid"]):
        problems.append(f"uid {dashboard.get('uid')!r} is not a string of at most 40 letters, digits, - or _")
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')!r}: datasource refs need 36 or newer")
    if dashboard.get("id") is not None:
        problems.append("id is set: an imported dashboard must not carry another Grafana's database id")
    panels = dashboard.get("panels")
    if not isinstance(panels, list) or not panels:
        return [*problems, "no panels"]
    ids = [panel.get("id") for panel in panels]
    if len(set(ids)) != len(ids) or not all(isinstance(i, int) for i in ids):
        problems.append(f"panel ids are not unique integers: {ids}")
    for panel in panels:
        name = panel.get("title") or f"panel {panel.get('id')}"
        if not panel.get("title"):
            problems.append(f"{name}: no title")
        if panel.get("type") not in PANEL_TYPES:
            problems.append(f"{name}: type {panel.get('type')!r} is not one of {sorted(PANEL_TYPES)}")
        if panel.get("datasource", {}).get("uid") != DATASOURCE_REF:
            problems.append(f"{name}: datasource is not the {DATASOURCE_REF} variable")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy"):
            problems.append(f"{name}: gridPos lacks integer h, w, x, y")
        elif grid["x"] < 0 or grid["y"] < 0 or grid["h"] < 1 or grid["w"] < 1 or grid["x"] + grid["w"] > 24:
            problems.append(f"{name}: gridPos {grid} is outside Grafana's 24-column grid")
        if not panel.get("targets"):
            problems.append(f"{name}: no targets")
        ref_ids = [t.get("refId") for t in panel.get("targets", [])]
        if len(set(ref_ids)) != len(ref_ids) or not all(ref_ids):
            problems.append(f"{name}: target refIds are missing or repeated: {ref_ids}")
        for target in panel.get("targets", []):
            if not isinstance(target.get("expr"), str) or not target["expr"].strip():
                problems.append(f"{name}: a target without an expr")
            if target.get("datasource", {}).get("uid") != DATASOURCE_REF:
                problems.append(f"{name}: a target's datasource is not the {DATASOURCE_REF} variable")
            if "legendFormat" not in target:
                problems.append(f"{name}: a target without legendFormat")
    return problems


def no_overlapping_panels(dashboard: dict) -> Problems:
    """Grafana moves overlapping panels on import: the layout the file shows is the one drawn."""
    cells: dict[tuple[int, int], str] = {}
    problems = []
    for panel in dashboard.get("panels", []):
        g = panel.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy"):
            continue
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problems.append(f"{panel.get('title')} overlaps {cells[(x, y)]}")
                    break
                cells[(x, y)] = panel.get("title")
            else:
                continue
            break
    return problems


def only_exported_metrics(dashboard: dict) -> Problems:
    """Every ``ray_scotd_*`` name anywhere in the file (queries, variables, descriptions) is one scotd exports."""
    unknown = sorted(set(METRIC_NAME.findall(json.dumps(dashboard))) - EXPORTED)
    return [f"{name} is not exported by scotd (scotd.inference.metrics.METRICS)" for name in unknown]


def metrics_covered(dashboard: dict) -> Problems:
    """Every counter scotd exports is drawn, but at most one."""
    queried = {name for _, expr in exprs(dashboard) for name in METRIC_NAME.findall(expr)}
    missing = sorted(EXPORTED - queried)
    return [f"no panel queries {', '.join(missing)}"] if len(missing) > 1 else []


def counters_through_rate(dashboard: dict) -> Problems:
    """A counter's raw value only grows (and restarts with its process): panels draw rate() or increase() of it."""
    problems = []
    for title, expr in exprs(dashboard):
        if len(METRIC_NAME.findall(expr)) != len(COUNTER_IN_RATE.findall(expr)):
            problems.append(f"{title}: a ray_scotd counter outside rate(...[window]) / increase(...[window])")
    return problems


def balanced(expr: str) -> str | None:
    """None when the brackets of a PromQL expression nest properly (quoted strings and Grafana ``${var}`` skipped),
    else what is wrong."""
    text = GRAFANA_VARIABLE.sub("VAR", expr)
    pairs, stack, i = {")": "(", "]": "[", "}": "{"}, [], 0
    while i < len(text):
        ch = text[i]
        if ch in "\"'`":
            end = i + 1
            while end < len(text) and text[end] != ch:
                end += 2 if text[end] == "\\" and ch != "`" else 1
            if end >= len(text):
                return f"unterminated string from position {i}"
            i = end + 1
            continue
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return f"unmatched {ch!r} at position {i}"
        i += 1
    return f"unclosed {''.join(stack)!r}" if stack else None


def promql_well_formed(dashboard: dict) -> Problems:
    problems = []
    for title, expr in [*exprs(dashboard), *variable_queries(dashboard)]:
        if (wrong := balanced(expr)) is not None:
            problems.append(f"{title}: {wrong} in {expr!r}")
            continue
        for name, matchers in COUNTER_SELECTOR.findall(expr):
            if not MATCHERS.fullmatch(matchers):
                problems.append(f"{title}: label matchers of {name} are not label op \"value\": {{{matchers}}}")
    return problems


def template_variables(dashboard: dict) -> Problems:
    """A Prometheus data-source variable (the dashboard imports into any Grafana) and a ``run`` variable of the run
    label's values, which every query filters on."""
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    problems = []
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no 'datasource' variable of type datasource for Prometheus")
    run = variables.get("run", {})
    query = run.get("query", {})
    query = query.get("query", "") if isinstance(query, dict) else query
    if run.get("type") != "query" or not re.fullmatch(r"label_values\(\s*ray_scotd_\w+(\{[^}]*\})?\s*,\s*run\s*\)",
                                                      query or ""):
        problems.append(f"no 'run' variable of label_values(<a ray_scotd counter>, run): {query!r}")
    elif run.get("datasource", {}).get("uid") != DATASOURCE_REF:
        problems.append(f"the run variable's datasource is not the {DATASOURCE_REF} variable")
    used = {m.lstrip("${").rstrip("}").split(":")[0]
            for _, e in [*exprs(dashboard), *variable_queries(dashboard)] for m in GRAFANA_VARIABLE.findall(e)}
    builtin = {name for name in used if name.startswith("__")}
    for name in sorted(used - builtin - set(variables)):
        problems.append(f"a query uses ${name}, which is not a template variable")
    for title, expr in exprs(dashboard):
        if not RUN_VARIABLE.search(expr):
            problems.append(f"{title}: the query does not filter on $run")
    return problems


RULES: dict[str, Callable[[dict], Problems]] = {
    "dashboard_model": dashboard_model,
    "no_overlapping_panels": no_overlapping_panels,
    "only_exported_metrics": only_exported_metrics,
    "metrics_covered": metrics_covered,
    "counters_through_rate": counters_through_rate,
    "promql_well_formed": promql_well_formed,
    "template_variables": template_variables,
}


@pytest.mark.parametrize("rule", RULES)
def test_shipped_dashboard(rule: str) -> None:
    assert RULES[rule](load()) == []


def test_panels_the_guide_promises() -> None:
    """docs/guide.md lists these panels; each draws the counters it names."""
    by_title = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in load()["panels"]}
    expected = {
        "Rationales/s by run": ["ray_scotd_rationales_total"],
        "Generated tokens/s by run": ["ray_scotd_generated_tokens_total"],
        "Prompt tokens/s by run": ["ray_scotd_prompt_tokens_total"],
        "Teacher samples correct": ["ray_scotd_correct_samples_total", "ray_scotd_rationales_total"],
        "Parse failures/s by run": ["ray_scotd_parse_failures_total"],
        "Parse failure share by run": ["ray_scotd_parse_failures_total", "ray_scotd_rationales_total"],
        "Engine busy share by run": ["ray_scotd_engine_busy_seconds_total"],
    }
    for title, metrics in expected.items():
        assert title in by_title, f"no panel {title!r}"
        assert sorted(set(METRIC_NAME.findall(by_title[title]))) == sorted(metrics), title
        assert "sum by (run)" in by_title[title], f"{title}: not drawn per run"


def _first_expr(d: dict) -> dict:
    return d["panels"][0]["targets"][0]


def _set_expr(d: dict, expr: str) -> None:
    _first_expr(d)["expr"] = expr


MUTATIONS: list[tuple[str, Callable[[dict], None], str, str]] = [
    ("only_exported_metrics",
     lambda d: _set_expr(d, _first_expr(d)["expr"].replace("ray_scotd_rationales_total", "ray_scotd_rationale_total")),
     "ray_scotd_rationale_total is not exported", "misspelt-metric"),
    ("only_exported_metrics",
     lambda d: _set_expr(d, 'sum(rate(ray_scotd_rationales{run=~"$run"}[1m]))'),
     "ray_scotd_rationales is not exported", "no-total-suffix"),
    ("metrics_covered",
     lambda d: d.__setitem__("panels", [p for p in d["panels"] if not any(
         m in t["expr"] for t in p["targets"] for m in ("ray_scotd_prompt_tokens", "ray_scotd_engine_busy"))]),
     "no panel queries ray_scotd_engine_busy_seconds_total, ray_scotd_prompt_tokens_total", "two-counters-undrawn"),
    ("counters_through_rate",
     lambda d: _set_expr(d, 'sum(ray_scotd_rationales_total{run=~"$run"})'),
     "outside rate", "raw-counter"),
    ("promql_well_formed",
     lambda d: _set_expr(d, _first_expr(d)["expr"] + ")"), "unmatched ')'", "extra-paren"),
    ("promql_well_formed",
     lambda d: _set_expr(d, _first_expr(d)["expr"][:-1]), "unclosed '('", "missing-paren"),
    ("promql_well_formed",
     lambda d: _set_expr(d, _first_expr(d)["expr"].replace("}[", "[", 1)), "unmatched ')'", "unclosed-brace"),
    ("promql_well_formed",
     lambda d: _set_expr(d, 'sum(rate(ray_scotd_rationales_total{run=~$run}[1m]))'), "label matchers",
     "unquoted-matcher"),
    ("template_variables",
     lambda d: _set_expr(d, 'sum(rate(ray_scotd_rationales_total[1m]))'), "does not filter on $run", "no-run-filter"),
    ("template_variables",
     lambda d: d["templating"].__setitem__("list", [v for v in d["templating"]["list"] if v["name"] != "run"]),
     "no 'run' variable", "run-variable-gone"),
    ("template_variables",
     lambda d: d["templating"].__setitem__("list", [v for v in d["templating"]["list"] if v["name"] != "datasource"]),
     "no 'datasource' variable", "datasource-variable-gone"),
    ("template_variables",
     lambda d: _set_expr(d, _first_expr(d)["expr"].replace("$SessionName", "$session")),
     "uses $session, which is not a template variable", "undefined-variable"),
    ("dashboard_model", lambda d: d["panels"][1].__setitem__("id", d["panels"][0]["id"]), "not unique", "dup-id"),
    ("dashboard_model", lambda d: d["panels"][0].pop("gridPos"), "gridPos lacks", "no-gridpos"),
    ("dashboard_model", lambda d: d["panels"][0].__setitem__("targets", []), "no targets", "no-targets"),
    ("dashboard_model", lambda d: _first_expr(d).pop("expr"), "without an expr", "no-expr"),
    ("dashboard_model", lambda d: d.pop("uid"), "uid", "no-uid"),
    ("dashboard_model", lambda d: d.__setitem__("title", "Ray"), "title", "title"),
    ("dashboard_model", lambda d: d["panels"][0].__setitem__("datasource", {"type": "prometheus", "uid": "abc"}),
     "not the ${datasource} variable", "fixed-datasource"),
    ("no_overlapping_panels", lambda d: d["panels"][1]["gridPos"].update(d["panels"][0]["gridPos"]), "overlaps",
     "overlap"),
]


@pytest.mark.parametrize("rule, mutate, expected", [pytest.param(r, m, e, id=i) for r, m, e, i in MUTATIONS])
def test_rule_catches(rule: str, mutate: Callable[[dict], None], expected: str) -> None:
    broken = copy.deepcopy(load())
    mutate(broken)
    problems = RULES[rule](broken)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("expr, wrong", [
    ('sum(rate(x{a="("}[1m]))', None),
    ('sum(rate(x{a=~"${run:regex}"}[1m]))', None),
    ("sum(rate(x[1m])", "unclosed"),
    ("sum(rate(x[1m)))", "unmatched"),
    ('x{a="b}', "unterminated"),
])
def test_balanced(expr: str, wrong: str | None) -> None:
    result = balanced(expr)
    assert (result is None) if wrong is None else (wrong in (result or "")), result
