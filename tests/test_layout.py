"""The code's layout rules (issue 20): the pipeline only orders the stages, no stage module imports another stage,
and no module grows past what a reader takes in at once."""

import ast

from tests.conftest import REPO

# Each stage's modules: the stage owns its logic; what stages share lives below them (config, experiment, runs,
# scoring, inference, prompts, schema, tasks' question and formats).
STAGE_MODULES = {
    "tasks": {"scotd.tasks.stage"},
    "teacher": {"scotd.teacher"},
    "corpus": {"scotd.corpus"},
    "students": {"scotd.student.stage", "scotd.student.train"},
    "eval": {"scotd.evaluate", "scotd.judge"},
    "report": {"scotd.report", "scotd.report_markdown", "scotd.plots"},
}


def module_path(name: str):
    path = REPO / (name.replace(".", "/") + ".py")
    return path if path.exists() else REPO / name.replace(".", "/") / "__init__.py"


def imported_modules(path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_stage_module_imports_another_stage():
    owner = {module: stage for stage, modules in STAGE_MODULES.items() for module in modules}
    crossings = []
    for stage, modules in STAGE_MODULES.items():
        for module in modules:
            for imported in imported_modules(module_path(module)):
                if owner.get(imported, stage) != stage:
                    crossings.append(f"{module} ({stage}) imports {imported} ({owner[imported]})")
    assert crossings == []


def test_the_pipeline_only_orders_the_stages_and_modules_stay_small():
    sizes = {path.relative_to(REPO).as_posix(): len(path.read_text().splitlines())
             for path in (REPO / "scotd").rglob("*.py")}
    assert sizes["scotd/pipeline.py"] <= 250
    assert {path: n for path, n in sizes.items() if n > 400} == {}
    assert all((REPO / "scotd" / f"{m.replace('scotd.', '').replace('.', '/')}.py").exists()
               for modules in STAGE_MODULES.values() for m in modules)


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
