"""``scotd`` command line: run an experiment (all stages or some), rebuild a report, describe the config."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from scotd.config import ConfigError, describe, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scotd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment: scotd run CONFIG [key.sub=value ...]")
    run.add_argument("config", type=Path)
    run.add_argument("overrides", nargs="*", help="config overrides, e.g. teacher.num_samples=4")
    run.add_argument("--stages", default="", help="comma-separated subset of: tasks,teacher,corpus,students,eval,report")
    rep = sub.add_parser("report", help="rebuild report.json/report.md of a finished experiment folder")
    rep.add_argument("experiment_dir", type=Path)
    cfg = sub.add_parser("config", help="print every config key with its default and meaning")
    cfg.add_argument("config", type=Path, nargs="?", help="also validate this YAML and print it resolved")
    cfg.add_argument("overrides", nargs="*")
    # Overrides may also follow options (`scotd run CONFIG --stages teacher key=value`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "report" or any(item.startswith("-") or "=" not in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from scotd import pipeline

    try:
        if args.command == "run":
            config = load_config(args.config, args.overrides)
            stages = tuple(s for s in args.stages.split(",") if s) or pipeline.STAGES
            exp = pipeline.run(config, stages)
            report = exp.dir / "report.md"
            if report.exists() and "report" in stages:
                print(report.read_text())
            print(f"artifacts: {exp.mirror.uri} (local copy: {exp.dir})" if exp.mirror.uri else f"artifacts: {exp.dir}")
        elif args.command == "report":
            config = load_config(args.experiment_dir / "config.yaml")
            exp = pipeline.run(config, ("report",))
            print((exp.dir / "report.md").read_text())
        else:
            if args.config:
                from scotd.config import dump_config
                from scotd.storage import reject_credentials

                config = load_config(args.config, args.overrides)
                reject_credentials(config)  # the resolved config is printed: never with a secret in it
                print(dump_config(config))
            else:
                print("\n".join(describe()))
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
