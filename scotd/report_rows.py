"""A report's rows and what it draws from them: one ``ReportRow`` per evaluation run (the ``runs.EvalRun`` with its
results), the paired differences of the SCoTD rows, and the paper's comparisons (methods, the N-curve, corpus
selectors), each like with like."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from scotd.runs import EvalRun
from scotd.scoring import mcnemar_p, paired_bootstrap


@dataclass
class ReportRow:
    """One run's row: ``results`` holds its accuracy, counts, intervals, per-task accuracy and the predictions file
    (``report.build_report``); ``as_dict`` is the row as report.json writes it."""

    run: EvalRun
    results: dict

    @property
    def name(self) -> str:
        return self.run.run

    @property
    def accuracy(self) -> float:
        return self.results["accuracy"]

    @property
    def selector(self) -> str:
        return self.run.selector or "all"

    @property
    def trained(self) -> bool:
        return self.run.student is not None

    @property
    def method(self) -> str | None:
        """teacher, untrained (zero- or k-shot), label-only, greedy CoT, or SCoTD (on every kept rationale); None for
        the ablation rows (N-sweep, selectors), which have tables of their own."""
        kind = self.run.kind
        if kind == "teacher":
            return "teacher"
        if kind == "untrained":
            return f"untrained, {self.run.shots}-shot" if self.run.shots else "untrained, zero-shot"
        if kind == "label_only":
            return "label-only"
        return {"all": "SCoTD", "greedy": "greedy CoT"}.get(self.selector)

    @property
    def n(self) -> int | None:
        """Its point on the N-curve: a SCoTD student on the first N samples of each question, or on all N."""
        if self.run.kind != "scotd" or not self.run.num_samples:
            return None
        return {"first_n": self.run.selector_k, "all": self.run.num_samples}.get(self.selector)

    def label(self, several_settings: bool) -> str | None:
        """``method`` as the tables show it: with its corpus setting when the experiment has both, and its
        self-consistency suffix."""
        method = self.method
        if method is None:
            return None
        if several_settings and self.run.setting:
            method += f" ({self.run.setting})"
        return method + (f" sc@{self.run.samples}" if self.run.samples > 1 else "")

    def group(self, several_settings: bool) -> str:
        """What a study compares like with like within: the student model, its corpus setting when the experiment
        has both, and in a combined report its experiment."""
        label = self.run.model + (f" ({self.run.setting})" if several_settings and self.run.setting else "")
        return f"{self.run.experiment}: {label}" if self.run.experiment else label

    def as_dict(self) -> dict:
        return {**self.run.row(), **self.results}


def several_settings(rows: list[ReportRow]) -> bool:
    return len({r.run.setting for r in rows if r.trained}) > 1


def paired_differences(rows: list[ReportRow], predictions: dict[str, dict[str, bool]]) -> list[dict]:
    """Each main SCoTD row (trained on all kept rationales) against every other row, on the questions both answered.
    Ablation rows (selectors, the N-sweep) are compared with the main rows, not with each other; without a main
    SCoTD row every SCoTD row is compared with the non-SCoTD rows."""
    out = []
    scotd = [r for r in rows if r.run.kind == "scotd"]
    main = [r for r in scotd if r.selector == "all"]
    compared: set[tuple[str, str]] = set()
    for a in main or scotd:
        for b in rows:
            if b is a or (not main and b.run.kind == "scotd") or (b.name, a.name) in compared:
                continue
            compared.add((a.name, b.name))
            pa, pb = predictions[a.name], predictions[b.name]
            shared = sorted(pa.keys() & pb.keys())
            only_a = sum(pa[q] and not pb[q] for q in shared)
            only_b = sum(pb[q] and not pa[q] for q in shared)
            p = mcnemar_p(only_a, only_b)
            low, high = paired_bootstrap([pa[q] for q in shared], [pb[q] for q in shared])
            out.append({"run": a.name, "versus": b.name, "questions": len(shared),
                        "difference": (only_a - only_b) / len(shared) if shared else 0.0,
                        "bootstrap95": [low, high],
                        "only_run_right": only_a, "only_versus_right": only_b, "p_value": p,
                        "within_noise": p >= 0.05})
    return out


def _varied(points: list[dict], key: str) -> list[dict]:
    """The points of the groups in which ``key`` takes more than one value (a group of one compares nothing)."""
    values: dict[str, set] = {}
    for p in points:
        values.setdefault(p["group"], set()).add(p[key])
    return [p for p in points if len(values[p["group"]]) > 1]


SELECTOR_STUDY = ("all", "random", "likelihood", "diverse", "open_ended")


def studies(rows: list[ReportRow]) -> dict:
    """The paper's comparisons, read off the greedy rows. The N-curve and the selectors compare students of one
    group (``ReportRow.group``: model and setting), so a supervised student never appears as a point of the
    few-shot curve:

    - ``n_curve``: accuracy against N for SCoTD students trained on the first N samples (selector first_n) or all;
    - ``selectors``: accuracy per corpus selector (random, likelihood, diverse, open_ended) next to all N, with the
      budget k and the rationales per question each one actually kept;
    - ``methods``: accuracy per method (untrained, label-only, greedy CoT, SCoTD) and student model.
    """
    greedy = [r for r in rows if r.run.samples == 1]
    several = several_settings(greedy)
    n_curve, selectors, methods = [], [], []
    for r in greedy:
        base = {"run": r.name, "kind": r.run.kind, "model": r.run.model, "group": r.group(several),
                "setting": r.run.setting, "accuracy": r.accuracy, "total": r.results["total"],
                "ci95": r.results.get("ci95")}
        if r.n is not None:
            n_curve.append({**base, "n": r.n})
        if r.run.kind == "scotd" and r.selector in SELECTOR_STUDY:
            selectors.append({**base, "selector": r.selector, "k": r.run.selector_k,
                              "kept_per_question": r.results.get("kept_per_question")})
        method = r.label(several) if r.run.kind != "teacher" else None
        if method:
            prefix = f"{r.run.experiment}: " if r.run.experiment else ""
            methods.append({**base, "method": prefix + method})
    n_curve.sort(key=lambda x: (x["group"], x["n"]))
    # two runs of one method and model (say, two learning rates) keep a line each, named by their runs
    clashes = Counter((x["method"], x["model"]) for x in methods)
    methods = [{**x, "method": f"{x['method']} ({x['run']})"} if clashes[(x["method"], x["model"])] > 1 else x
               for x in methods]
    trained = [x for x in methods if x["kind"] != "untrained"]
    return {"n_curve": _varied(n_curve, "n"), "selectors": _varied(selectors, "selector"),
            "methods": methods if len({x["method"] for x in trained}) > 1 or len({x["model"] for x in trained}) > 1
            else []}


def method_by_task(rows: list[ReportRow]) -> list[dict]:
    """Accuracy of each main method row per task: one line per (model, method, run name), so the same run of
    several one-task experiments (the paper configs) fills one line across their tasks."""
    several = several_settings(rows)
    table: dict[tuple, dict] = {}
    for r in rows:
        method = r.label(several)
        if method is None:
            continue
        name = r.run.experiment_run or r.name
        by_task = r.results["by_task"]
        key = (r.run.model, method, name)
        if key in table and table[key]["by_task"].keys() & by_task.keys():
            key += (r.run.experiment,)  # the same task twice (two experiments on one task): a line each
        entry = table.setdefault(key, {"model": r.run.model, "method": method, "run": name, "by_task": {},
                                       "runs": []})
        entry["by_task"].update(by_task)
        entry["runs"].append(r.name)
    lines = [key[:3] for key in table]
    for key, entry in table.items():
        if lines.count(key[:3]) > 1:  # split lines say which experiment's runs they hold
            entry["run"] = ", ".join(entry["runs"])
    return list(table.values())
