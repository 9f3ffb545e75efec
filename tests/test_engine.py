"""Engine placement and thread settings (pure functions; the engine itself runs in the pipeline tests)."""

import pytest

from scotd.config import TeacherConfig
from scotd.engine import EngineSpec, bound_cores, replica_bundles
from scotd.teacher import engine_spec, replica_range


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
    with pytest.raises(ValueError, match="teacher.max_replicas"):
        replica_range(TeacherConfig(num_replicas=4, max_replicas=2))


def test_engine_spec_carries_the_throughput_settings():
    cfg = TeacherConfig(model="x", use_gpu=True, max_num_seqs=512, gpu_memory_utilization=0.8, max_model_len=4096,
                        dtype="bfloat16")
    spec = engine_spec(cfg, "/models/x")
    assert (spec.model, spec.max_num_seqs, spec.gpu_memory_utilization, spec.max_model_len, spec.dtype,
            spec.use_gpu) == ("/models/x", 512, 0.8, 4096, "bfloat16", True)
