"""Engine calls that overlap: ``EngineLoop`` serves requests added while the engine steps, and the Ray Data stage
hands an engine ``concurrent_batches`` batches at once (no more; unset, as many as keep the engine full).

Real stack: the tiny teacher in vLLM's CPU engine, inside Ray workers of the session's Ray head."""

import logging
import threading
import time
from dataclasses import asdict
from types import SimpleNamespace

import pytest

from scotd.inference.loop import EngineLoop

pytestmark = pytest.mark.slow

N, TOKENS = 3, 48


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, shared_data):
    from scotd.experiment import format_texts
    from scotd.prompts import load_exemplars, student_prompt, teacher_prompt
    from scotd.tasks import load_questions
    from scotd.tiny import ensure_tiny_model

    questions = load_questions(shared_data / "commonsenseqa" / "train_rand_split.jsonl", "commonsenseqa",
                               "csqa").questions[:12]
    shots = load_exemplars("commonsenseqa", "csqa")[:3]
    folder = ensure_tiny_model("teacher", tmp_path_factory.mktemp("tiny") / "teacher",
                               [student_prompt(q) for q in questions], format_texts(questions, {"csqa": shots}))
    return str(folder), questions, shots, [teacher_prompt(q, shots) for q in questions]


def engine_actors(state: tuple[str, str]) -> list:
    """The stage's engine actors whose state matches ``state`` (a ``list_actors`` filter: operator, value)."""
    from ray.util.state import list_actors

    return [a for a in list_actors(filters=[("state", *state)], limit=1000) if "VLLMGenerator" in (a.class_name or "")]


def wait_until_no_engines(state: tuple[str, str], after: str) -> None:
    """Engines hold CPUs (or GPUs) the next stage needs: none matching ``state`` may be left a minute ``after``."""
    deadline = time.monotonic() + 60
    while engines := engine_actors(state):
        assert time.monotonic() < deadline, f"engine actors still alive a minute after {after}: {engines}"
        time.sleep(1)


def test_engine_loop_serves_requests_added_while_it_steps(ray_cluster, tiny_teacher):
    import ray

    model, _, _, prompts = tiny_teacher

    # max_calls=1: the worker exits afterwards, so no later test gets a pooled worker whose torch vLLM has patched
    # (its CPU worker turns torch.set_num_threads into a no-op) and that still holds this engine.
    @ray.remote(num_cpus=1, max_calls=1)
    def run() -> dict:
        from vllm import SamplingParams

        from scotd.inference.spec import EngineSpec, build_llm
        from scotd.inference.pool import engine_capacity

        spec = EngineSpec(model=model, max_model_len=1024)
        llm = build_llm(spec)

        def params(seed: int):  # forced lengths: the first group is still running when the second one is added
            return SamplingParams(n=N, temperature=1.0, seed=seed, max_tokens=TOKENS, ignore_eos=True)

        reference = llm.generate(prompts, [params(i) for i in range(len(prompts))], use_tqdm=False)
        loop = EngineLoop(lambda: llm)
        half = len(prompts) // 2
        first = loop.submit(prompts[:half], [params(i) for i in range(half)])
        first_done_when_second_added = first.done()
        second = loop.submit(prompts[half:], [params(i) for i in range(half, len(prompts))])
        too_long = loop.submit(["word " * 2000], [params(0)])  # over max_model_len: refused, alone
        outputs = first.result(timeout=300) + second.result(timeout=300)
        try:
            too_long.result(timeout=60)
            refused = "accepted"
        except Exception as error:  # noqa: BLE001 - its message is the check
            refused = str(error)
        account = asdict(loop.account)
        loop.close()
        try:
            loop.submit(prompts[:1], [params(0)])
            submit_after_close = "accepted"
        except RuntimeError as error:
            submit_after_close = str(error)
        return {
            # Prompt tokens this request found in the prefix cache: in a fresh engine's first call, only blocks
            # that other requests of the same step allocated (the few-shot prefix, the question's other samples).
            "reference_cached_tokens": [o.num_cached_tokens for o in reference],
            "account": account,
            "loop_thread_alive": loop._thread.is_alive(),
            "submit_after_close": submit_after_close,
            "refused": refused,
            "first_done_when_second_added": first_done_when_second_added,
            "reference_prompt_ids": [o.prompt_token_ids for o in reference],
            "prompt_ids": [o.prompt_token_ids for o in outputs],
            "samples": [[len(c.token_ids) for c in o.outputs] for o in outputs],
            "engine_idle": not llm.llm_engine.has_unfinished_requests(),
            "max_num_seqs": llm.llm_engine.vllm_config.scheduler_config.max_num_seqs,
            "capacity": engine_capacity(spec),
        }

    got = ray.get(run.remote(), timeout=600)
    assert not got["first_done_when_second_added"]
    # Every request answered once, in submission order, with the prompt tokenized as LLM.generate does it.
    assert got["prompt_ids"] == got["reference_prompt_ids"]
    assert got["samples"] == [[TOKENS] * N] * len(prompts)
    assert got["engine_idle"]
    # The stage sizes its batches in flight by what the engine decodes at once; with max_num_seqs unset that is
    # vLLM's own default, which scotd has to know before any engine exists.
    assert got["capacity"] == got["max_num_seqs"], got
    assert "maximum context length" in got["refused"], got["refused"]
    # The stage sends each batch as one call: a prompt and the few-shot prefix are computed once even when every
    # request starts in the same engine step (scotd/inference/__init__.py's docstring).
    assert all(cached >= 32 for cached in got["reference_cached_tokens"]), got["reference_cached_tokens"]
    # The loop's own account: every step counted and timed, with all 12 prompts' N samples in flight at first
    account = got["account"]
    assert account["steps"] >= TOKENS and account["busy_s"] > 0
    assert 1 <= account["seq_steps"] / account["steps"] <= len(prompts) * N
    # closed: its thread is gone (it no longer holds the engine) and it takes no more work
    assert not got["loop_thread_alive"] and got["submit_after_close"] == "the engine loop is closed"


class StandInEngine:
    """An engine stand-in that records the step count at which each request was added; its requests finish after
    ``steps_per_request`` steps. (A real engine's steps cannot be paused mid-step from a test.)"""

    def __init__(self, steps_per_request: int = 3):
        self.steps = 0
        self.steps_per_request = steps_per_request
        self.added_at: dict[str, int] = {}
        self.running: dict[str, int] = {}
        self.in_step = threading.Event()
        self.release = threading.Event()

    def add_request(self, request_id, prompt, params):
        if prompt["prompt"] == "refuse me":
            raise ValueError("prompt refused")
        self.added_at[request_id] = self.steps
        self.running[request_id] = self.steps_per_request

    def abort_request(self, request_ids):
        for request_id in request_ids:
            self.running.pop(request_id)

    def has_unfinished_requests(self):
        return bool(self.running)

    def get_num_unfinished_requests(self):
        return len(self.running)

    def step(self):
        self.in_step.set()
        if self.steps == 0:  # the first step waits for the test (bounded: a loop that blocks submit fails, not hangs)
            self.release.wait(timeout=10)
        self.steps += 1
        outputs = []
        for request_id in list(self.running):
            self.running[request_id] -= 1
            finished = self.running[request_id] == 0
            if finished:
                del self.running[request_id]
            outputs.append(SimpleNamespace(request_id=request_id, finished=finished, added_at=self.added_at[request_id]))
        return outputs


def test_a_group_submitted_during_a_step_joins_the_next_step():
    """``submit`` must not wait for the running step, and the step thread must not starve submitters: the group
    submitted while step 1 runs is in the engine for step 2. A refused group fails alone, and withdraws what it
    had added."""
    engine = StandInEngine()
    loop = EngineLoop(lambda: SimpleNamespace(llm_engine=engine), thread_setup=lambda: None)
    first = loop.submit(["a", "b"], [SimpleNamespace(), SimpleNamespace()])
    assert engine.in_step.wait(timeout=10)
    started = time.monotonic()
    second = loop.submit(["c"], [SimpleNamespace()])
    refused = loop.submit(["d", "refuse me"], [SimpleNamespace(), SimpleNamespace()])
    submit_s = time.monotonic() - started
    engine.release.set()
    assert [o.added_at for o in first.result(timeout=10)] == [0, 0]
    assert [o.added_at for o in second.result(timeout=10)] == [1]
    assert submit_s < 5, f"submit waited {submit_s:.1f} s for a running step"
    with pytest.raises(ValueError, match="prompt refused"):
        refused.result(timeout=10)
    assert not engine.running  # "d" was withdrawn with its group
    loop.close()
    assert loop.account.steps == 4  # 3 steps for the first group, the second group's last one


def test_a_failed_engine_step_fails_every_waiting_group_and_later_submits():
    """A stand-in engine whose step raises (a real engine cannot be made to fail on demand here)."""

    class BrokenEngine(StandInEngine):
        def step(self):
            time.sleep(0.2)  # the second group is queued before the step fails
            raise RuntimeError("device lost")

    loop = EngineLoop(lambda: SimpleNamespace(llm_engine=BrokenEngine()))
    groups = [loop.submit(["a", "b"], [SimpleNamespace(), SimpleNamespace()]),
              loop.submit(["c"], [SimpleNamespace()])]
    for group in groups:
        with pytest.raises(RuntimeError, match="device lost"):
            group.result(timeout=30)
    with pytest.raises(RuntimeError, match="the vLLM engine failed earlier"):
        loop.submit(["d"], [SimpleNamespace()])
    loop._thread.join(timeout=30)  # the step thread has ended after the failure
    assert not loop._thread.is_alive()


@pytest.mark.parametrize(("concurrent_batches", "max_num_seqs", "most"), [(2, None, 2), (1, None, 1), (None, 12, 3)])
def test_stage_gives_each_engine_concurrent_batches_at_once(ray_cluster, tiny_teacher, concurrent_batches,
                                                            max_num_seqs, most, caplog):
    """Calls overlap in time with 2 and never with 1; unset, as many as fill the engine (max_num_seqs 12, batches
    of 2 questions x 3 samples: 2 calls fill it, and a third waits in its queue); every (question, sample) comes
    back once each time."""
    import ray

    from scotd.config import TeacherConfig
    from scotd.inference.spec import Sampling
    from scotd.inference.pool import generate
    from scotd.inference.spec import engine_spec
    from scotd.teacher import to_request

    model, questions, shots, _ = tiny_teacher
    cfg = TeacherConfig(model=model, max_model_len=1024, max_num_seqs=max_num_seqs)
    ds = ray.data.from_items([to_request(q, shots, cfg, N) for q in questions])
    caplog.set_level(logging.INFO, logger="scotd.inference")
    # Its own metrics tag: the session's cluster sums counters across tests, and other tests count run=teacher.
    out = generate(ds, engine_spec(cfg, model), Sampling(max_new_tokens=TOKENS), replicas=1, batch_size=2,
                   num_cpus=1, concurrent_batches=concurrent_batches, samples_per_request=N, run="test-overlap")
    rows = out.to_pandas()
    if concurrent_batches is None:  # the value the stage resolved and handed to Ray Data
        assert f"{most} batches of 2 x {N} sequences at once per engine (12 sequences a step at most)" in caplog.text
    # The engine actor is gone once the stage is done (the next stage needs its CPUs or GPU).
    wait_until_no_engines(("=", "ALIVE"), after="the stage")
    assert sorted(zip(rows.question_id, rows.sample_index)) == sorted((q.id, i) for q in questions for i in range(N))
    calls = sorted({(r.call_started_at, r.call_finished_at) for r in rows.itertuples()})
    assert len(calls) == len(questions) // 2
    overlapping = sum(later[0] < earlier[1] for earlier, later in zip(calls, calls[1:]))
    if most == 1:
        assert overlapping == 0, calls
    else:
        assert overlapping > 0, calls
        most_at_once = max(sum(s <= t < f for s, f in calls) for t, _ in calls)
        assert most_at_once <= most, calls


def test_cpu_engine_workers_start_with_one_openmp_thread_per_bound_core(ray_cluster):
    """Ray starts workers with OMP_NUM_THREADS = num_cpus (1); a CPU engine's worker must start with its bound
    cores instead (scotd/inference/spec.py: ``engine_process_env``), or its OpenMP threads sleep between parallel regions.
    Checked in real Ray workers: what the OpenMP runtime read at start-up, before anything set a thread count."""
    import os

    import ray

    from scotd.inference.spec import EngineSpec, bound_cores, engine_process_env

    env = engine_process_env(EngineSpec(model="unused"))
    cores = len(bound_cores(os.environ.get("VLLM_CPU_OMP_THREADS_BIND") or f"0-{(os.cpu_count() or 1) - 1}"))
    assert env == {"OMP_NUM_THREADS": str(cores)}
    assert engine_process_env(EngineSpec(model="unused", use_gpu=True)) == {}

    def startup_threads() -> tuple[str | None, int]:
        import torch

        return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()

    engine_worker = ray.remote(num_cpus=1, runtime_env={"env_vars": env}, max_calls=1)(startup_threads)
    plain_worker = ray.remote(num_cpus=1, max_calls=1)(startup_threads)
    assert ray.get(engine_worker.remote(), timeout=120) == (str(cores), cores)
    assert ray.get(plain_worker.remote(), timeout=120) == ("1", 1)  # Ray's default, which the engine must not keep


def test_an_autoscaling_pool_adds_an_engine_while_calls_queue(ray_cluster, tiny_teacher):
    """``max_replicas``: with calls queued at the first engine, Ray Data starts a second one (the pool's tasks in
    flight must reach Ray Data's upscaling threshold: scotd/inference/pool.py ``pool_strategy``; with one task more than
    running, the pool never grew). The test stops reading once the second engine actor exists: two CPU engines on
    two cores would share them for minutes."""
    import ray

    from scotd.config import TeacherConfig
    from scotd.inference.spec import Sampling
    from scotd.inference.pool import generate
    from scotd.inference.spec import engine_spec
    from scotd.teacher import to_request

    model, questions, shots, _ = tiny_teacher
    cfg = TeacherConfig(model=model, max_model_len=1024)
    # Far more calls than one engine answers while a second one starts: every question 16 times, one per call.
    requests = [{**to_request(q, shots, cfg, N), "question_id": f"{q.id}-{i}"} for i in range(16) for q in questions]
    out = generate(ray.data.from_items(requests), engine_spec(cfg, model), Sampling(max_new_tokens=TOKENS),
                   replicas=(1, 2), batch_size=1, num_cpus=1, concurrent_batches=2, samples_per_request=N,
                   run="test-autoscale")
    answered, most = 0, 0
    batches = iter(out.iter_batches(batch_size=None, batch_format="numpy"))
    for batch in batches:
        answered += len(set(batch["question_id"].tolist()))
        most = max(most, len(engine_actors(("!=", "DEAD"))))
        if most >= 2:
            break
    batches.close()  # stops the dataset's execution and its engines
    assert most == 2, f"one engine answered all {answered} calls"
    assert answered < len(requests)
    wait_until_no_engines(("!=", "DEAD"), after="the stage stopped")
