"""Report stage: recompute every number from the saved predictions and write report.json + report.md.

Accuracy intervals are Wilson score intervals at 95 % (binomial; sensible at small n and near 0 or 1).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq

from scotd.evaluate import metrics_of

Z95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    if total == 0:
        return (0.0, 0.0)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def build_report(exp_dir: Path, runs: list[dict]) -> dict:
    """``runs``: [{"run": label, "kind": teacher|untrained|label_only|scotd, "model": ...}] in table order."""
    rows = []
    for spec in runs:
        path = exp_dir / "eval" / spec["dir"] / "predictions.parquet"
        preds = pq.read_table(path).to_pylist()
        m = metrics_of(preds)
        low, high = wilson_interval(m["correct"], m["total"])
        by_task: dict[str, list[dict]] = {}
        for p in preds:
            by_task.setdefault(p["task"], []).append(p)
        rows.append({**spec, **m, "ci95": [low, high], "predictions": str(path.relative_to(exp_dir)),
                     "by_task": {t: metrics_of(ps)["accuracy"] for t, ps in sorted(by_task.items())}})
    report = {"experiment": exp_dir.name, "rows": rows}
    corpus_summary = exp_dir / "corpus" / "summary.json"
    if corpus_summary.exists():
        report["corpus"] = json.loads(corpus_summary.read_text())
    timings = exp_dir / "timings.json"
    if timings.exists():
        report["stage_seconds"] = json.loads(timings.read_text())
    return report


def render_markdown(report: dict) -> str:
    lines = [f"# scotd report: {report['experiment']}", "",
             "Greedy accuracy on the evaluation split; 95 % Wilson intervals.", "",
             "| run | kind | model | accuracy | 95 % CI | correct / total | parse failures |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        low, high = r["ci95"]
        lines.append(f"| {r['run']} | {r['kind']} | {r['model']} | {100 * r['accuracy']:.1f} % | "
                     f"{100 * low:.1f}-{100 * high:.1f} | {r['correct']} / {r['total']} | {r['parse_failures']} |")
    corpus = report.get("corpus")
    if corpus:
        lines += ["", "## Corpus", "",
                  f"Setting: {corpus['setting']}. {corpus['samples']} teacher samples for {corpus['questions']} "
                  f"questions; per-sample teacher accuracy {100 * corpus['sample_accuracy']:.1f} %; "
                  f"{corpus['kept']} rationales kept ({corpus['duplicates_removed']} duplicates removed); "
                  f"{100 * corpus['share_questions_with_kept_rationale']:.1f} % of questions have at least one; "
                  f"parse failures {corpus['parse_failures']}."]
    stages = report.get("stage_seconds")
    if stages:
        lines += ["", "## Wall time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in stages.items()]
    lines += ["", "Each row is recomputed from the predictions file named in report.json."]
    return "\n".join(lines) + "\n"


def write_report(exp_dir: Path, runs: list[dict]) -> dict:
    report = build_report(exp_dir, runs)
    (exp_dir / "report.json").write_text(json.dumps(report, indent=2))
    (exp_dir / "report.md").write_text(render_markdown(report))
    return report
