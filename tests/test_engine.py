"""Engine placement and thread settings (pure functions; the engine itself runs in the pipeline tests), and the
progress stream over engine calls."""

import logging
import time
from pathlib import Path

import pytest

from scotd.config import TeacherConfig
from scotd.inference.metrics import EngineStats
from scotd.inference.pool import batches_to_fill, engine_capacity, pool_strategy, replica_bundles, replica_range
from scotd.inference.spec import EngineSpec, bound_cores, engine_spec


@pytest.mark.parametrize("bind, cores", [("0-1", [0, 1]), ("3", [3]), ("0,2,4-5", [0, 2, 4, 5]),
                                         ("0-3|4-7", [0, 1, 2, 3])])
def test_bound_cores(bind, cores):
    assert bound_cores(bind) == cores


def test_cpu_engine_is_one_bundle_of_cpus_without_gpus():
    assert replica_bundles(EngineSpec(model="m"), "teacher", 1.0) == [{"CPU": 1.0}]


def test_one_gpu_replica_asks_for_its_gpu_and_one_teacher_unit():
    spec = engine_spec(TeacherConfig(model="m", use_gpu=True, resource="teacher"), "m")
    assert replica_bundles(spec, "teacher", 1.0) == [{"CPU": 1.0, "GPU": 1.0, "teacher": 1.0}]


def test_tensor_and_pipeline_parallel_replica_gets_one_bundle_per_gpu():
    spec = engine_spec(TeacherConfig(model="m", use_gpu=True, tensor_parallel_size=4, pipeline_parallel_size=2), "m")
    bundles = replica_bundles(spec, "teacher", 2.0)
    assert len(bundles) == 8 and bundles[0] == {"CPU": 2.0, "GPU": 1.0, "teacher": 1.0}
    assert all(b == {"GPU": 1.0, "teacher": 1.0} for b in bundles[1:])
    assert sum(b["teacher"] for b in bundles) == 8  # a node offering one unit per GPU holds exactly one replica


def test_replica_range_fixed_or_autoscaling():
    assert replica_range(TeacherConfig(num_replicas=2)) == 2
    assert replica_range(TeacherConfig(num_replicas=2, max_replicas=2)) == 2
    assert replica_range(TeacherConfig(num_replicas=1, max_replicas=8)) == (1, 8)
    # max_replicas below num_replicas is refused when the config loads (test_config), the one place that checks it


def test_batches_in_flight_fill_the_engine_plus_one_waiting():
    cpu = EngineSpec(model="m")
    assert engine_capacity(cpu) == 256  # vLLM's CPU default (checked against a real engine in test_engine_loop)
    assert batches_to_fill(cpu, 8, 4) == 9  # 8 calls of 32 sequences fill 256, one more waits
    assert batches_to_fill(cpu, 16, 30) == 2  # the paper's N: one call of 480 sequences already overfills it
    assert batches_to_fill(EngineSpec(model="m", max_num_seqs=12), 2, 3) == 3
    gpu = EngineSpec(model="m", use_gpu=True)
    assert engine_capacity(gpu) == 1024 and batches_to_fill(gpu, 64, 30) == 2
    assert batches_to_fill(EngineSpec(model="m", use_gpu=True, max_num_seqs=512), 16, 1) == 33
    assert batches_to_fill(cpu, 1, 1) == 64  # a ceiling: batches this small should be made larger instead


@pytest.mark.parametrize("concurrent_batches", [1, 2, 9])
def test_an_autoscaling_pool_queues_enough_calls_for_ray_data_to_add_engines(concurrent_batches):
    import ray.data

    threshold = ray.data.DataContext.get_current().autoscaling_config.actor_pool_util_upscaling_threshold
    grows = pool_strategy((1, 8), concurrent_batches)
    assert (grows.min_size, grows.max_size, grows.max_concurrent_calls_per_actor) == (1, 8, concurrent_batches)
    # Ray Data adds an actor once tasks in flight / running slots reach the threshold
    assert grows.max_tasks_in_flight_per_actor / concurrent_batches >= threshold
    fixed = pool_strategy(3, concurrent_batches)
    assert (fixed.min_size, fixed.max_size, fixed.max_tasks_in_flight_per_actor) == (3, 3, concurrent_batches + 1)


def test_engine_spec_carries_the_throughput_settings():
    cfg = TeacherConfig(model="x", use_gpu=True, max_num_seqs=512, gpu_memory_utilization=0.8, max_model_len=4096,
                        dtype="bfloat16")
    spec = engine_spec(cfg, "/models/x")
    assert (spec.model, spec.max_num_seqs, spec.gpu_memory_utilization, spec.max_model_len, spec.dtype,
            spec.use_gpu) == ("/models/x", 512, 0.8, 4096, "bfloat16", True)


def test_engine_stats_take_each_engines_latest_count_over_its_own_active_time():
    import numpy as np

    def batch(engine, started, finished, busy, steps, seq_steps, rows=2):
        return {"engine_id": np.array([engine] * rows), "call_started_at": np.full(rows, started),
                "call_finished_at": np.full(rows, finished), "engine_busy_s": np.full(rows, busy),
                "engine_steps": np.full(rows, steps), "engine_seq_steps": np.full(rows, seq_steps)}

    stats = EngineStats()
    assert stats.summary() == {}
    # engine a: calls over 100..110 s, 9 s busy in the end (its later call came back first); engine b: 200..205 s
    for b in (batch("a", 104.0, 110.0, 9.0, 30, 600), batch("a", 100.0, 106.0, 5.0, 20, 400),
              batch("b", 200.0, 205.0, 3.0, 10, 50)):
        stats.add(b)
    summary = stats.summary()
    assert summary["engines"] == 2 and summary["engine_busy_s"] == 12.0 and summary["engine_steps"] == 40
    assert summary["engine_busy_share"] == pytest.approx(12.0 / 15.0)
    assert summary["sequences_per_step"] == pytest.approx(650 / 40)


def test_progress_streams_each_engine_call_as_it_finishes(ray_cluster, tmp_path, caplog):
    """The consumer sees each engine call's block when it is done, not all blocks at the end. The engine actor is
    stood in for by a class that takes one second per call and leaves a marker file (only the streaming is under
    test; the real engine streams through the same code in the pipeline tests)."""
    import ray

    from scotd.inference.metrics import stream_batches

    class SlowCalls:  # defined here so that Ray ships it by value to its worker
        def __init__(self, marks: str):
            self.marks = Path(marks)

        def __call__(self, batch):
            time.sleep(1.0)
            (self.marks / f"{batch['question_id'][0]}.done").touch()
            return batch

    ds = ray.data.from_items([{"question_id": f"q{i:02d}"} for i in range(50)])
    out = ds.map_batches(SlowCalls, fn_constructor_kwargs={"marks": str(tmp_path)}, batch_size=10, concurrency=1,
                         num_cpus=1)
    calls_done_at_first_batch = None
    with caplog.at_level(logging.INFO, logger="scotd.inference"):
        for batch in stream_batches(out, total=50, label="eval x"):
            if calls_done_at_first_batch is None:
                calls_done_at_first_batch = len(list(tmp_path.glob("*.done")))
            assert len(batch["question_id"]) == 10  # one block per engine call
    assert calls_done_at_first_batch is not None and calls_done_at_first_batch < 4, calls_done_at_first_batch
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[eval x]")]
    assert len(lines) == 1 and lines[0].startswith("[eval x] 50/50 questions done in ")
