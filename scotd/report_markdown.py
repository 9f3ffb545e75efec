"""report.md: the report's tables and notes as Markdown, from the report dict (``scotd.report.build_report``)."""

from __future__ import annotations

def render_markdown(report: dict) -> str:
    """report.md: each section of ``SECTIONS`` in turn (a section with nothing to show adds no lines)."""
    return "\n".join(line for section in SECTIONS for line in section(report)) + "\n"


def _main_table(report: dict) -> list[str]:
    """The title and the main table: each run's accuracy with its intervals."""
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
    return lines


def _free_form(report: dict) -> list[str]:
    """Strict and flexible scores of free-form answers."""
    lines: list[str] = []
    free = [r for r in report["rows"] if "free_form" in r]
    if free:
        lines += ["", "Free-form answers: strict reads the number after the answer phrase (the accuracy above); "
                  "flexible reads the last number of the text (lm-eval's strict-match and flexible-extract).", "",
                  "| run | free-form questions | strict | flexible |", "|---|---|---|---|"]
        lines += [f"| {r['run']} | {r['free_form']['questions']} | {100 * r['free_form']['strict']:.1f} % | "
                  f"{100 * r['free_form']['flexible']:.1f} % |" for r in free]
    return lines


def _by_task(report: dict) -> list[str]:
    """Accuracy per task, and of each method per task, where there are several tasks."""
    lines: list[str] = []
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
    return lines


def _chart(report: dict) -> list[str]:
    """The accuracy chart."""
    lines: list[str] = []
    if report.get("chart"):
        lines += ["", f"![accuracy by run]({report['chart']})"]
    return lines


def _differences(report: dict) -> list[str]:
    """SCoTD rows against the others: paired differences and McNemar's test."""
    lines: list[str] = []
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
    return lines


def _methods(report: dict) -> list[str]:
    """Accuracy by method and student model."""
    study = report.get("studies", {})
    lines: list[str] = []
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
    return lines


def _n_curve(report: dict) -> list[str]:
    """The N-curve: accuracy against rationales per question."""
    study = report.get("studies", {})
    lines: list[str] = []
    if study.get("n_curve"):
        lines += ["", "## Rationales per question (N-curve)", "",
                  "SCoTD students trained on the first N samples of each question (after filtering), compared within "
                  "one student model and corpus setting.", "",
                  "| student | N | run | accuracy |", "|---|---|---|---|"]
        lines += [f"| {x['group']} | {x['n']} | {x['run']} | {100 * x['accuracy']:.1f} % |" for x in study["n_curve"]]
        if report.get("chart_n_curve"):
            lines += ["", f"![accuracy against N]({report['chart_n_curve']})"]
    return lines


def _selectors(report: dict) -> list[str]:
    """Accuracy by corpus selector."""
    study = report.get("studies", {})
    lines: list[str] = []
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
    return lines


def _judge(report: dict) -> list[str]:
    """The pairwise judge's verdicts."""
    lines: list[str] = []
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
    return lines


def _trained_on(report: dict) -> list[str]:
    """What each student trained on: sequences, distinct rationales, tokens."""
    lines: list[str] = []
    selection = [c for c in report.get("checkpoints", []) if c["samples"] == 1]
    trained = [c for c in selection if c.get("seen")]
    if trained:
        lines += ["", "## What each student trained on", "",
                  "All workers together: sequences and tokens (prompt and target, padding not counted) over every "
                  "epoch, and the distinct (question, rationale) pairs among them; an epoch visits every question "
                  "once with one of its rationales drawn ('question') or every kept rationale ('rationale').", "",
                  "| student | epochs | each epoch | sequences | distinct rationales | tokens | ended by |",
                  "|---|---|---|---|---|---|---|"]
        for c in trained:
            seen = c["seen"]
            count = lambda v: "?" if v is None else f"{v:,}"  # noqa: E731
            lines.append(f"| {c['run']} | {seen['epochs']} | {seen['each_epoch']} | {count(seen['sequences'])} | "
                         f"{count(seen['distinct_rationales'])} | {count(seen['tokens'])} | {seen['ended_by']} |")
    return lines


def _checkpoints(report: dict) -> list[str]:
    """Dev accuracy per epoch and the checkpoint shown."""
    selection = [c for c in report.get("checkpoints", []) if c["samples"] == 1]
    lines: list[str] = []
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
    return lines


def _corpus(report: dict) -> list[str]:
    """The corpus counts and the teacher's cost per kept rationale."""
    lines: list[str] = []
    corpus = report.get("corpus")
    if corpus:
        lines += ["", "## Corpus", "", corpus_line(corpus)]
        teacher_s = report.get("stage_seconds", {}).get("teacher")
        if corpus.get("tokens_per_kept_rationale") and corpus.get("kept"):
            lines.append("")
            lines.append(f"The teacher's cost per kept rationale: {corpus['tokens_per_kept_rationale']:.0f} generated "
                         "tokens" + (f", {teacher_s / corpus['kept']:.2f} s of the teacher stage" if teacher_s else "")
                         + f" ({corpus['samples_per_question']:.2f} samples per question).")
    return lines


def _timings(report: dict) -> list[str]:
    """Wall time per stage, and the experiments of a combined report."""
    lines: list[str] = []
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
    return lines


def _sources(report: dict) -> list[str]:
    """The file each figure is recomputed from."""
    lines: list[str] = []
    lines += ["", "## Sources", "",
              "Every accuracy above is recomputed from the predictions file of its run (paths relative to this "
              "report's folder); the judge's counts from its verdicts file.", "",
              "| run | predictions file |", "|---|---|"]
    lines += [f"| {r['run']} | {r['predictions']} |" for r in report["rows"] + report.get("extra_rows", [])]
    lines += [f"| judge: {j['a']} vs {j['b']} | {j['verdicts']} |" for j in report.get("judge", []) if "verdicts" in j]
    return lines


SECTIONS = (_main_table, _free_form, _by_task, _chart, _differences, _methods, _n_curve, _selectors, _judge,
            _trained_on, _checkpoints, _corpus, _timings, _sources)


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
            f"{corpus['kept']} rationales kept ({corpus['duplicates_removed']} duplicates removed)"
            + (f", {d['distinct_per_question']:.2f} distinct per question ({100 * d['duplicate_share']:.0f} % of "
               f"the samples that passed the filter repeated another)" if (d := corpus.get("diversity")) else "")
            + "; "
            f"{100 * corpus['share_questions_with_kept_rationale']:.1f} % of questions have at least one; "
            f"parse failures {corpus['parse_failures']}"
            + (f" ({cut} cut at teacher.max_new_tokens)" if (cut := corpus.get("parse_failures_by_reason", {})
                                                              .get("cut_at_limit")) else "") + ".")
