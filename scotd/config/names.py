"""Names a config gives to folders: every evaluation run gets a folder of its own (checked at load)."""

from __future__ import annotations

from scotd.config.sections import ConfigError, ExperimentConfig


def check_run_folders(cfg: ExperimentConfig) -> None:
    """Two evaluation runs never share a folder (``runs.run_dir_name`` folds every character other than letters,
    digits, '.', '_' and '-' into '_'): a student named ``teacher_sc_2`` beside ``eval.self_consistency: 2``, or two
    untrained models ``/x/m:x`` and ``/x/m_x``, would read each other's answers. Nor does a run's folder hold the
    judge's pair separator ``__vs__``."""
    from scotd.runs import eval_runs, run_dir_name

    owners: dict[str, str] = {}
    for run in eval_runs(cfg):
        folder = run.dir or run_dir_name(run.run)
        if "__vs__" in folder:
            raise ConfigError(f"{run_key(cfg, run.run)}: {run.run!r} contains '__vs__', which separates the two runs "
                              "of a judge pair folder; rename it")
        if folder in owners and owners[folder] != run.run:
            key = run_key(cfg, run.run) if run_key(cfg, run.run) != "eval" else run_key(cfg, owners[folder])
            raise ConfigError(f"{key}: the evaluation runs {owners[folder]!r} and {run.run!r} would share the folder "
                              f"eval/{folder}; rename one of them")
        owners[folder] = run.run


def run_key(cfg: ExperimentConfig, run: str) -> str:
    """The config key that names an evaluation run: a student's name, or the student model of an untrained run."""
    base = run.split(" ", 1)[0]
    for i, s in enumerate(cfg.students):
        if base == s.name:
            return f"students.{i}.name"
        if base == f"untrained:{s.model}":
            return f"students.{i}.model"
    return "eval"
