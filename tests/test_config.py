from pathlib import Path

import pytest

from scotd.config import ConfigError, ExperimentConfig, describe, dump_config, load_config
from tests.conftest import REPO

SHIPPED = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.tasks and cfg.students


def test_shipped_configs_found():
    assert {"tiny.yaml", "demo.yaml", "ablations-tiny.yaml", "heldout-tiny.yaml", "csqa-qwen7b.yaml",
            "csqa-llama70b-tp4.yaml", "csqa.yaml", "openbookqa.yaml", "quarel.yaml",
            "heldout-sentiment.yaml"} <= {p.name for p in SHIPPED}


@pytest.mark.parametrize("path", ["heldout-tiny.yaml", "paper/heldout-sentiment.yaml"])
def test_heldout_configs_train_on_a_mix_and_evaluate_an_original_and_its_contrast_set(path):
    cfg = load_config(REPO / "configs" / path)
    trained = [t for t in cfg.tasks if t.train]
    held_out = [t for t in cfg.tasks if not t.train]
    assert len({t.format for t in trained}) >= 2 and all(t.eval for t in trained)
    assert [(t.format, Path(t.eval).name) for t in held_out] == [("imdb", "dev_original.tsv"),
                                                                 ("imdb", "dev_contrast.tsv")]
    assert all(t.student_shots > 0 and not t.max_dev for t in held_out)
    assert len({t.max_eval for t in held_out}) == 1  # the same first rows of both files: original/contrast pairs
    assert {s.method for s in cfg.students} == {"label_only", "scotd"}


def test_heldout_tiny_tasks_stage_keeps_the_heldout_task_out_of_training(tmp_path, shared_data):
    from scotd.experiment import Experiment
    from scotd.tasks_stage import stage_tasks
    from scotd.schema import QUESTION_SCHEMA, read_table

    cfg = load_config(REPO / "configs" / "heldout-tiny.yaml",
                      [f"output.dir={tmp_path}", f"tasks.0.train={shared_data / 'commonsenseqa/train_rand_split.jsonl'}",
                       f"tasks.0.eval={shared_data / 'commonsenseqa/dev_rand_split.jsonl'}",
                       f"tasks.1.train={shared_data / 'openbookqa/train.jsonl'}",
                       f"tasks.1.eval={shared_data / 'openbookqa/dev.jsonl'}",
                       f"tasks.2.eval={shared_data / 'imdb_contrast/dev_original.tsv'}",
                       f"tasks.3.eval={shared_data / 'imdb_contrast/dev_contrast.tsv'}"])
    stage_tasks(Experiment(cfg))
    split = {name: read_table(tmp_path / "questions" / f"{name}.parquet", QUESTION_SCHEMA).to_pylist()
             for name in ("train", "eval")}
    assert {r["task"] for r in split["train"]} == {"csqa", "obqa"}
    evaluation = {t: [r for r in split["eval"] if r["task"] == t] for t in ("imdb-original", "imdb-contrast")}
    assert len(evaluation["imdb-original"]) == len(evaluation["imdb-contrast"]) == 16
    # row i of the contrast set is row i of the original, edited so that its label flips
    assert all(o["answer_index"] != c["answer_index"]
               for o, c in zip(evaluation["imdb-original"], evaluation["imdb-contrast"]))


def test_ablations_tiny_compares_the_four_selectors_at_one_budget():
    cfg = load_config(REPO / "configs" / "ablations-tiny.yaml")
    budgets = {s.selector: s.selector_k for s in cfg.students if s.selector in ("random", "likelihood", "diverse",
                                                                               "open_ended")}
    assert len(budgets) == 4 and len(set(budgets.values())) == 1


def test_gpu_teacher_configs_use_gpus_and_stay_on_teacher_nodes():
    for name in ("csqa-qwen7b.yaml", "csqa-llama70b-tp4.yaml"):
        cfg = load_config(REPO / "configs" / "gpu" / name)
        assert cfg.teacher.use_gpu and cfg.teacher.resource == "teacher" and cfg.teacher.num_samples == 30
        assert cfg.teacher.max_replicas and cfg.teacher.max_replicas > cfg.teacher.num_replicas
        assert all(s.use_gpu for s in cfg.students)
    assert load_config(REPO / "configs" / "gpu" / "csqa-llama70b-tp4.yaml").teacher.tensor_parallel_size == 4


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


BASE = """
tasks: [{name: t, format: jsonl, train: a.jsonl, eval: b.jsonl}]
students: [{name: s}]
"""


@pytest.mark.parametrize("text, overrides, message", [
    ("teacher: {num_smaples: 3}\n" + BASE, [], "unknown key teacher.num_smaples"),
    ("teacher: {num_samples: three}\n" + BASE, [], "teacher.num_samples: expected int, got str"),
    ("teacher: {temperature: true}\n" + BASE, [], "teacher.temperature: expected float, got bool"),
    ("corpus: {setting: fewshots}\n" + BASE, [], "corpus.setting: 'fewshots' is not one of"),
    (BASE, ["students.0.epochs=x"], "students.0.epochs: expected int"),
    (BASE, ["students.3.epochs=1"], "students.3: expected an index below 1"),
    (BASE, ["nonsense.key=1"], "unknown key nonsense"),
    ("tasks: [{format: jsonl}]\nstudents: [{name: s}]\n", [], "missing required key tasks.0.name"),
    ("tasks: {name: t}\n", [], "tasks: expected a list"),
    ("- 1\n- 2\n", [], "top level must be a mapping"),
    (BASE, ["teacher.seed"], "expected key.sub=value"),
    (BASE.replace("{name: s}", "{name: s, batch_size: 10, micro_batch_size: 4}"), [],
     "students.0.batch_size: 10 is not a multiple of micro_batch_size x num_workers = 4 x 1"),
    (BASE.replace("{name: s}", "{name: s, batch_size: 16, micro_batch_size: 4, num_workers: 3}"), [],
     "students.0.batch_size: 16 is not a multiple of micro_batch_size x num_workers = 4 x 3"),
    (BASE.replace("{name: s}", "{name: s}, {name: t}, {name: s}"), [],
     "students.2.name: 's' is used by an earlier student"),
    (BASE, ["students.0.micro_batch_size=0"], "students.0.micro_batch_size: 0 must be at least 1"),
    (BASE, ["students.0.dev_batch_size=0"], "students.0.dev_batch_size: 0 must be at least 1"),
    (BASE, ["students.0.selector_k=0"], "students.0.selector_k: 0 must be at least 1"),
    (BASE, ["teacher.concurrent_batches=0"], "teacher.concurrent_batches: 0 must be at least 1"),
    (BASE, ["teacher.num_samples=0"], "teacher.num_samples: 0 must be at least 1"),
    (BASE, ["students.0.lora={rank: 8}"], "unknown key students.0.lora.rank"),
    (BASE, ["students.0.lora={r: 8}", "students.0.zero_stage=3"],
     "students.0.lora: LoRA students train with ZeRO stage 0-2"),
    (BASE, ["students.0.lora={r: 8, dropout: 1.5}"], "students.0.lora.dropout: 1.5 must be at most 1"),
    (BASE, ["students.0.chat_template=maybe"], "students.0.chat_template: expected bool"),
    (BASE, ["tracking.backend=comet"], "tracking.backend: 'comet' is not one of 'mlflow', 'wandb', 'none'"),
    (BASE, ["teacher.tensor_parallel_size=2"], "teacher.tensor_parallel_size: 2 x pipeline_parallel_size 1 GPUs"),
])

def test_config_errors_name_the_dotted_key(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")) as err:
        load_config(write(tmp_path, text), overrides)
    assert str(tmp_path / "exp.yaml") in str(err.value)


def test_a_finished_experiment_loads_without_the_training_rules(tmp_path):
    path = write(tmp_path, BASE.replace("{name: s}", "{name: s, batch_size: 10, micro_batch_size: 4}"))
    assert load_config(path, check_training=False).students[0].batch_size == 10
    with pytest.raises(ConfigError, match="not a multiple"):
        load_config(path)


def test_overrides_are_typed_and_reach_nested_lists(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["teacher.num_samples=5", "students.0.learning_rate=1e-4",
                                              'teacher.stop=["\\n\\n", "Q:"]', "resources.address=null"])
    assert cfg.teacher.num_samples == 5
    assert cfg.students[0].learning_rate == pytest.approx(1e-4)
    assert cfg.teacher.stop == ("\n\n", "Q:")
    assert cfg.resources.address is None


def test_int_is_accepted_for_float(tmp_path):
    assert load_config(write(tmp_path, BASE), ["teacher.temperature=1"]).teacher.temperature == 1.0


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["teacher.num_samples=7"])
    again = write(tmp_path, dump_config(cfg))
    assert load_config(again) == cfg


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_every_field_is_documented():
    lines = describe()
    assert len(lines) > 40
    assert all("#" in line and line.split("#", 1)[1].strip() for line in lines if "=" in line)
    assert any(line.startswith("teacher.num_samples = 30") for line in lines)


@pytest.mark.parametrize("task", ["csqa", "openbookqa", "quarel"])
def test_paper_grid_configs_cover_sizes_methods_and_ablations(task):
    cfg = load_config(REPO / "configs" / "paper" / f"{task}.yaml")
    assert cfg.teacher.num_samples == 30 and cfg.teacher.greedy_rationales and cfg.eval.self_consistency == 30
    grid = {(s.model, s.method, s.selector, s.selector_k if s.selector in ("first_n", "random", "likelihood",
                                                                          "diverse") else None)
            for s in cfg.students}
    for model in ("facebook/opt-125m", "facebook/opt-350m", "facebook/opt-1.3b"):
        expected = {("label_only", "all", None), ("scotd", "greedy", None), ("scotd", "all", None),
                    ("scotd", "open_ended", None)} | {("scotd", "first_n", n) for n in (1, 5, 10, 20)} | {
                    ("scotd", sel, 5) for sel in ("random", "likelihood", "diverse")}
        assert {g[1:] for g in grid if g[0] == model} == expected, model
    assert all((s.batch_size, s.learning_rate, s.warmup_steps, s.grad_clip, s.max_length) == (32, 2e-5, 500, 0.5, 700)
               for s in cfg.students)
    # the selectors at the paper's equal budget: 5 per question (open_ended: 1/3/5/7/9, 5 on average)
    assert {s.selector_k for s in cfg.students if s.selector in ("random", "likelihood", "diverse", "open_ended")} == {5}


TINY = REPO / "configs" / "tiny.yaml"


@pytest.mark.parametrize("override, message", [
    # names that would show another run's numbers, or write outside output.dir (issue 19, items 1-2)
    ("students.1.name=teacher", r"students\.1\.name: 'teacher' must be"),
    ("students.0.name=untrained:tiny:student", r"students\.0\.name: 'untrained:tiny:student' must be"),
    ("students.0.name=label-only_best", r"students\.0\.name: 'label-only_best' must be"),
    ("students.0.name=/abs/path", r"students\.0\.name: '/abs/path' must be"),
    ("students.0.name=../../x", r"students\.0\.name: '\.\./\.\./x' must be"),
    ("students.0.name=a:b", r"students\.0\.name: 'a:b' must be"),
    ("tasks.0.name=", r"tasks\.0\.name: '' must be"),
    # sizes and settings that would change meaning (items 6-7)
    ("tasks.0.max_train=-5", r"tasks\.0\.max_train: -5 must be at least 1"),
    ("tasks.0.max_train=0", r"tasks\.0\.max_train: 0 must be at least 1"),
    ("tasks.0.max_eval=-1", r"tasks\.0\.max_eval: -1 must be at least 1"),
    ("eval.batch_size=0", r"eval\.batch_size: 0 must be at least 1"),
    ("eval.max_new_tokens=-1", r"eval\.max_new_tokens: -1 must be at least 1"),
    ("teacher.max_new_tokens=0", r"teacher\.max_new_tokens: 0 must be at least 1"),
    ("teacher.temperature=-1", r"teacher\.temperature: -1\.0 must be at least 0"),
    ("teacher.top_p=5", r"teacher\.top_p: 5\.0 must be at most 1"),
    ("teacher.max_model_len=0", r"teacher\.max_model_len: 0 must be at least 16"),
    ("students.0.learning_rate=-1", r"students\.0\.learning_rate: -1\.0 must be greater than 0"),
    ("students.0.learning_rate=.inf", r"students\.0\.learning_rate: inf must be a finite number"),
    ("students.0.warmup_steps=-10", r"students\.0\.warmup_steps: -10 must be at least 0"),
    ("students.0.max_length=0", r"students\.0\.max_length: 0 must be at least 8"),
    ("resources.num_cpus=0", r"resources\.num_cpus: 0 must be at least 1"),
    ("teacher.gpu_memory_utilization=7", r"teacher\.gpu_memory_utilization: 7\.0 must be at most 1"),
    ("teacher.max_replicas=0", r"teacher\.max_replicas: 0 must be at least 1"),
    ("teacher.num_samples=100000", r"teacher\.num_samples: 100000 must be at most 10000"),
    ("students.0.zero_stage=true", r"students\.0\.zero_stage: True is not one of 0, 1, 2, 3"),
    ("students.0.zero_stage=2.0", r"students\.0\.zero_stage: 2\.0 is not one of 0, 1, 2, 3"),
    ("output.dir=", r"output\.dir: empty"),
])
def test_bad_names_and_sizes_are_refused_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def test_bad_names_exit_2_with_one_line(capsys):
    from scotd.cli import main

    assert main(["config", str(TINY), "students.1.name=teacher"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "students.1.name" in err and "Traceback" not in err


def test_a_second_task_of_the_same_name_and_replicas_below_the_minimum_are_refused():
    with pytest.raises(ConfigError, match=r"tasks\.1\.name: 'csqa' is used by an earlier task"):
        load_config(TINY, ["tasks=[{name: csqa, format: jsonl, eval: a}, {name: csqa, format: jsonl, eval: b}]"])
    with pytest.raises(ConfigError, match=r"teacher\.max_replicas: 1 is below teacher\.num_replicas = 2"):
        load_config(TINY, ["teacher.num_replicas=2", "teacher.max_replicas=1"])


def test_judge_pairs_name_runs_the_config_evaluates():
    """Caught at load, not after training and evaluation (issue 19, item 14)."""
    with pytest.raises(ConfigError, match=r"eval\.judge_pairs\.0: expected two of the evaluation runs .*'nobody'"):
        load_config(TINY, ["eval.judge_pairs=[[scotd, nobody]]"])
    with pytest.raises(ConfigError, match=r"eval\.judge_pairs\.0"):
        load_config(TINY, ["eval.judge_pairs=[[scotd]]"])
    cfg = load_config(TINY, ["eval.judge_pairs=[[scotd@best, teacher], [label-only, 'untrained:tiny:student 3-shot']]"])
    assert len(cfg.eval.judge_pairs) == 2


def test_a_key_given_twice_in_the_yaml_is_an_error(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: a\nteacher:\n  num_samples: 4\n  num_samples: 8\n")
    with pytest.raises(ConfigError, match=r"(?s)twice\.yaml: not valid YAML: key .num_samples. given twice.*line 4"):
        load_config(path)


def test_sizes_for_a_cpu_without_native_bf16_apply_there_before_the_command_line(monkeypatch):
    """configs/demo.yaml's without_native_bf16 values, on either CPU class (the detection is the one stand-in:
    the machine running the tests has one class)."""
    import scotd.cpu as cpu

    monkeypatch.setattr(cpu, "cpu_has_bf16", lambda: False)
    plain = load_config(REPO / "configs" / "demo.yaml")
    assert plain.cpu_sized and plain.teacher.num_samples == 1 and plain.tasks[0].max_train == 256
    assert (plain.tasks[0].max_eval, plain.tasks[1].max_eval) == (225, 75)
    given = load_config(REPO / "configs" / "demo.yaml", ["teacher.num_samples=3"])
    assert given.teacher.num_samples == 3 and given.tasks[0].max_train == 256  # the command line wins
    saved = load_config(REPO / "configs" / "demo.yaml", check_training=False)
    assert not saved.cpu_sized and saved.teacher.num_samples == 4  # a finished folder's config is read as saved
    monkeypatch.setattr(cpu, "cpu_has_bf16", lambda: True)
    native = load_config(REPO / "configs" / "demo.yaml")
    assert not native.cpu_sized and native.teacher.num_samples == 4 and native.tasks[0].max_eval == 450


def test_a_sized_config_is_not_sized_twice_and_bad_sizes_name_the_section(monkeypatch, tmp_path):
    import scotd.cpu as cpu

    from scotd.config import dump_config

    monkeypatch.setattr(cpu, "cpu_has_bf16", lambda: False)
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(load_config(REPO / "configs" / "demo.yaml", ["teacher.num_samples=2"])))
    again = load_config(saved)  # a rerun from the experiment's own config.yaml keeps what it ran with
    assert again.cpu_sized and again.teacher.num_samples == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "configs" / "demo.yaml").read_text() + "  tasks.7.max_eval: 3\n")
    with pytest.raises(ConfigError, match=r"without_native_bf16: tasks.7: expected an index below 2"):
        load_config(bad)


@pytest.mark.parametrize("overrides, message", [
    (["students.1.name=teacher_sc_2", "eval.self_consistency=2"],
     "students.1.name: the evaluation runs 'teacher_sc_2' and 'teacher sc@2' would share the folder "
     "eval/teacher_sc_2"),
    (["students.1.name=scotd_sc_2", "eval.self_consistency=2"],
     "the evaluation runs 'scotd_sc_2' and 'scotd sc@2' would share the folder eval/scotd_sc_2"),
    (["students.0.model=/x/m:x", "students.1.model=/x/m_x"],
     "students.1.model: the evaluation runs 'untrained:/x/m:x' and 'untrained:/x/m_x' would share the folder "
     "eval/untrained_x_m_x"),
    (["students.1.name=a__vs__b"], "students.1.name: 'a__vs__b' contains '__vs__'"),
])
def test_two_runs_never_share_a_folder(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs" / "tiny.yaml", [*overrides, "eval.judge_pairs=[]"])
    assert message in str(err.value)
