"""Report stage: recompute every number from the saved predictions and write report.json, report.md and plots.

Accuracy intervals are Wilson score intervals at 95 % (binomial; sensible at small n and near 0 or 1). Differences
between a SCoTD student and the other rows are tested on the same questions with McNemar's exact test (two-sided
binomial test on the questions where exactly one of the two is right); p >= 0.05 is marked "within noise".

One report covers one experiment folder, or several combined (``combine``: the paper configs are one task per
experiment, so the method x task table needs all of them); every path it names is relative to its own folder.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from scotd.evaluate import metrics_of
from scotd.tasks import answers_match

Z95 = 1.959963984540054


class ReportError(ValueError):
    """A predictions file that cannot be scored as its run's answers to the evaluation split."""


def read_predictions(path: Path, expected: set[str] | None) -> list[dict]:
    """The rows of one run's predictions file, refused (``ReportError`` naming the file) unless it is a Parquet
    file of PREDICTION_SCHEMA with exactly one row per evaluation question: ``expected`` holds the question ids
    (None when the experiment's question file is absent, then only emptiness and repeats are checked)."""
    from scotd.schema import PREDICTION_SCHEMA, read_table

    if not path.is_file():
        raise ReportError(f"{path}: {'a folder, not a predictions file' if path.is_dir() else 'no such file'}; "
                          "remove it and rerun the eval stage (scotd run CONFIG --stages eval,report)")
    try:
        rows = read_table(path, PREDICTION_SCHEMA).to_pylist()
    except Exception as err:  # pyarrow's ArrowInvalid, a missing column, a type that does not cast
        raise ReportError(f"{path}: not a readable predictions file ({str(err).splitlines()[0]}); remove its folder "
                          "and rerun the eval stage") from None
    if not rows:
        raise ReportError(f"{path}: no predictions in it; remove its folder and rerun the eval stage")
    ids = Counter(r["question_id"] for r in rows)
    repeated = [q for q, n in ids.items() if n > 1]
    if repeated:
        raise ReportError(f"{path}: {len(repeated)} question(s) answered more than once (e.g. {repeated[0]!r}); "
                          "remove its folder and rerun the eval stage")
    if expected is not None and set(ids) != expected:
        missing, foreign = expected - set(ids), set(ids) - expected
        raise ReportError(f"{path}: answers {len(ids)} questions, the evaluation split has {len(expected)} ("
                          f"{len(missing)} missing, {len(foreign)} not in it); the file is from another run of "
                          "the experiment: remove its folder and rerun the eval stage")
    return rows


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    if total == 0:
        return (0.0, 0.0)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    # The bounds hold the observed share (at 0 or n right, rounding would put them a hair past it).
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


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
    "extra": only in the checkpoint table}] in table order. The report is written to ``exp_dir``; in a combined
    report each run also names its ``experiment`` and the ``experiment_dir`` its files are in."""
    rows, correct_by_run, expected = [], {}, {}
    for spec in runs:
        root = Path(spec.get("experiment_dir", exp_dir))
        if root not in expected:
            questions = root / "questions" / "eval.parquet"
            expected[root] = (set(pq.read_table(questions, columns=["question_id"]).column(0).to_pylist())
                              if questions.is_file() else None)
        path = root / "eval" / spec["dir"] / "predictions.parquet"
        preds = read_predictions(path, expected[root])
        settings = json.loads((path.parent / "metrics.json").read_text()) if (path.parent / "metrics.json").exists() \
            else {}
        correct_by_run[spec["run"]] = {p["question_id"]: bool(p["correct"]) for p in preds}
        m = metrics_of(preds)
        low, high = wilson_interval(m["correct"], m["total"])
        by_task: dict[str, list[dict]] = {}
        for p in preds:
            by_task.setdefault(p["task"], []).append(p)
        flags = [bool(p["correct"]) for p in sorted(preds, key=lambda p: p["question_id"])]
        row = {**spec, **m, **{k: settings[k] for k in ("max_new_tokens", "repetition_penalty") if k in settings},
               "ci95": [low, high], "bootstrap95": list(bootstrap_interval(flags)),
               "predictions": os.path.relpath(path, exp_dir),
               "by_task": {t: metrics_of(ps)["accuracy"] for t, ps in sorted(by_task.items())}}
        free = [p for p in preds if p["gold_index"] is None and p["gold_answer"] is not None]
        if free:  # free-form answers: lm-eval's flexible extraction beside the strict score
            row["free_form"] = {"questions": len(free), "strict": sum(p["correct"] for p in free) / len(free),
                                "flexible": sum(answers_match(p["flexible_answer"], p["gold_answer"])
                                                for p in free) / len(free)}
        kept = kept_per_question(root, spec) if "student" in spec else None
        if kept is not None:
            row["kept_per_question"] = kept
        rows.append(row)
    main = [r for r in rows if not r.get("extra")]
    combined = any("experiment" in spec for spec in runs)
    by_experiment: dict[str | None, list[dict]] = {}
    for r in main:  # SCoTD rows are compared with rows of their own experiment (the same questions) only
        by_experiment.setdefault(r.get("experiment"), []).append(r)
    report = {"experiment": " + ".join(str(e) for e in by_experiment) if combined else exp_dir.name,
              "rows": main, "extra_rows": [r for r in rows if r.get("extra")],
              "differences": [d for group in by_experiment.values() for d in paired_differences(group, correct_by_run)],
              "studies": studies(main), "method_by_task": method_by_task(main),
              "checkpoints": checkpoint_selection(exp_dir, rows)}
    experiments = {r.get("experiment"): Path(r.get("experiment_dir", exp_dir)) for r in rows}
    report["judge"] = [judged for name, root in experiments.items() for judged in judge_results(exp_dir, root, name)]
    if not combined:
        report.update(experiment_files(exp_dir))
    else:
        report["experiments"] = [{"name": name, "dir": os.path.relpath(root, exp_dir), **experiment_files(root)}
                                 for name, root in experiments.items()]
    return report


def experiment_files(root: Path) -> dict:
    """The corpus summary and stage wall times of one experiment folder, where present."""
    out = {}
    for key, path in (("corpus", root / "corpus" / "summary.json"), ("stage_seconds", root / "timings.json")):
        if path.exists():
            out[key] = json.loads(path.read_text())
    return out


def judge_results(exp_dir: Path, root: Path, experiment: str | None) -> list[dict]:
    """The judge summaries of one experiment folder, each naming its verdicts file; in a combined report the runs
    carry their experiment's name, as in the main table."""
    out = []
    for path in sorted((root / "judge").glob("*/summary.json")):
        summary = {**json.loads(path.read_text()), "verdicts": os.path.relpath(path.with_name("verdicts.parquet"),
                                                                                exp_dir)}
        if experiment is not None:
            summary.update(a=f"{experiment}/{summary['a']}", b=f"{experiment}/{summary['b']}")
        out.append(summary)
    return out


def kept_per_question(root: Path, spec: dict) -> float | None:
    """Rationales per question a SCoTD student actually trained on (questions with at least one): the selection
    ``student_rows`` recorded in the exported student's scotd_student.json, or for selector "all" the corpus of the
    student's setting. None for label-only students and when the files are missing."""
    if spec.get("kind") != "scotd":
        return None
    meta = root / "students" / spec["student"] / "model" / "scotd_student.json"
    selection = json.loads(meta.read_text()).get("selection", {}) if meta.exists() else {}
    if "per_question" in selection:
        return selection["per_question"]
    if spec.get("selector", "all") != "all":
        return None
    main = root / "corpus" / "summary.json"
    summary = json.loads(main.read_text()) if main.exists() else {}
    setting = spec.get("setting") or summary.get("setting")
    if summary.get("setting") != setting:
        other = root / "corpus" / str(setting) / "summary.json"
        summary = json.loads(other.read_text()) if other.exists() else {}
    return summary.get("mean_kept_per_question")


def _several_settings(rows: list[dict]) -> bool:
    return len({r.get("setting") for r in rows if "student" in r}) > 1


def study_group(r: dict, several_settings: bool) -> str:
    """What a study compares like with like within: the student model, its corpus setting when the experiment has
    both, and in a combined report its experiment."""
    label = r["model"] + (f" ({r['setting']})" if several_settings and r.get("setting") else "")
    return f"{r['experiment']}: {label}" if r.get("experiment") else label


def method_label(r: dict, several_settings: bool) -> str | None:
    """A main row's method (teacher, untrained zero- or k-shot, label-only, greedy CoT, SCoTD on all kept
    rationales, with its setting when the experiment has both and its self-consistency suffix); None for the
    ablation rows (N-sweep, selectors), which have tables of their own."""
    selector = r.get("selector", "all")
    if r["kind"] == "teacher":
        label = "teacher"
    elif r["kind"] == "untrained":
        label = f"untrained, {r['shots']}-shot" if r.get("shots") else "untrained, zero-shot"
    elif r["kind"] == "label_only":
        label = "label-only"
    elif selector in ("all", "greedy"):
        label = "SCoTD" if selector == "all" else "greedy CoT"
    else:
        return None
    if several_settings and r.get("setting"):
        label += f" ({r['setting']})"
    return label + (f" {r['run'].rsplit(' ', 1)[1]}" if "sc@" in r["run"] else "")


def _varied(points: list[dict], key: str) -> list[dict]:
    """The points of the groups in which ``key`` takes more than one value (a group of one compares nothing)."""
    values: dict[str, set] = {}
    for p in points:
        values.setdefault(p["group"], set()).add(p[key])
    return [p for p in points if len(values[p["group"]]) > 1]


def studies(rows: list[dict]) -> dict:
    """The paper's comparisons, read off the greedy rows (each student row names its model, method, selector,
    selector_k and setting; ``num_samples`` is the teacher's N, which selector "all" uses). The N-curve and the
    selectors compare students of one group (``study_group``: model and setting), so a supervised student never
    appears as a point of the few-shot curve:

    - ``n_curve``: accuracy against N for SCoTD students trained on the first N samples (selector first_n) or all;
    - ``selectors``: accuracy per corpus selector (random, likelihood, diverse, open_ended) next to all N, with the
      budget k and the rationales per question each one actually kept;
    - ``methods``: accuracy per method (untrained, label-only, greedy CoT, SCoTD) and student model.
    """
    greedy = [r for r in rows if "sc@" not in r["run"]]
    several_settings = _several_settings(greedy)
    n_curve, selectors, methods = [], [], []
    for r in greedy:
        base = {"run": r["run"], "kind": r["kind"], "model": r["model"], "group": study_group(r, several_settings),
                "setting": r.get("setting"), "accuracy": r["accuracy"], "total": r["total"], "ci95": r.get("ci95")}
        selector = r.get("selector", "all")
        if r["kind"] == "scotd" and selector in ("first_n", "all") and r.get("num_samples"):
            n_curve.append({**base, "n": r["selector_k"] if selector == "first_n" else r["num_samples"]})
        if r["kind"] == "scotd" and selector in ("all", "random", "likelihood", "diverse", "open_ended"):
            selectors.append({**base, "selector": selector, "k": r.get("selector_k"),
                              "kept_per_question": r.get("kept_per_question")})
        method = method_label(r, several_settings) if r["kind"] != "teacher" else None
        if method:
            prefix = f"{r['experiment']}: " if r.get("experiment") else ""
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


def method_by_task(rows: list[dict]) -> list[dict]:
    """Accuracy of each main method row per task: one line per (model, method, run name), so the same run of
    several one-task experiments (the paper configs) fills one line across their tasks."""
    several_settings = _several_settings(rows)
    table: dict[tuple, dict] = {}
    for r in rows:
        method = method_label(r, several_settings)
        if method is None:
            continue
        name = r.get("experiment_run", r["run"])
        key = (r["model"], method, name)
        if key in table and table[key]["by_task"].keys() & r["by_task"].keys():
            key += (r.get("experiment"),)  # the same task twice (two experiments on one task): a line each
        entry = table.setdefault(key, {"model": r["model"], "method": method, "run": name, "by_task": {}, "runs": []})
        entry["by_task"].update(r["by_task"])
        entry["runs"].append(r["run"])
    lines = [key[:3] for key in table]
    for key, entry in table.items():
        if lines.count(key[:3]) > 1:  # split lines say which experiment's runs they hold
            entry["run"] = ", ".join(entry["runs"])
    return list(table.values())


def checkpoint_selection(exp_dir: Path, rows: list[dict]) -> list[dict]:
    """Per trained student: dev accuracy by epoch, the best and last epochs, which one the main table shows and the
    evaluation accuracy of each checkpoint that was evaluated."""
    out = []
    for r in rows:
        if r.get("extra") or "student" not in r:
            continue
        path = Path(r.get("experiment_dir", exp_dir)) / "students" / r["student"] / "checkpoints.json"
        chosen = json.loads(path.read_text()) if path.exists() else {}
        accuracy = {r["checkpoint"]: r["accuracy"]}
        accuracy.update({x["checkpoint"]: x["accuracy"] for x in rows
                         if x.get("extra") and x.get("student") == r["student"] and "sc@" not in x["run"]
                         and x.get("experiment") == r.get("experiment")})
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
                     f"{r['correct']} / {r['total']} | {failures_cell(r)} |")
    lines += budget_lines(report["rows"])
    free = [r for r in report["rows"] if "free_form" in r]
    if free:
        lines += ["", "Free-form answers: strict reads the number after the answer phrase (the accuracy above); "
                  "flexible reads the last number of the text (lm-eval's strict-match and flexible-extract).", "",
                  "| run | free-form questions | strict | flexible |", "|---|---|---|---|"]
        lines += [f"| {r['run']} | {r['free_form']['questions']} | {100 * r['free_form']['strict']:.1f} % | "
                  f"{100 * r['free_form']['flexible']:.1f} % |" for r in free]
    tasks = sorted({t for r in report["rows"] for t in r["by_task"]})
    if len(tasks) > 1:
        lines += ["", "## By task", "", "Accuracy per task (contrast sets and held-out tasks are tasks of their own).", "",
                  "| run | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        for r in report["rows"]:
            cells = [f"{100 * r['by_task'][t]:.1f} %" if t in r["by_task"] else "" for t in tasks]
            lines.append(f"| {r['run']} | " + " | ".join(cells) + " |")
    if len(tasks) > 1 and report.get("method_by_task"):
        lines += ["", "## Method by task", "",
                  "Accuracy of each method per task (the ablations have tables of their own below); in a combined "
                  "report one line gathers the run of that name from every experiment.", "",
                  "| model | method | run | " + " | ".join(tasks) + " |", "|---|---|---|" + "---|" * len(tasks)]
        for x in report["method_by_task"]:
            cells = [f"{100 * x['by_task'][t]:.1f} %" if t in x["by_task"] else "" for t in tasks]
            lines.append(f"| {x['model']} | {x['method']} | {x['run']} | " + " | ".join(cells) + " |")
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
        if report.get("chart_methods"):
            lines += ["", f"![accuracy by method and student model]({report['chart_methods']})"]
    if study.get("n_curve"):
        lines += ["", "## Rationales per question (N-curve)", "",
                  "SCoTD students trained on the first N samples of each question (after filtering), compared within "
                  "one student model and corpus setting.", "",
                  "| student | N | run | accuracy |", "|---|---|---|---|"]
        lines += [f"| {x['group']} | {x['n']} | {x['run']} | {100 * x['accuracy']:.1f} % |" for x in study["n_curve"]]
        if report.get("chart_n_curve"):
            lines += ["", f"![accuracy against N]({report['chart_n_curve']})"]
    if study.get("selectors"):
        lines += ["", "## Corpus selectors", "",
                  "Same sampled corpus, different rationales kept per question, compared within one student model and "
                  "corpus setting. Budget k: rationales per question (open_ended: on average); 'kept per question': "
                  "what the selector actually kept per question that had any (fewer where a question had fewer "
                  "than its budget).", "",
                  "| student | selector | budget k | kept per question | run | accuracy |", "|---|---|---|---|---|---|"]
        for x in study["selectors"]:
            kept = x.get("kept_per_question")
            lines.append(f"| {x['group']} | {x['selector']} | {x['k'] if x['selector'] != 'all' else 'all'} | "
                         f"{'' if kept is None else f'{kept:.2f}'} | {x['run']} | {100 * x['accuracy']:.1f} % |")
        if report.get("chart_selectors"):
            lines += ["", f"![accuracy by selector]({report['chart_selectors']})"]
    if report.get("judge"):
        lines += ["", "## Rationale quality (pairwise judge)", "",
                  "The judge compared the two runs' rationales for each question both answered with one, shown in a "
                  "random order; sign test on the pairs it did not call a tie. The same pairs are in "
                  "judge/<a>__vs__<b>/annotate.jsonl for people to rate blind (key.jsonl says which run is A).", "",
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
        lines += ["", "## Corpus", "", corpus_line(corpus)]
    stages = report.get("stage_seconds")
    if stages:
        lines += ["", "## Wall time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in stages.items()]
    if report.get("experiments"):
        lines += ["", "## Experiments", "", "| experiment | folder | corpus | wall time |", "|---|---|---|---|"]
        for e in report["experiments"]:
            seconds = sum(e.get("stage_seconds", {}).values())
            lines.append(f"| {e['name']} | {e['dir']} | {corpus_line(e['corpus']) if e.get('corpus') else ''} | "
                         f"{f'{seconds:.0f} s' if seconds else ''} |")
    lines += ["", "## Sources", "",
              "Every accuracy above is recomputed from the predictions file of its run (paths relative to this "
              "report's folder); the judge's counts from its verdicts file.", "",
              "| run | predictions file |", "|---|---|"]
    lines += [f"| {r['run']} | {r['predictions']} |" for r in report["rows"] + report.get("extra_rows", [])]
    lines += [f"| judge: {j['a']} vs {j['b']} | {j['verdicts']} |" for j in report.get("judge", []) if "verdicts" in j]
    return "\n".join(lines) + "\n"


def failures_cell(r: dict) -> str:
    """Parse failures of a run, with those cut at the token budget named apart (the budget, not the model)."""
    cut = r.get("cut_at_limit", 0)
    return f"{r['parse_failures']} ({cut} cut at the limit)" if cut else str(r["parse_failures"])


def budget_lines(rows: list[dict], share: float = 0.05) -> list[str]:
    """The answers' token budget and repetition penalty, and a warning for each run with more than ``share`` of
    its answers cut at the budget."""
    budgets = sorted({r["max_new_tokens"] for r in rows if r.get("max_new_tokens")})
    penalties = sorted({r.get("repetition_penalty", 1.0) for r in rows})
    lines = []
    if budgets:
        off = " (off)" if penalties == [1.0] else ""
        lines += ["", f"Answers: at most {' / '.join(map(str, budgets))} new tokens (eval.max_new_tokens); repetition "
                  f"penalty {' / '.join(map(str, penalties))}{off} (eval.repetition_penalty)."]
    for r in rows:
        if r["total"] and r.get("cut_at_limit", 0) / r["total"] > share:
            lines += ["", f"**Cut at the token limit:** {r['run']}: {100 * r['cut_at_limit'] / r['total']:.1f} % of "
                      "its answers stopped at eval.max_new_tokens before an answer; its accuracy measures the budget: "
                      "raise eval.max_new_tokens (or set eval.repetition_penalty where answers loop)."]
    return lines


def corpus_line(corpus: dict) -> str:
    return (f"Setting: {corpus['setting']}. {corpus['samples']} teacher samples for {corpus['questions']} "
            f"questions; per-sample teacher accuracy {100 * corpus['sample_accuracy']:.1f} %; "
            f"{corpus['kept']} rationales kept ({corpus['duplicates_removed']} duplicates removed); "
            f"{100 * corpus['share_questions_with_kept_rationale']:.1f} % of questions have at least one; "
            f"parse failures {corpus['parse_failures']}"
            + (f" ({cut} cut at teacher.max_new_tokens)" if (cut := corpus.get("parse_failures_by_reason", {})
                                                              .get("cut_at_limit")) else "") + ".")


def write_report(exp_dir: Path, runs: list[dict]) -> dict:
    """Build the report of ``runs`` (see ``build_report``) and write report.json, report.md and the plots into
    ``exp_dir``."""
    from scotd.plots import plot_accuracy, plot_study

    exp_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(exp_dir, runs)
    if report["rows"]:
        plot_accuracy(report, exp_dir / "report.png")
        report["chart"] = "report.png"
    study = report["studies"]
    if study["methods"]:
        plot_study(study["methods"], "method", exp_dir / "report-methods.png",
                   "accuracy by method and student model", series="model")
        report["chart_methods"] = "report-methods.png"
    if study["n_curve"]:
        plot_study(study["n_curve"], "n", exp_dir / "report-n-curve.png", "accuracy against N")
        report["chart_n_curve"] = "report-n-curve.png"
    if study["selectors"]:
        plot_study(study["selectors"], "selector", exp_dir / "report-selectors.png", "accuracy by corpus selector")
        report["chart_selectors"] = "report-selectors.png"
    (exp_dir / "report.json").write_text(json.dumps(report, indent=2))
    (exp_dir / "report.md").write_text(render_markdown(report))
    return report


def combine(out_dir: Path, experiments: list[tuple[Path, list[dict]]]) -> dict:
    """One report, written to ``out_dir``, of the runs of several experiment folders: ``experiments`` holds each
    folder with its runs (as ``write_report`` takes them). Each run is labelled ``<folder name>/<run>``; SCoTD rows
    are compared with rows of their own experiment; the method x task table gathers runs of the same name."""
    names = [folder.name for folder, _ in experiments]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment folders need distinct names to label their runs, got {names}")
    runs = []
    for folder, specs in experiments:
        for spec in specs:
            runs.append({**spec, "run": f"{folder.name}/{spec['run']}", "experiment": folder.name,
                         "experiment_run": spec["run"], "experiment_dir": str(folder.resolve())})
    return write_report(out_dir, runs)
