"""The config's sections: one frozen dataclass per stage, every field with its default and a one-line explanation
(``help``) in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type; the message names the dotted key."""


def opt(default: Any, help: str) -> Any:
    """A dataclass field with its documentation attached (read by ``describe`` and the tests)."""
    return field(default=default, metadata={"help": help})


def required(help: str) -> Any:
    return field(metadata={"help": help})


@dataclass(frozen=True)
class TaskConfig:
    name: str = required("Task label used in ids, reports and exemplar lookup (e.g. csqa).")
    format: Literal["commonsenseqa", "openbookqa", "arc", "quarel", "strategyqa", "jsonl", "imdb", "hf",
                    "arithmetic", "arithmetic_check", "coin_flip", "gsm8k", "sum", "last_letters"] = required(
        "File format of the task's data: an official benchmark format (gsm8k: free-form numeric answers), generic "
        "JSONL (multiple choice, or free-form without choices), the IMDb contrast-set TSV (Sentiment<TAB>Text), a "
        "Hugging Face dataset, or a generated symbolic task (scotd/symbolic.py; its sources are "
        "gen:<kind>:<split>:<min steps>-<max steps>)."
    )
    train: str | tuple[str, ...] = opt(
        "", "Training questions: a file path or URI, 'hf:<dataset>[:<config>]:<split>' (the Hugging Face hub; needs "
        "the datasets package), 'offline:<dataset>:<split>', 'gen:<kind>:<split>:<min>-<max>' (a generated task), "
        "or for format=hf 'dataset_name:split'. A list gives "
        "alternatives: the first that can be read is used and the log names it. Empty: an evaluation-only task (a "
        "contrast set, or a held-out task the students never train on)."
    )
    eval: str | tuple[str, ...] = opt("", "Held-out evaluation questions (same forms as train).")
    exemplars: str = opt(
        "", "Few-shot exemplar file: a key of scotd/exemplars (e.g. commonsenseqa) or a path. Default: the format's."
    )
    num_exemplars: int | None = opt(None, "Use only the first K exemplars in the teacher prompt (None = all).")
    student_shots: int = opt(
        0, "Exemplars (with rationales) shown to students before each evaluation question of this task: in-context "
        "examples for a held-out task, as the paper did for SST-2. 0 = the plain student prompt."
    )
    max_train: int | None = opt(None, "Keep the first N training questions (after removing exemplar questions).")
    max_eval: int | None = opt(None, "Keep the first N evaluation questions.")
    max_dev: int = opt(
        0, "Development questions for choosing each student's checkpoint: the dataset's dev part for offline: "
        "datasets, else carved from the training questions by a hash of their ids (and not trained on). Students "
        "report their dev accuracy after every epoch. 0 = no dev split: the report shows the last checkpoint."
    )
    skip_bad_rows: bool = opt(False, "Skip malformed rows and report their count instead of failing on the first.")


@dataclass(frozen=True)
class EngineConfig:
    """A vLLM engine pool: the model, its device, precision and memory, parallelism, replicas and batching. The
    teacher section is one (with sampling settings added); evaluation and the judge derive theirs from it
    (``ExperimentConfig.engine``)."""

    model: str = opt(
        "offline:qwen2.5-coder-1.5b-instruct",
        "Teacher: HF hub id, local HF folder, 'offline:<key>' (a model shipped on PyPI) or 'tiny:teacher'.",
    )
    dtype: str = opt("auto", "Engine dtype; auto = bfloat16 on GPUs and CPUs with native bf16, float32 on other CPUs.")
    max_model_len: int = opt(2048, "Longest prompt + generation the engine accepts.")
    use_gpu: bool = opt(False, "Run the engines on GPUs (vLLM's GPU build); False = vLLM's CPU build.")
    tensor_parallel_size: int = opt(1, "GPUs per engine replica sharing each layer (teachers larger than one GPU).")
    pipeline_parallel_size: int = opt(
        1, "Pipeline stages per replica; a replica owns tensor_parallel_size x pipeline_parallel_size GPUs."
    )
    num_replicas: int = opt(1, "Engine replicas (Ray Data actors), each owning its GPUs (or CPU cores).")
    max_replicas: int | None = opt(
        None, "Autoscaling range num_replicas..max_replicas: Ray Data adds engines while questions are queued and "
        "the cluster (autoscaler) has GPUs; None = exactly num_replicas."
    )
    batch_size: int = opt(16, "Questions per Ray Data batch handed to one engine call.")
    concurrent_batches: int | None = opt(
        None, "Batches each engine works on at once: the next batch's requests join the running batch while the "
        "previous one's last sequences finish (Ray's max_concurrency on the engine actor). None = enough to keep "
        "the engine full: ceil(max_num_seqs / (batch_size x num_samples)) + 1 (at most 64), with vLLM's default "
        "max_num_seqs when that is unset (256 on CPU, up to 1024 on GPU). Teacher sampling only: evaluation and "
        "the judge always take the automatic value."
    )
    gpu_memory_utilization: float = opt(0.9, "Share of GPU memory vLLM may take (GPU only).")
    resource: str | None = opt(
        None, "Custom Ray resource each engine replica asks for, one unit per GPU it uses, to keep replicas on "
        "teacher nodes (the cluster/ files give teacher nodes 'teacher' = their GPU count); None = ask for none."
    )
    max_num_seqs: int | None = opt(
        None, "Most sequences one engine decodes at once (vLLM max_num_seqs); None = vLLM's default for the device."
    )
    cpu_kvcache_gb: int = opt(2, "KV cache size in GiB on CPU (VLLM_CPU_KVCACHE_SPACE; CPU only).")
    block_size: int | None = opt(
        None, "KV block size; CPU default 32, small enough that prefix caching covers each question's own prompt too, "
        "not just the shared exemplars."
    )
    enable_prefix_caching: bool = opt(True, "Reuse the few-shot prefix's KV cache across questions and samples.")
    chat_template: bool = opt(False, "Wrap the prompt in the tokenizer's chat template (instruction-tuned teachers).")
    trust_remote_code: bool = opt(False, "Allow model repos to run their own code (off unless you trust the repo).")
    engine_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": (
        "Any other vllm.LLM setting, passed as is (e.g. {quantization: fp8, kv_cache_dtype: fp8, enforce_eager: "
        "true, speculative_config: {...}}); each key is checked at load against vLLM's EngineArgs. Keys scotd sets "
        "from this section (model, dtype, max_model_len, parallel sizes, ...) are refused: set them here instead. "
        "The teacher's and judge's engines get them, a student's evaluation engine does not.")})


@dataclass(frozen=True)
class TeacherConfig(EngineConfig):
    """The teacher's engine (every ``EngineConfig`` key) and how it samples rationales."""

    num_samples: int = opt(30, "Rationales sampled per training question (paper: 30).")
    temperature: float = opt(1.0, "Sampling temperature (paper: 1.0).")
    top_p: float = opt(1.0, "Nucleus sampling mass.")
    max_new_tokens: int | None = opt(
        None, "Generation budget per rationale; a rationale cut at it has no answer (counted as cut_at_limit). "
        "None: sized from the exemplars, twice the longest exemplar answer in the teacher's tokens (at least 32), "
        "written into the experiment's config.yaml."
    )
    stop: tuple[str, ...] = opt(("\n\n",), "Stop strings; the answer phrase of every letter is always added.")
    seed: int = opt(0, "Base seed; question i is sampled with a seed derived from (seed, question id).")
    greedy_rationales: bool = opt(
        False, "Also write one greedy rationale per training question (teacher/greedy): the greedy-CoT baseline's "
        "corpus (students with selector: greedy)."
    )
    samples_per_round: int | None = opt(
        None, "Sample in rounds of this many per question, up to num_samples (which becomes a cap), so that a "
        "question can stop early (stop_when_repeated, stop_at_distinct); the rounds run inside one engine call, so "
        "a block still holds finished questions only. None: all num_samples at once."
    )
    stop_when_repeated: bool = opt(
        False, "With samples_per_round: a question stops after a round in which a sample repeats one of its "
        "earlier samples (whitespace and number formatting folded): more samples would mostly repeat too."
    )
    sample_budget: int | None = opt(
        None, "Samples the teacher draws in all: the training questions are sampled in order until it is spent, so "
        "the samples that rounds save (samples_per_round with a stop rule) go to more questions of the training "
        "split (set tasks[].max_train to the pool to draw from). Each further pass restarts the engines. Students "
        "train on the questions sampled. None: every training question."
    )
    stop_at_distinct: int | None = opt(
        None, "With samples_per_round: a question stops once it has this many distinct rationales that reach the "
        "gold answer (any answer where the split has no labels)."
    )


@dataclass(frozen=True)
class CorpusConfig:
    setting: Literal["supervised", "fewshot"] = opt(
        "supervised",
        "supervised: keep rationales whose answer equals the gold label; fewshot: keep every parsed rationale "
        "and label it with the teacher's answer.",
    )
    dedup: bool = opt(True, "Drop exact-duplicate rationales of the same question.")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters (PEFT) instead of full fine-tuning: only the adapters train; the export merges them into the
    base weights (a plain Hugging Face folder vLLM loads) and keeps the adapter beside it (``adapter/``)."""

    r: int = opt(8, "Rank of each adapter's two matrices.")
    alpha: float = opt(16.0, "Scale of the adapter's update: alpha / r.")
    dropout: float = opt(0.05, "Dropout on the adapter's input while training.")
    target_modules: tuple[str, ...] = opt(
        ("q_proj", "v_proj"), "Names of the linear layers that get adapters (Llama, Qwen, OPT attention: q_proj, "
        "k_proj, v_proj, o_proj; MLP: gate_proj, up_proj, down_proj)."
    )


@dataclass(frozen=True)
class StudentConfig:
    name: str = required("Name of this student run (folder name, report row).")
    model: str = opt("offline:smollm2-135m-instruct", "Student base model (same forms as teacher.model, or 'tiny:student').")
    method: Literal["scotd", "label_only"] = opt(
        "scotd", "scotd: target is a sampled rationale + answer; label_only: target is the answer letter only."
    )
    selector: Literal["all", "first_n", "random", "likelihood", "diverse", "open_ended", "greedy"] = opt(
        "all", "Which kept rationales a SCoTD student trains on (scotd/selectors.py): all; first_n = those among the "
        "first selector_k samples (the N-sweep); random / likelihood / diverse: selector_k per question; "
        "open_ended: selector_k per question on average, by quintile of rationale variety (1/3/5/7/9 at 5); greedy: "
        "the teacher's one greedy rationale per question (needs teacher.greedy_rationales)."
    )
    selector_k: int = opt(
        5, "Budget: rationales per question for random/likelihood/diverse, per question on average for open_ended "
        "(counts in proportion to 1:3:5:7:9); N for first_n (paper: 5). A question with fewer keeps them all."
    )
    setting: Literal["", "supervised", "fewshot"] = opt(
        "", "This student's corpus setting when it differs from corpus.setting (both settings in one experiment, "
        "from the same teacher samples); empty: corpus.setting. Label-only students in the fewshot setting learn "
        "the teacher's majority answers."
    )
    embedding_model: str = opt(
        "offline:smollm2-135m-instruct", "Sentence embeddings for selector 'diverse' (mean of last hidden layer)."
    )
    epochs: int = opt(3, "Passes over the training data (each_epoch says what a pass visits); at most this many.")
    each_epoch: Literal["question", "rationale"] = opt(
        "question", "What an epoch visits: question = every training question once, with one of its kept rationales "
        "drawn at random (balanced: a question with many rationales weighs as much as one with one); rationale = "
        "every kept rationale once (the paper's volume: the whole corpus each epoch)."
    )
    max_steps: int | None = opt(
        None, "Stop after this many optimizer steps (the last epoch is cut short), so that students of different "
        "corpora compare at equal compute; the learning-rate schedule ends there. None: epochs decide."
    )
    max_tokens: int | None = opt(
        None, "Stop once this many tokens (prompt and target, padding not counted, all workers) have been trained "
        "on; like max_steps, the schedule ends there. None: epochs decide."
    )
    patience: int | None = opt(
        None, "Early stopping: stop once dev accuracy has not improved for this many epochs (needs tasks[].max_dev "
        "> 0); the checkpoint with the best dev accuracy is the one evaluated (eval.checkpoint: best). None: off."
    )
    learning_rate: float = opt(2e-5, "Peak AdamW learning rate (paper: 2e-5).")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    batch_size: int = opt(32, "Global batch size in sequences (paper: 32) = micro_batch_size x accumulation x workers.")
    micro_batch_size: int = opt(8, "Sequences per worker per forward pass.")
    dev_batch_size: int = opt(
        32, "Dev questions per greedy generate call (on each rank) when scoring an epoch's checkpoint; larger "
        "batches are faster, at the cost of memory."
    )
    warmup_steps: int = opt(500, "Linear warm-up steps, then linear decay to zero (paper: 500).")
    grad_clip: float = opt(0.5, "Gradient norm clip (paper: 0.5).")
    max_length: int = opt(700, "Prompt + target tokens; longer sequences are truncated from the left of the prompt.")
    zero_stage: Literal[0, 1, 2, 3] = opt(2, "DeepSpeed ZeRO stage.")
    num_workers: int = opt(1, "Ray Train workers (data-parallel ranks) for this student.")
    use_gpu: bool = opt(False, "One GPU per worker, bf16 and NCCL; False trains in fp32 over gloo on CPU.")
    cpu_bf16: bool | Literal["auto"] = opt(
        False, "CPU training only: forward passes under bfloat16 autocast (weights, gradients and optimizer stay "
        "fp32); auto: where the CPU has native bf16 (AMX or AVX-512 BF16). Faster steps, but small updates are "
        "rounded away in the forward pass, so loss falls slower at small learning rates (benchmarks/training.py "
        "--cpu-bf16)."
    )
    lora: LoraSettings | None = opt(
        None, "Train LoRA adapters instead of every weight, e.g. {r: 8, alpha: 16, target_modules: [q_proj, "
        "v_proj]} (ZeRO stage 0-2); None = full fine-tuning."
    )
    chat_template: bool = opt(
        False, "Train and evaluate inside the student tokenizer's chat template (instruction-tuned students): the "
        "question is the user turn, the rationale and answer the assistant's; the same rendering in training, dev "
        "scoring and evaluation, recorded in the student's scotd_student.json."
    )
    cpus_per_worker: float = opt(1.0, "CPUs reserved per training worker.")
    seed: int = opt(0, "Seed for initialisation-independent randomness: data order and rationale draws.")


@dataclass(frozen=True)
class EvalConfig:
    max_new_tokens: int | None = opt(
        None, "Generation budget per evaluation answer (and per dev answer while students train). None: sized from "
        "the kept corpus, its rationales' 99th-percentile length in teacher tokens x 1.25 + 16 (at least 32; the "
        "teacher's budget when no corpus is built), written into the experiment's config.yaml."
    )
    repetition_penalty: float = opt(
        1.0, "vLLM's repetition penalty for every evaluation run; 1.0 = off, above 1 discourages the loops a small "
        "student's greedy answer can fall into (the report names the value)."
    )
    batch_size: int = opt(32, "Questions per engine call.")
    self_consistency: int = opt(
        0, "Also evaluate every run by self-consistency: this many sampled answers, majority vote (paper: 30); "
        "0 = greedy only."
    )
    self_consistency_temperature: float = opt(0.7, "Sampling temperature of the self-consistency answers.")
    teacher: bool = opt(True, "Evaluate the teacher (few-shot, greedy) as a reference row.")
    judge_pairs: tuple[tuple[str, ...], ...] = opt(
        (), "Pairs of evaluation runs whose rationales a judge model compares question by question, e.g. "
        "[[scotd, teacher], [scotd, scotd-n1]] (scotd/judge.py); the pairs are also exported for people to rate."
    )
    judge_model: str = opt("", "The judge (same forms as teacher.model); empty: the teacher.")
    checkpoint: Literal["best", "last"] = opt(
        "best", "Which checkpoint of each student the report's main rows show when a dev split exists: the one with "
        "the best dev accuracy or the last one. The other is evaluated too unless eval.both_checkpoints is off."
    )
    both_checkpoints: bool = opt(
        True, "When a student's best dev checkpoint is not its last, also evaluate the one eval.checkpoint does not "
        "name (a row of the report's checkpoint table); False saves that evaluation per such student."
    )
    untrained: bool = opt(True, "Evaluate each distinct student base model before training (zero-shot, greedy).")
    untrained_shots: int = opt(
        0, "Also evaluate each untrained student base model few-shot: this many exemplars with rationales before "
        "each question (the paper's few-shot prompted student). 0 = zero-shot only."
    )


@dataclass(frozen=True)
class ResourcesConfig:
    address: str | None = opt(None, "Ray cluster address; None starts a local cluster inside the job.")
    num_cpus: int | None = opt(
        4,
        "Logical CPUs of the local cluster. Above the core count on purpose: with as many logical CPUs as cores, "
        "Ray Data's actors and Ray Train's workers can wait on each other's reservations for ever.",
    )
    engine_cpus: float = opt(1.0, "CPUs reserved by each vLLM engine actor.")
    omp_threads: int | None = opt(None, "OMP_NUM_THREADS for training workers (None: leave as is).")
    worker_logs: bool = opt(
        False, "Also show the Ray workers' own output (vLLM engines, training workers) in the job's terminal; off, "
        "it stays in the Ray session's log folder, which the job names at start."
    )


@dataclass(frozen=True)
class OutputConfig:
    dir: str = opt("runs/experiment", "Experiment folder: every stage writes its artifacts below it.")
    cache_dir: str = opt("~/.cache/scotd", "Where converted offline models and datasets are cached.")


@dataclass(frozen=True)
class TrackingConfig:
    backend: Literal["mlflow", "wandb", "none"] = opt(
        "mlflow", "Experiment tracking: mlflow or wandb log the config, each stage's figures and every student's "
        "training curves (scotd/tracking.py); none logs nothing."
    )
    uri: str = opt(
        "", "MLflow: a tracking server (http://host:5000) or a database; empty: a file store in the experiment folder "
        "(mlruns/), nothing to start. W&B: the server's address (API key from the environment); empty: offline "
        "runs in the experiment folder (wandb/). Students training on other nodes than the driver's need a server."
    )
    project: str = opt("", "MLflow experiment or W&B project name; empty: the config's name.")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = opt("experiment", "Experiment name (report title).")
    tasks: tuple[TaskConfig, ...] = opt((), "Tasks whose questions are labelled and evaluated.")
    teacher: TeacherConfig = opt(TeacherConfig(), "Teacher sampling stage.")
    corpus: CorpusConfig = opt(CorpusConfig(), "Corpus filtering stage.")
    students: tuple[StudentConfig, ...] = opt((), "Students to train (SCoTD and baselines).")
    eval: EvalConfig = opt(EvalConfig(), "Evaluation stage.")
    resources: ResourcesConfig = opt(ResourcesConfig(), "Ray cluster and resources.")
    output: OutputConfig = opt(OutputConfig(), "Artifact locations.")
    tracking: TrackingConfig = opt(TrackingConfig(), "Experiment tracking (MLflow).")
    without_native_bf16: dict[str, Any] = field(default_factory=dict, metadata={"help": (
        "Sizes for a CPU without native bf16 (no AMX / AVX-512-BF16: every model runs float32, several times "
        "slower): dotted keys and values (e.g. {teacher.num_samples: 1, tasks.0.max_eval: 300}) that `scotd run` "
        "applies on such a machine, before the command line's overrides (which win). The job says which it "
        "applied; `cpu_sized` records it.")})
    cpu_sized: bool = opt(False, "Set by the job when it applied without_native_bf16 (not to be set by hand).")

    def student_setting(self, s: StudentConfig) -> str:
        """The corpus setting a student trains in: its own, else the experiment's."""
        return s.setting or self.corpus.setting

    def engine(self, role: Literal["teacher", "teacher_eval", "student_eval", "judge"],
               student: StudentConfig | None = None) -> EngineConfig:
        """The engine pool of each use: the teacher section as written for sampling; for evaluation and the judge
        the same engines with the evaluation batch size and as many batches in flight as fill them; a student or
        untrained base model is small, so it gets one single-GPU replica with none of the teacher's ``engine_kwargs``,
        and the chat template only of a ``student`` trained inside it (its model is given per run)."""
        engine = EngineConfig(**{f.name: getattr(self.teacher, f.name) for f in dataclasses.fields(EngineConfig)})
        if role == "teacher":
            return engine
        engine = dataclasses.replace(engine, batch_size=self.eval.batch_size, concurrent_batches=None)
        if role == "judge":
            return dataclasses.replace(engine, model=self.eval.judge_model or self.teacher.model)
        if role == "student_eval":
            return dataclasses.replace(engine, model="", tensor_parallel_size=1, pipeline_parallel_size=1,
                                       chat_template=bool(student and student.chat_template), num_replicas=1,
                                       max_replicas=None, resource=None, engine_kwargs={})
        return engine
