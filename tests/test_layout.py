"""The code's layout rules (issues 20 and 32): one table of stages, which the pipeline runs and no stage module
reaches around; no upward arrow in the import graph; every path of the experiment folder from ``scotd.layout``;
modules and functions a reader takes in at once."""

import ast
import re

from scotd.stages import STAGES
from tests.conftest import REPO

# Each stage's own modules, from the table: what stages share lives below them (config, experiment, runs, scoring,
# inference, prompts, schema, layout, tasks' question and formats).
# (scotd.prepare, which readies models and budgets for several stages, is shared.)
STAGE_MODULES = {stage.name: {step.__module__ for step in stage.steps} - {"scotd.prepare"} for stage in STAGES}
PACKAGES = ("scotd.config", "scotd.inference", "scotd.student", "scotd.tasks")


def module_path(name: str):
    path = REPO / (name.replace(".", "/") + ".py")
    return path if path.exists() else REPO / name.replace(".", "/") / "__init__.py"


def imported_modules(path) -> set[str]:
    """Every module a file imports, at the top or inside functions (not those imported for type hints only, under
    ``if TYPE_CHECKING:``, which Python never imports)."""
    tree = ast.parse(path.read_text())
    hints = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
             for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def scotd_modules() -> dict[str, object]:
    """Module name -> its file, for every module of the package."""
    found = {}
    for path in (REPO / "scotd").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def test_no_stage_module_imports_another_stage():
    owner = {module: stage for stage, modules in STAGE_MODULES.items() for module in modules}
    assert set(owner) >= {"scotd.tasks_stage", "scotd.teacher", "scotd.corpus", "scotd.student.stage",
                          "scotd.evaluate", "scotd.judge", "scotd.report"}
    crossings = []
    for stage, modules in STAGE_MODULES.items():
        for module in modules:
            for imported in imported_modules(module_path(module)):
                if owner.get(imported, stage) != stage:
                    crossings.append(f"{module} ({stage}) imports {imported} ({owner[imported]})")
    assert crossings == []


def test_stages_are_run_from_the_table_not_loaded_by_strings():
    names = [stage.name for stage in STAGES]
    assert names == ["tasks", "teacher", "corpus", "students", "eval", "report"]
    assert all(callable(step) and step.__module__.startswith("scotd.") for stage in STAGES for step in stage.steps)
    assert [step.__module__ for step in STAGES[names.index("eval")].steps] == ["scotd.prepare", "scotd.evaluate",
                                                                                "scotd.judge"]
    code = {path: path.read_text() for path in (REPO / "scotd").rglob("*.py")}
    assert [p.name for p, text in code.items() if "importlib.import_module" in text] == []
    # the stage list is written once: no other module spells the six names in a row
    listed = re.compile(r"tasks\W+teacher\W+corpus\W+students\W+eval\W+report")
    assert [p.name for p, text in code.items() if listed.search(text)] == []


def test_no_module_of_a_subpackage_imports_what_imports_the_subpackage():
    """No upward arrow: a module inside scotd.tasks (say) never imports a module that itself imports scotd.tasks."""
    modules = scotd_modules()
    arrows = []
    for package in PACKAGES:
        inside = [name for name in modules if name == package or name.startswith(package + ".")]
        for name in inside:
            for imported in imported_modules(modules[name]):
                if imported not in modules or imported.startswith(package):
                    continue
                back = [m for m in imported_modules(modules[imported]) if m == package or m.startswith(package + ".")]
                if back:
                    arrows.append(f"{name} imports {imported}, which imports {back[0]}")
    assert arrows == []


# Names of the experiment folder's files and folders (scotd.layout): no other module joins them to a path.
LAYOUT_NAMES = ("questions", "teacher", "corpus", "students", "ray_train", "eval", "judge", "samples", "greedy",
                "answers", "config.yaml", "timings.json", "provenance.json", "limits.json", "report.json",
                "report.md", "report.png", "summary.json", "where.json", "sampling_summary.json", "corpus.parquet",
                "labels.parquet", "train_rows.parquet", "model", "model-best", "scotd_student.json",
                "checkpoints.json", "history.jsonl", "progress.json", "predictions.parquet", "metrics.json",
                "pairs.jsonl", "verdicts.parquet", "key.jsonl", "annotate.jsonl", "people_summary.json")


def test_every_path_of_the_experiment_folder_comes_from_the_layout_module():
    join = re.compile(r"/\s*f?[\"']([\w.-]+)[\"'/{]")
    found = []
    for path in (REPO / "scotd").rglob("*.py"):
        if path.name == "layout.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found += [f"{path.name}:{number}: {name}" for name in join.findall(line) if name in LAYOUT_NAMES]
            if re.search(r"/\s*[\"']models[\"']", line) and "cache" not in line:  # the cache has models/ too
                found.append(f"{path.name}:{number}: models")
    assert found == []


def test_the_pipeline_only_runs_the_stages_and_modules_and_functions_stay_small():
    sizes = {path.relative_to(REPO).as_posix(): len(path.read_text().splitlines())
             for path in (REPO / "scotd").rglob("*.py")}
    assert sizes["scotd/pipeline.py"] <= 250
    assert {path: n for path, n in sizes.items() if n > 400} == {}
    long = []
    for path in (REPO / "scotd").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def test_docstrings_and_help_say_what_the_code_does_not_what_a_run_measured():
    """Figures from benchmark runs live in benchmarks/RESULTS.md and docs/, not in the code (issue 20, item 6)."""
    import re

    diaries = [f"{path.relative_to(REPO)}:{n}" for path in (REPO / "scotd").rglob("*.py")
               for n, line in enumerate(path.read_text().splitlines(), 1)
               if re.search(r"\b[Mm]easured\b|STACK-NOTES|\.\./shared/docs", line)]
    assert diaries == []


def test_docs_date_results_by_day_and_cpu_class_not_by_the_order_of_the_work():
    """Results are dated by their date and CPU class; no file speaks of the sessions that made them or of the
    machines the project was developed on (issue 32)."""
    import re

    ordinal = (r"first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|"
               r"fourteenth|fifteenth|sixteenth")
    pattern = re.compile(rf"\b(?:{ordinal})[- ]session\b|\bthis session\b|\bthese machines\b|\bon this machine\b"
                         r"|\bproject's machines\b", re.IGNORECASE)
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "benchmarks").glob("*.md"),
             *(REPO / "configs").rglob("*.yaml"), *(REPO / "scotd").rglob("*.py"), *(REPO / "jobs").glob("*.py"),
             *(REPO / "cluster").glob("*")]
    found = [f"{path.relative_to(REPO)}:{n}" for path in files if path.is_file()
             for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if pattern.search(line)]
    assert found == []
