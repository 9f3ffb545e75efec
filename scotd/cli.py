"""``scotd`` command line: run an experiment (all stages or some), rebuild a report, describe the config."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from scotd import console, layout
from scotd.assets import AssetIntegrityError, MissingAssetError
from scotd.config import ConfigError, describe, load_config
from scotd.judge import AnnotationError
from scotd.report import ReportError
from scotd.schema import CorruptFileError
from scotd.stages import NAMES
from scotd.storage import redact
from scotd.tasks import TaskDataError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scotd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment: scotd run CONFIG [key.sub=value ...]")
    run.add_argument("config", type=Path)
    run.add_argument("overrides", nargs="*", help="config overrides, e.g. teacher.num_samples=4")
    run.add_argument("--stages", default="", help=f"comma-separated subset of: {','.join(NAMES)}")
    run.add_argument("--debug", action="store_true", help="show the traceback of a data error too")
    run.add_argument("--restart", metavar="STAGE", help="first remove the outputs of STAGE and of every later stage "
                     f"({', '.join(NAMES)}), so they are built again from this config")
    rep = sub.add_parser("report", help="rebuild report.json/report.md of a finished experiment folder, or combine "
                         "several folders into one report: scotd report DIR [DIR ...] --out OUT")
    rep.add_argument("experiment_dirs", type=Path, nargs="+", metavar="experiment_dir")
    rep.add_argument("--out", type=Path, help="folder for the combined report of the given experiment folders "
                     "(needed with more than one)")
    ev = sub.add_parser("eval", help="evaluate a finished experiment on new held-out questions, without "
                        "retraining: scotd eval DIR --task name=X,format=F,eval=PATH[,max_eval=N]")
    ev.add_argument("experiment_dir", type=Path)
    ev.add_argument("--task", action="append", required=True, metavar="SPEC",
                    help="an evaluation-only task: name=..., format=... (as tasks[].format), eval=PATH or URI, "
                    "optional max_eval=N, exemplars=..., student_shots=K; repeat for several")
    judge = sub.add_parser("judge", help="people's verdicts on the judge's pairs: scotd judge score PAIR_FOLDER FILLED")
    judge_sub = judge.add_subparsers(dest="judge_command", required=True)
    score = judge_sub.add_parser("score", help="tally a filled-in copy of a judge/<a>__vs__<b>/annotate.jsonl (the "
                                 "verdict column: A, B or tie) like the judge's verdicts, and write "
                                 "people_summary.json beside the judge's summary.json")
    score.add_argument("pair_folder", type=Path, help="the judge/<a>__vs__<b> folder the pairs were exported from")
    score.add_argument("filled", type=Path, help="the annotate.jsonl copy with verdicts filled in")
    cfg = sub.add_parser("config", help="print every config key with its default and meaning")
    cfg.add_argument("config", type=Path, nargs="?", help="also validate this YAML and print it resolved")
    cfg.add_argument("overrides", nargs="*")
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    # Overrides may also follow options (`scotd run CONFIG --stages teacher key=value`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command in ("report", "judge") or any(item.startswith("-") or "=" not in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if args.command == "report" and args.out is None and len(args.experiment_dirs) > 1:
        parser.error("several experiment folders are combined into one report: give --out OUT")
    return args


def run_command(args: argparse.Namespace) -> None:
    """scotd run CONFIG [overrides] [--stages ...] [--restart STAGE]: prints the report and where the artifacts are."""
    from scotd import pipeline

    config = load_config(args.config, args.overrides)
    stages = tuple(s for s in args.stages.split(",") if s) or NAMES
    exp = pipeline.run(config, stages, restart=args.restart, config_path=str(args.config))
    report = layout.report(exp.dir)
    if report.exists() and "report" in stages:
        print(report.read_text())
    print(f"artifacts: {exp.mirror.uri} (local copy: {exp.dir})" if exp.mirror.uri else f"artifacts: {exp.dir}")


def eval_command(args: argparse.Namespace) -> None:
    """scotd eval DIR --task ...: a finished experiment evaluated on evaluation-only tasks, and its report again."""
    from scotd import pipeline

    exp = pipeline.run(finished_config(args.experiment_dir, args.task), ("tasks", "eval", "report"),
                       config_path=str(layout.config(args.experiment_dir)))
    print(layout.report(exp.dir).read_text())


def report_command(args: argparse.Namespace) -> None:
    """scotd report DIR: the report of a finished folder rebuilt; with --out, several folders in one report."""
    from scotd import pipeline

    if args.out is None:
        folder = args.experiment_dirs[0]
        config = load_config(layout.config(folder), check_training=False)
        # the folder given, even when moved or copied since the run, or downloaded from its URI
        config = replace(config, output=replace(config.output, dir=str(folder)))
        exp = pipeline.run(config, ("report",))
        print(layout.report(exp.dir).read_text())
        return
    from scotd.report import combine
    from scotd.runs import eval_runs

    combine(args.out, [(folder, eval_runs(load_config(layout.config(folder), check_training=False), folder))
                       for folder in args.experiment_dirs])
    print(layout.report(args.out).read_text())


def judge_command(args: argparse.Namespace) -> None:
    """scotd judge score PAIR_FOLDER FILLED: people's verdicts tallied like the judge's."""
    from scotd.judge import people_summary

    summary = people_summary(args.pair_folder, args.filled)
    print(f"{summary['a']} vs {summary['b']}: {summary['pairs']} pairs, {summary['a']} better in "
          f"{summary['wins_a']}, {summary['b']} better in {summary['wins_b']}, {summary['ties']} ties, "
          f"{summary['unparsed']} without a verdict; sign test p = {summary['p_value']:.3g}")
    print(f"written: {layout.pair_file(args.pair_folder, 'people_summary.json')}")


def config_command(args: argparse.Namespace) -> None:
    """scotd config [CONFIG]: every key described, or the given config checked and printed resolved."""
    if not args.config:
        print("\n".join(describe()))
        return
    from scotd.config import dump_config
    from scotd.storage import reject_credentials

    config = load_config(args.config, args.overrides)
    reject_credentials(config)  # the resolved config is printed: never with a secret in it
    print(dump_config(config))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    console.setup()
    if args.command in ("run", "eval"):
        console.stop_on_signals()
    try:
        if args.command == "run":
            run_command(args)
        elif args.command == "eval":
            eval_command(args)
        elif args.command == "report":
            report_command(args)
        elif args.command == "judge":
            judge_command(args)
        else:
            config_command(args)
    except KeyboardInterrupt as err:
        stop = console.interruption(err)
        where = f"in stage {stop.stage}" if stop.stage else "before the first stage"
        print(f"scotd: stopped by {stop.signal_name} {where}; finished work is kept. Resume with: "
              f"{resume_command(sys.argv[1:] if argv is None else argv)}", file=sys.stderr)
        return 128 + stop.signum
    except ConfigError as err:
        print(f"config error: {redact(str(err))}", file=sys.stderr)
        return 2
    except ReportError as err:
        print(f"report error: {redact(str(err))}", file=sys.stderr)
        return 2
    except AnnotationError as err:
        print(f"judge error: {redact(str(err))}", file=sys.stderr)
        return 2
    except (TaskDataError, MissingAssetError, AssetIntegrityError, CorruptFileError) as err:
        # the data or an asset cannot be had, or is malformed: the message names it and what to do
        if args.command == "run" and args.debug:
            raise
        print(f"data error: {redact(str(err))}", file=sys.stderr)
        return 2
    return 0


def finished_config(folder: Path, tasks: list[str]):
    """A finished experiment's saved config with evaluation-only ``tasks`` added (``scotd eval``), run in that folder
    itself (even when moved or copied since the run)."""
    from scotd.config import with_eval_tasks

    if not layout.config(folder).exists():
        raise ConfigError(f"{folder}: no config.yaml: not an experiment folder (give the output.dir of a run)")
    config = with_eval_tasks(load_config(layout.config(folder), check_training=False), tasks)
    return replace(config, output=replace(config.output, dir=str(folder)))


def resume_command(argv: list[str]) -> str:
    """The command that carries on a stopped run: the same one, without ``--restart`` (which would redo work)."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--restart":
            skip = True
        elif not item.startswith("--restart="):
            kept.append(item)
    return "scotd " + shlex.join(kept)


if __name__ == "__main__":
    sys.exit(main())
