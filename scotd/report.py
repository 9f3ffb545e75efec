"""Report stage: recompute every number from the saved predictions and write report.json, report.md and a bar chart.

Accuracy intervals are Wilson score intervals at 95 % (binomial; sensible at small n and near 0 or 1). Differences
between a SCoTD student and the other rows are tested on the same questions with McNemar's exact test (two-sided
binomial test on the questions where exactly one of the two is right); p >= 0.05 is marked "within noise".
"""

from __future__ import annotations

import json
import math
import random
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


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (questions only one of two models got right)."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    k = min(only_first, only_second)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_interval(flags: list[bool], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of an accuracy from per-question correctness (resampling questions)."""
    if not flags:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(flags)
    stats = sorted(sum(flags[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return (stats[int(0.025 * resamples)], stats[int(0.975 * resamples) - 1])


def paired_bootstrap(a: list[bool], b: list[bool], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of accuracy(a) - accuracy(b), resampling the shared questions."""
    if not a:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(a)
    diffs = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        diffs.append(sum(a[i] - b[i] for i in picks) / n)
    diffs.sort()
    return (diffs[int(0.025 * resamples)], diffs[int(0.975 * resamples) - 1])


def paired_differences(rows: list[dict], predictions: dict[str, dict[str, bool]]) -> list[dict]:
    """Each main SCoTD row (trained on all kept rationales) against every other row, on the questions both answered.
    Ablation rows (selectors, the N-sweep) are compared with the main rows, not with each other; without a main
    SCoTD row every SCoTD row is compared with the non-SCoTD rows."""
    out = []
    scotd = [r for r in rows if r["kind"] == "scotd"]
    main = [r for r in scotd if r.get("selector", "all") == "all"]
    compared: set[tuple[str, str]] = set()
    for a in main or scotd:
        for b in rows:
            if b is a or (not main and b["kind"] == "scotd") or (b["run"], a["run"]) in compared:
                continue
            compared.add((a["run"], b["run"]))
            pa, pb = predictions[a["run"]], predictions[b["run"]]
            shared = sorted(pa.keys() & pb.keys())
            only_a = sum(pa[q] and not pb[q] for q in shared)
            only_b = sum(pb[q] and not pa[q] for q in shared)
            p = mcnemar_p(only_a, only_b)
            low, high = paired_bootstrap([pa[q] for q in shared], [pb[q] for q in shared])
            out.append({"run": a["run"], "versus": b["run"], "questions": len(shared),
                        "difference": (only_a - only_b) / len(shared) if shared else 0.0,
                        "bootstrap95": [low, high],
                        "only_run_right": only_a, "only_versus_right": only_b, "p_value": p,
                        "within_noise": p >= 0.05})
    return out


def build_report(exp_dir: Path, runs: list[dict]) -> dict:
    """``runs``: [{"run": label, "kind": teacher|untrained|label_only|scotd, "model": ..., "dir": eval folder,
    "extra": only in the checkpoint table}] in table order."""
    rows, correct_by_run = [], {}
    for spec in runs:
        path = exp_dir / "eval" / spec["dir"] / "predictions.parquet"
        preds = pq.read_table(path).to_pylist()
        correct_by_run[spec["run"]] = {p["question_id"]: bool(p["correct"]) for p in preds}
        m = metrics_of(preds)
        low, high = wilson_interval(m["correct"], m["total"])
        by_task: dict[str, list[dict]] = {}
        for p in preds:
            by_task.setdefault(p["task"], []).append(p)
        flags = [bool(p["correct"]) for p in sorted(preds, key=lambda p: p["question_id"])]
        rows.append({**spec, **m, "ci95": [low, high], "bootstrap95": list(bootstrap_interval(flags)),
                     "predictions": str(path.relative_to(exp_dir)),
                     "by_task": {t: metrics_of(ps)["accuracy"] for t, ps in sorted(by_task.items())}})
    main = [r for r in rows if not r.get("extra")]
    report = {"experiment": exp_dir.name, "rows": main, "extra_rows": [r for r in rows if r.get("extra")],
              "differences": paired_differences(main, correct_by_run), "studies": studies(main),
              "checkpoints": checkpoint_selection(exp_dir, rows)}
    report["judge"] = [json.loads(p.read_text()) for p in sorted((exp_dir / "judge").glob("*/summary.json"))]
    corpus_summary = exp_dir / "corpus" / "summary.json"
    if corpus_summary.exists():
        report["corpus"] = json.loads(corpus_summary.read_text())
    timings = exp_dir / "timings.json"
    if timings.exists():
        report["stage_seconds"] = json.loads(timings.read_text())
    return report


def studies(rows: list[dict]) -> dict:
    """The paper's comparisons, read off the greedy student rows (each row names its model, method, selector and
    selector_k; ``num_samples`` is the teacher's N, which selector "all" uses):

    - ``n_curve``: accuracy against N for SCoTD students trained on the first N samples (selector first_n) or all;
    - ``selectors``: accuracy per corpus selector (random, likelihood, diverse, open_ended) next to all N;
    - ``methods``: accuracy per method (label-only, greedy CoT, SCoTD) and student model.
    """
    students = [r for r in rows if "student" in r and "sc@" not in r["run"]]
    several_settings = len({r.get("setting") for r in students}) > 1
    n_curve, selectors, methods = [], [], []
    for r in students:
        base = {"run": r["run"], "model": r["model"], "accuracy": r["accuracy"], "total": r["total"]}
        selector = r.get("selector", "all")
        if r["kind"] == "scotd" and selector in ("first_n", "all") and r.get("num_samples"):
            n_curve.append({**base, "n": r["selector_k"] if selector == "first_n" else r["num_samples"]})
        if r["kind"] == "scotd" and selector in ("all", "random", "likelihood", "diverse", "open_ended"):
            selectors.append({**base, "selector": selector, "k": r.get("selector_k")})
        if r["kind"] == "label_only" or selector in ("all", "greedy"):
            method = {"label_only": "label-only", "scotd": "greedy CoT" if selector == "greedy" else "SCoTD"}
            suffix = f" ({r['setting']})" if several_settings and r.get("setting") else ""
            methods.append({**base, "method": method[r["kind"]] + suffix})
    n_curve.sort(key=lambda x: (x["model"], x["n"]))
    return {"n_curve": n_curve if len({x["n"] for x in n_curve}) > 1 else [],
            "selectors": selectors if len({x["selector"] for x in selectors}) > 1 else [],
            "methods": methods if len({x["method"] for x in methods}) > 1 or len({x["model"] for x in methods}) > 1
            else []}


def checkpoint_selection(exp_dir: Path, rows: list[dict]) -> list[dict]:
    """Per trained student: dev accuracy by epoch, the best and last epochs, which one the main table shows and the
    evaluation accuracy of each checkpoint that was evaluated."""
    out = []
    for r in rows:
        if r.get("extra") or "student" not in r:
            continue
        path = exp_dir / "students" / r["student"] / "checkpoints.json"
        chosen = json.loads(path.read_text()) if path.exists() else {}
        accuracy = {r["checkpoint"]: r["accuracy"]}
        accuracy.update({x["checkpoint"]: x["accuracy"] for x in rows
                         if x.get("extra") and x.get("student") == r["student"] and "sc@" not in x["run"]})
        out.append({"run": r["run"], "shown": r["checkpoint"], "last_epoch": chosen.get("last_epoch"),
                    "best_epoch": chosen.get("best_epoch"), "dev_questions": chosen.get("dev_questions", 0),
                    "dev": chosen.get("dev", []), "eval_accuracy": accuracy})
    return out


def render_markdown(report: dict) -> str:
    lines = [f"# scotd report: {report['experiment']}", "",
             "Greedy accuracy on the evaluation split; 95 % intervals: Wilson score and percentile bootstrap "
             "(2,000 resamples of the questions).", "",
             "| run | kind | model | accuracy | 95 % CI | bootstrap 95 % | correct / total | parse failures |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        low, high = r["ci95"]
        b_low, b_high = r.get("bootstrap95", (0.0, 0.0))
        lines.append(f"| {r['run']} | {r['kind']} | {r['model']} | {100 * r['accuracy']:.1f} % | "
                     f"{100 * low:.1f}-{100 * high:.1f} | {100 * b_low:.1f}-{100 * b_high:.1f} | "
                     f"{r['correct']} / {r['total']} | {r['parse_failures']} |")
    tasks = sorted({t for r in report["rows"] for t in r["by_task"]})
    if len(tasks) > 1:
        lines += ["", "## By task", "", "Accuracy per task (contrast sets and held-out tasks are tasks of their own).", "",
                  "| run | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        for r in report["rows"]:
            cells = [f"{100 * r['by_task'][t]:.1f} %" if t in r["by_task"] else "" for t in tasks]
            lines.append(f"| {r['run']} | " + " | ".join(cells) + " |")
    if report.get("chart"):
        lines += ["", f"![accuracy by run]({report['chart']})"]
    differences = report.get("differences")
    if differences:
        lines += ["", "## SCoTD against the other rows", "",
                  "Same questions; McNemar's exact test on the questions only one of the two got right, and a "
                  "paired bootstrap interval of the difference.", "",
                  "| SCoTD run | versus | difference | bootstrap 95 % | only SCoTD right | only other right | p | |",
                  "|---|---|---|---|---|---|---|---|"]
        for d in differences:
            b_low, b_high = d.get("bootstrap95", (0.0, 0.0))
            lines.append(f"| {d['run']} | {d['versus']} | {100 * d['difference']:+.1f} points | "
                         f"{100 * b_low:+.1f} to {100 * b_high:+.1f} | {d['only_run_right']} "
                         f"| {d['only_versus_right']} | {d['p_value']:.3f} | "
                         f"{'within noise' if d['within_noise'] else 'significant'} |")
    study = report.get("studies", {})
    if study.get("methods"):
        models = list(dict.fromkeys(x["model"] for x in study["methods"]))
        names = list(dict.fromkeys(x["method"] for x in study["methods"]))
        cell = {(x["method"], x["model"]): x["accuracy"] for x in study["methods"]}
        lines += ["", "## Method by student model", "", "| method | " + " | ".join(models) + " |",
                  "|---|" + "---|" * len(models)]
        lines += [f"| {m} | " + " | ".join(f"{100 * cell[(m, mo)]:.1f} %" if (m, mo) in cell else ""
                                          for mo in models) + " |" for m in names]
    if study.get("n_curve"):
        lines += ["", "## Rationales per question (N-curve)", "",
                  "SCoTD students trained on the first N samples of each question (after filtering).", "",
                  "| model | N | run | accuracy |", "|---|---|---|---|"]
        lines += [f"| {x['model']} | {x['n']} | {x['run']} | {100 * x['accuracy']:.1f} % |" for x in study["n_curve"]]
        if report.get("chart_n_curve"):
            lines += ["", f"![accuracy against N]({report['chart_n_curve']})"]
    if study.get("selectors"):
        lines += ["", "## Corpus selectors", "", "Same sampled corpus, different rationales kept per question.", "",
                  "| model | selector | k | run | accuracy |", "|---|---|---|---|---|"]
        lines += [f"| {x['model']} | {x['selector']} | {x['k'] if x['selector'] != 'all' else 'all'} | {x['run']} | "
                  f"{100 * x['accuracy']:.1f} % |" for x in study["selectors"]]
        if report.get("chart_selectors"):
            lines += ["", f"![accuracy by selector]({report['chart_selectors']})"]
    if report.get("judge"):
        lines += ["", "## Rationale quality (pairwise judge)", "",
                  "The judge compared the two runs' rationales for each question both answered with one, shown in a "
                  "random order; sign test on the pairs it did not call a tie. The same pairs are in "
                  "judge/<a>__vs__<b>/pairs.jsonl for people to rate.", "",
                  "| run a | run b | judge | pairs | a better | b better | ties | unparsed | p | |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for j in report["judge"]:
            lines.append(f"| {j['a']} | {j['b']} | {j['judge']} | {j['pairs']} | {j['wins_a']} | {j['wins_b']} | "
                         f"{j['ties']} | {j['unparsed']} | {j['p_value']:.3f} | "
                         f"{'within noise' if j['within_noise'] else 'significant'} |")
    selection = [c for c in report.get("checkpoints", []) if "sc@" not in c["run"]]
    if any(c["dev"] for c in selection):
        lines += ["", "## Checkpoint selection", "",
                  "Each student's dev accuracy (greedy, on questions held out of training) after every epoch; the "
                  "main table shows the checkpoint named in 'shown' (config eval.checkpoint). Ties go to fewer parse "
                  "failures, then to the later epoch.", "",
                  "| student | dev accuracy by epoch | best epoch | last epoch | shown | eval accuracy, best | "
                  "eval accuracy, last |", "|---|---|---|---|---|---|---|"]
        for c in selection:
            by_epoch = ", ".join(f"{d['epoch']}: {100 * d['dev_accuracy']:.1f} %" for d in c["dev"])
            acc = c["eval_accuracy"]
            same = c["best_epoch"] == c["last_epoch"]
            best = acc.get("best", acc.get("last") if same else None)
            last = acc.get("last", acc.get("best") if same else None)
            cell = lambda v: "not evaluated" if v is None else f"{100 * v:.1f} %"  # noqa: E731
            lines.append(f"| {c['run']} | {by_epoch} (n={c['dev_questions']}) | {c['best_epoch']} | "
                         f"{c['last_epoch']} | {c['shown']} | {cell(best)} | {cell(last)} |")
    else:
        lines += ["", "Students are shown at their last checkpoint (no dev split configured: tasks[].max_dev)."]
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


def plot_accuracy(report: dict, path: Path) -> None:
    """Bar chart of accuracy per run with the 95 % intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    colours = {"teacher": "#4c72b0", "untrained": "#8c8c8c", "label_only": "#dd8452", "scotd": "#55a868"}
    acc = [100 * r["accuracy"] for r in rows]
    err = [[a - 100 * r["ci95"][0] for a, r in zip(acc, rows)], [100 * r["ci95"][1] - a for a, r in zip(acc, rows)]]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(rows)), 3.6))
    ax.bar(range(len(rows)), acc, yerr=err, capsize=4, color=[colours.get(r["kind"], "#937860") for r in rows])
    ax.set_xticks(range(len(rows)), [r["run"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%), 95 % CI")
    ax.set_ylim(0, 100)
    ax.set_title(f"{report['experiment']}: {rows[0]['total'] if rows else 0} evaluation questions", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_study(points: list[dict], x: str, path: Path, title: str) -> None:
    """Accuracy against ``x`` (N: a line per student model; selector: grouped bars per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    models = list(dict.fromkeys(p["model"] for p in points))
    if x == "n":
        for model in models:
            mine = sorted((p for p in points if p["model"] == model), key=lambda p: p["n"])
            ax.plot([p["n"] for p in mine], [100 * p["accuracy"] for p in mine], marker="o", label=model)
        ax.set_xlabel("rationales per question (N)")
    else:
        keys = list(dict.fromkeys(p[x] for p in points))
        width = 0.8 / len(models)
        for m, model in enumerate(models):
            acc = {p[x]: 100 * p["accuracy"] for p in points if p["model"] == model}
            ax.bar([k + m * width for k in range(len(keys))], [acc.get(key, 0.0) for key in keys], width, label=model)
        ax.set_xticks([k + width * (len(models) - 1) / 2 for k in range(len(keys))], keys, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(exp_dir: Path, runs: list[dict]) -> dict:
    report = build_report(exp_dir, runs)
    if report["rows"]:
        plot_accuracy(report, exp_dir / "report.png")
        report["chart"] = "report.png"
    if report["studies"]["n_curve"]:
        plot_study(report["studies"]["n_curve"], "n", exp_dir / "report-n-curve.png", "accuracy against N")
        report["chart_n_curve"] = "report-n-curve.png"
    if report["studies"]["selectors"]:
        plot_study(report["studies"]["selectors"], "selector", exp_dir / "report-selectors.png",
                   "accuracy by corpus selector")
        report["chart_selectors"] = "report-selectors.png"
    (exp_dir / "report.json").write_text(json.dumps(report, indent=2))
    (exp_dir / "report.md").write_text(render_markdown(report))
    return report
