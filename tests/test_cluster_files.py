"""Checks the files in cluster/: Ray's own config schema, then scotd's rules for clusters.

Rule `accepted_by_ray` runs the autoscaler configs through the two calls `ray up` makes before
touching a cloud: `prepare_config` (merge the provider's defaults.yaml) and `validate_config`
(ray/autoscaler/ray-schema.json plus Ray's cross-field checks), both in
`ray.autoscaler._private.util` in Ray 2.60; if a later Ray moves them, the shipped schema file is
used with jsonschema. The Ray wheel has no KubeRay schema, so the RayJob's fields are checked here.

Each rule returns a list of problems. Rules run on the real files (no problems expected) and on
mutated in-memory copies (the named problem expected), so a rule that accepts everything fails.
No network, credentials or GPU.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_DIR = REPO / "cluster"
AUTOSCALER_FILES = ("aws.yaml", "gcp.yaml")
KUBERAY_FILES = ("kuberay-rayjob.yaml",)

# The custom resource scotd's teacher stage requests so vLLM replicas land on teacher nodes only.
TEACHER_RESOURCE = "teacher"
# Machine types that come with GPUs: AWS p*/g* families, GCP a2/a3/a4/g2/g4 series.
GPU_MACHINE_TYPE = re.compile(r"^(?:[pg]\d[a-z]*\.|[ag]\d-)")
K8S_GPU = "nvidia.com/gpu"

Problems = list[str]
Mutation = Callable[[dict], None]
Rule = Callable[[dict], Problems]
DELETE = object()


def load_yaml(name: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~40x faster
    return yaml.load((CLUSTER_DIR / name).read_text(), Loader=loader)


def uncommented_keys(text: str) -> list[str]:
    """Mapping keys whose line has no inline comment and no comment line right above it."""
    lines = text.splitlines()
    key_lines: set[int] = set()

    def collect(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                key_lines.add(key.start_mark.line)
                collect(value)
        elif isinstance(node, yaml.SequenceNode):
            for value in node.value:
                collect(value)

    collect(yaml.compose(text))
    missing = []
    for index in sorted(key_lines):
        above = index - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        if " #" not in lines[index] and (above < 0 or not lines[above].lstrip().startswith("#")):
            missing.append(f"line {index + 1}: {lines[index].strip()}")
    return missing


def _walk(doc: Any, path: str) -> tuple[Any, str]:
    """Parent and key of a dotted path; `key[x]` picks list item x (an index or a groupName)."""
    *parents, last = path.split(".")
    for part in parents:
        match = re.fullmatch(r"([\w-]+)\[([\w-]+)\]", part)
        if not match:
            doc = doc[part]
        elif match[2].isdigit():
            doc = doc[match[1]][int(match[2])]
        else:
            doc = next(item for item in doc[match[1]] if item.get("groupName") == match[2])
    return doc, last


def setting(path: str, value: Any) -> Mutation:
    def mutate(doc: dict) -> None:
        parent, key = _walk(doc, path)
        if value is DELETE:
            del parent[key]
        else:
            parent[key] = value

    return mutate


def deleting(path: str) -> Mutation:
    return setting(path, DELETE)


def replacing_in_head_start(old: str, new: str) -> Mutation:
    def mutate(config: dict) -> None:
        commands = config["head_start_ray_commands"]
        config["head_start_ray_commands"] = [command.replace(old, new) for command in commands]

    return mutate


def adding_ingress(port: int, cidr: str) -> Mutation:
    rule = {"FromPort": port, "ToPort": port, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": cidr}]}
    return setting("provider.security_group", {"GroupName": "scotd", "IpPermissions": [rule]})


def dropping_network_pinning(config: dict) -> None:
    for node_type in config["available_node_types"].values():
        node_type["node_config"].pop("SecurityGroupIds", None)
        node_type["node_config"].pop("networkInterfaces", None)


# ---------------------------------------------------------------- Ray's schema


def validate_with_ray(config: dict[str, Any]) -> None:
    """Raise if Ray would reject this cluster config (what `ray up` checks before launching)."""
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:  # private API; fall back to the schema file Ray ships
        import ray.autoscaler

        schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
        jsonschema.validate(config, json.loads(schema_path.read_text()))
        return
    validate_config(prepare_config(copy.deepcopy(config)))


def accepted_by_ray(config: dict) -> Problems:
    try:
        validate_with_ray(config)
    except (jsonschema.ValidationError, ValueError) as error:
        return [f"Ray rejects the config: {str(error).splitlines()[0]}"]
    return []


# ---------------------------------------------------------------- autoscaler rules


def is_gpu_type(node_type: dict) -> bool:
    node_config = node_type.get("node_config", {})
    machine = node_config.get("InstanceType") or node_config.get("machineType") or ""
    return bool(
        node_type.get("resources", {}).get("GPU", 0) > 0
        or GPU_MACHINE_TYPE.match(machine)
        or node_config.get("guestAccelerators")
    )


def head_ray_start(config: dict) -> str:
    return " ".join(c for c in config.get("head_start_ray_commands", []) if "ray start" in c)


def gpu_workers_start_at_zero(config: dict) -> Problems:
    problems = []
    for name, node_type in config["available_node_types"].items():
        if name == config["head_node_type"] or not is_gpu_type(node_type):
            continue
        if node_type.get("min_workers") != 0:
            problems.append(f"GPU node type {name} must set min_workers: 0")
        if not node_type["resources"].get("GPU"):
            problems.append(f"GPU node type {name} must declare its GPUs in resources")
    return problems


def gpu_workers_scale_down_when_idle(config: dict) -> Problems:
    minutes = config.get("idle_timeout_minutes")
    if not isinstance(minutes, (int, float)) or not 0 < minutes <= 60:
        return [f"idle_timeout_minutes must be set to 1-60 minutes, got {minutes!r}"]
    return []


def head_takes_no_gpu_work(config: dict) -> Problems:
    problems = []
    head = config["available_node_types"][config["head_node_type"]]
    if head.get("resources", {}).get("GPU") != 0:
        problems.append("head node type must declare resources GPU: 0")
    start = head_ray_start(config)
    if "--head" not in start:
        problems.append("head_start_ray_commands has no `ray start --head`")
    if not re.search(r"--num-gpus[= ]0(?!\S)", start):
        problems.append("head `ray start` must pass --num-gpus=0")
    return problems


def dashboard_on_loopback(config: dict) -> Problems:
    problems = []
    if not re.search(r"--dashboard-host[= ](127\.0\.0\.1|localhost)(?!\S)", head_ray_start(config)):
        problems.append("head `ray start` must pass --dashboard-host=127.0.0.1")
    if "0.0.0.0" in json.dumps(config):
        problems.append("0.0.0.0 appears in the config (open bind address or world CIDR)")
    return problems


def token_auth_on(config: dict) -> Problems:
    problems = [
        f"{key}: `ray start` without RAY_AUTH_MODE=token"
        for key in ("head_start_ray_commands", "worker_start_ray_commands")
        for command in config.get(key, [])
        if "ray start" in command and "RAY_AUTH_MODE=token" not in command
    ]
    if "~/.ray/auth_token" not in config.get("file_mounts", {}):
        problems.append("file_mounts must copy ~/.ray/auth_token to the nodes")
    return problems


def only_ssh_ingress(config: dict) -> Problems:
    """Nothing but tcp/22, from a chosen CIDR, may be opened; and Ray must not open it wider."""
    problems = []
    provider = config["provider"]
    for rule in provider.get("security_group", {}).get("IpPermissions", []):
        if (rule.get("FromPort"), rule.get("ToPort")) != (22, 22):
            problems.append(f"ingress other than port 22: {rule}")
        cidrs = [r.get("CidrIp") for r in rule.get("IpRanges", [])]
        cidrs += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
        if any(cidr in ("0.0.0.0/0", "::/0") for cidr in cidrs):
            problems.append(f"ingress from the whole internet: {rule}")
    for name, node_type in config["available_node_types"].items():
        node_config = node_type["node_config"]
        # Ray's AWS provider adds SSH from 0.0.0.0/0 to any security group it creates itself.
        if provider["type"] == "aws" and not node_config.get("SecurityGroupIds"):
            problems.append(f"{name}: no SecurityGroupIds, so Ray would create an open SSH group")
        # Ray's GCP provider falls back to the region's first subnet (usually the default network).
        if provider["type"] == "gcp" and not node_config.get("networkInterfaces"):
            problems.append(f"{name}: no networkInterfaces, so Ray would use the default network")
    for option in config.get("docker", {}).get("run_options", []):
        if re.match(r"(-p|--publish)\b", option):
            problems.append(f"docker publishes a port: {option}")
    return problems


def metrics_port_fixed(config: dict) -> Problems:
    """Every node serves its metrics on one known port, the one README.md tells a Prometheus to find."""
    return [f"{key}: `ray start` without a fixed --metrics-export-port" for key in
            ("head_start_ray_commands", "worker_start_ray_commands")
            if not re.search(r"--metrics-export-port[= ]\d+", " ".join(config.get(key, [])))]


def teacher_resource_on_gpu_nodes(config: dict) -> Problems:
    offering = {
        name: node_type["resources"]
        for name, node_type in config["available_node_types"].items()
        if node_type.get("resources", {}).get(TEACHER_RESOURCE)
    }
    if not offering:
        return [f"no node type offers the {TEACHER_RESOURCE!r} resource"]
    # scotd's engine replicas ask for one unit per GPU they use, so a node must offer exactly one per GPU.
    return [f"{name} offers {r[TEACHER_RESOURCE]} {TEACHER_RESOURCE!r} units for {r.get('GPU', 0)} GPUs "
            "(want one per GPU)" for name, r in offering.items() if r[TEACHER_RESOURCE] != r.get("GPU")]


# For each rule, copies it must reject: (case id, mutation, text expected in a problem).
STUDENT = "available_node_types.student_gpu"
TEACHER = "available_node_types.teacher_gpu"
NOT_ALLOWED = "Additional properties are not allowed"
AUTOSCALER_RULE_BREAKERS: dict[Rule, list[tuple[str, Mutation, str]]] = {
    accepted_by_ray: [
        ("misspelled-top-level-key", setting("idle_timeout_minute", 10), NOT_ALLOWED),
        ("misspelled-node-type-key", setting(f"{STUDENT}.min_worker", 0), NOT_ALLOWED),
        ("misspelled-docker-key", setting("docker.imagee", "rayproject/ray"), NOT_ALLOWED),
        ("min-workers-as-string", setting(f"{STUDENT}.min_workers", "0"), "is not of type"),
        ("fractional-resource", setting(f"{STUDENT}.resources.GPU", 0.5), "is not of type"),
        ("negative-resource", setting(f"{STUDENT}.resources.GPU", -1), "less than the minimum"),
        ("missing-node-config", deleting(f"{STUDENT}.node_config"), "is a required property"),
        ("unknown-head-type", setting("head_node_type", "nope"), "must be one of"),
        ("min-workers-above-max-workers", setting(f"{STUDENT}.min_workers", 99), "max_workers"),
    ],
    gpu_workers_start_at_zero: [
        ("teacher-kept-warm", setting(f"{TEACHER}.min_workers", 1), "min_workers: 0"),
        ("student-min-workers-implicit", deleting(f"{STUDENT}.min_workers"), "min_workers: 0"),
        ("gpu-type-without-gpu-resource", setting(f"{STUDENT}.resources", {}), "declare its GPUs"),
    ],
    gpu_workers_scale_down_when_idle: [
        ("no-idle-timeout", deleting("idle_timeout_minutes"), "idle_timeout_minutes"),
    ],
    head_takes_no_gpu_work: [
        ("head-may-offer-gpus", replacing_in_head_start("--num-gpus=0", ""), "--num-gpus=0"),
        ("head-gpu-undeclared", setting("available_node_types.head_cpu.resources", {}), "GPU: 0"),
    ],
    dashboard_on_loopback: [
        ("dashboard-on-all-interfaces", replacing_in_head_start("127.0.0.1", "0.0.0.0"), "0.0.0.0"),
    ],
    token_auth_on: [
        ("head-without-token-auth", replacing_in_head_start("RAY_AUTH_MODE=token", ""), "RAY_AUTH"),
        ("token-not-shipped", setting("file_mounts", {}), "auth_token"),
    ],
    only_ssh_ingress: [
        ("dashboard-port-opened", adding_ingress(8265, "203.0.113.0/24"), "port 22"),
        ("ssh-from-anywhere", adding_ingress(22, "0.0.0.0/0"), "whole internet"),
        ("ray-picks-the-network", dropping_network_pinning, "so Ray would"),
        ("docker-publishes-port", setting("docker.run_options", ["-p 8265:8265"]), "publishes"),
    ],
    metrics_port_fixed: [
        ("head-metrics-port-random", replacing_in_head_start("--metrics-export-port=8080", ""), "head_start"),
        ("worker-metrics-port-random", setting("worker_start_ray_commands", ["ray start --address=x:6379"]),
         "worker_start"),
    ],
    teacher_resource_on_gpu_nodes: [
        ("teacher-resource-missing", setting(f"{TEACHER}.resources", {"GPU": 8}), "no node type"),
        ("teacher-resource-one-per-node", setting(f"{TEACHER}.resources", {"GPU": 8, "teacher": 1}), "one per GPU"),
        ("teacher-resource-on-cpu-node", setting(f"{TEACHER}.resources", {"CPU": 8, "teacher": 8}), "one per GPU"),
    ],
}


# ---------------------------------------------------------------- KubeRay RayJob

# Fields of the ray.io/v1 Go types (KubeRay's ray-operator/apis/ray/v1, plus authOptions from
# KubeRay 1.5.1), to catch misspelled keys, which the API server drops or rejects. Add a field
# here when KubeRay gains one you need.
RAYJOB_SPEC_FIELDS = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
    "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint",
    "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus",
    "entrypointNumGpus", "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend",
}
RAYCLUSTER_SPEC_FIELDS = {
    "headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
    "autoscalerOptions", "headServiceAnnotations", "suspend", "authOptions",
}
HEAD_GROUP_FIELDS = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP_FIELDS = {
    "groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams",
    "template", "scaleStrategy", "suspend", "idleTimeoutSeconds",
}
EXPECTED_WORKER_GROUPS = {"teacher-gpu", "student-gpu"}


def cluster_spec(job: dict) -> dict:
    return job["spec"]["rayClusterSpec"]


def all_groups(job: dict) -> list[tuple[str, dict]]:
    spec = cluster_spec(job)
    workers = spec.get("workerGroupSpecs", [])
    return [("head", spec["headGroupSpec"])] + [(g.get("groupName", "?"), g) for g in workers]


def containers(group: dict) -> list[dict]:
    return group.get("template", {}).get("spec", {}).get("containers", [])


def gpus_requested(group: dict) -> int:
    total = 0
    for container in containers(group):
        resources = container.get("resources", {})
        requested = resources.get("requests", {}).get(K8S_GPU, 0)
        total += int(resources.get("limits", {}).get(K8S_GPU, requested))
    return total


def rayjob_required_fields(job: dict) -> Problems:
    """What KubeRay needs to build the cluster and submit the job (load_yaml wants 1 document)."""
    problems = []
    if (job.get("apiVersion"), job.get("kind")) != ("ray.io/v1", "RayJob"):
        problems.append(f"need apiVersion ray.io/v1, kind RayJob: {job.get('apiVersion')!r}")
    if not job.get("metadata", {}).get("name"):
        problems.append("metadata.name is required")
    spec = job.get("spec", {})
    entrypoint = spec.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        problems.append("spec.entrypoint is required")
    elif not (match := re.fullmatch(r"python jobs/distill\.py (configs/[\w./-]+\.yaml)(?: [\w.]+=\S+)*",
                                    entrypoint.strip())):
        problems.append(f"entrypoint should run jobs/distill.py on a config (key=value overrides after it): "
                        f"{entrypoint!r}")
    elif not (REPO / match[1]).is_file():
        problems.append(f"entrypoint's config {match[1]} is not in the repository")
    head = spec.get("rayClusterSpec", {}).get("headGroupSpec")
    if not isinstance(head, dict):
        return [*problems, "spec.rayClusterSpec.headGroupSpec is required"]
    if not isinstance(head.get("rayStartParams"), dict):
        problems.append("headGroupSpec.rayStartParams is required (may be {})")
    if not containers(head):
        problems.append("headGroupSpec.template.spec.containers is required")
    groups = cluster_spec(job).get("workerGroupSpecs")
    if not isinstance(groups, list) or not groups:
        return [*problems, "rayClusterSpec.workerGroupSpecs must list the worker groups"]
    names = [group.get("groupName") for group in groups]
    if len(set(names)) != len(names):
        problems.append(f"groupName values must be unique: {names}")
    if missing := EXPECTED_WORKER_GROUPS - set(names):
        problems.append(f"worker groups missing: {sorted(missing)}")
    for group in groups:
        name = group.get("groupName")
        if not name:
            problems.append("every worker group needs a groupName")
        counts = [group.get(key) for key in ("minReplicas", "replicas", "maxReplicas")]
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            problems.append(f"{name}: replicas, minReplicas and maxReplicas must be integers")
        elif not counts[0] <= counts[1] <= counts[2]:
            problems.append(f"{name}: need minReplicas <= replicas <= maxReplicas, got {counts}")
        if not isinstance(group.get("rayStartParams"), dict):
            problems.append(f"{name}: rayStartParams is required (may be {{}})")
        if not containers(group):
            problems.append(f"{name}: template.spec.containers is required")
    return problems


def rayjob_known_fields(job: dict) -> Problems:
    spec = cluster_spec(job)
    checks = [("spec", job["spec"], RAYJOB_SPEC_FIELDS),
              ("rayClusterSpec", spec, RAYCLUSTER_SPEC_FIELDS),
              ("headGroupSpec", spec["headGroupSpec"], HEAD_GROUP_FIELDS)]
    checks += [(f"workerGroupSpecs[{group.get('groupName')}]", group, WORKER_GROUP_FIELDS)
               for group in spec.get("workerGroupSpecs", [])]
    return [f"{where}: unknown field {key!r}" for where, block, known in checks
            for key in block if key not in known]


def rayjob_gpu_groups_start_at_zero(job: dict) -> Problems:
    spec = cluster_spec(job)
    problems = [
        f"GPU group {group.get('groupName')} must start at 0 (replicas and minReplicas)"
        for group in spec["workerGroupSpecs"]
        if gpus_requested(group) and (group.get("minReplicas"), group.get("replicas")) != (0, 0)
    ]
    if spec.get("enableInTreeAutoscaling") is not True:
        problems.append("enableInTreeAutoscaling must be true, or GPU groups never leave 0")
    idle = spec.get("autoscalerOptions", {}).get("idleTimeoutSeconds")
    if not isinstance(idle, int) or not 0 < idle <= 3600:
        problems.append(f"autoscalerOptions.idleTimeoutSeconds must be 1-3600, got {idle!r}")
    return problems


def rayjob_head_takes_no_gpu_work(job: dict) -> Problems:
    head = cluster_spec(job)["headGroupSpec"]
    problems = []
    if head.get("rayStartParams", {}).get("num-gpus") != "0":
        problems.append('head rayStartParams must set num-gpus: "0"')
    if gpus_requested(head):
        problems.append(f"head pod must not request {K8S_GPU}")
    return problems


def rayjob_start_params_are_strings(job: dict) -> Problems:
    return [f"{name}: rayStartParams.{key} must be a string" for name, group in all_groups(job)
            for key, value in group.get("rayStartParams", {}).items() if not isinstance(value, str)]


def rayjob_teacher_resource(job: dict) -> Problems:
    """KubeRay wants rayStartParams.resources as a shell-quoted JSON string: '"{\\"x\\": 1}"'."""
    teacher = dict(all_groups(job)).get("teacher-gpu", {"rayStartParams": {}})
    raw = teacher["rayStartParams"].get("resources", "")
    if not (raw.startswith('"') and raw.endswith('"')):
        return [f"teacher-gpu: resources must be JSON wrapped in double quotes: {raw!r}"]
    resources = json.loads(raw[1:-1].replace('\\"', '"'))
    if not gpus_requested(teacher) or resources.get(TEACHER_RESOURCE) != gpus_requested(teacher):
        return [f"teacher-gpu must request GPUs and offer one {TEACHER_RESOURCE!r} unit per GPU"]
    return []


def mount_paths(group: dict) -> set[str]:
    return {mount["mountPath"] for container in containers(group) for mount in container.get("volumeMounts", [])}


def rayjob_outputs_on_shared_volume(job: dict) -> Problems:
    """output.dir (and task data) in the entrypoint: the driver's cwd is an uploaded copy of working_dir, so a
    relative or unmounted path would be lost with the job; every pod must mount output.dir (training workers write
    checkpoints under it, engines load students from it); URIs need no mount."""
    overrides = dict(item.split("=", 1) for item in job["spec"].get("entrypoint", "").split() if "=" in item)
    if "output.dir" not in overrides:
        return ["entrypoint must set output.dir (a path on the shared volume, or a URI)"]
    problems = []
    for key, value in overrides.items():
        if key != "output.dir" and not re.fullmatch(r"tasks\.\d+\.(train|eval)", key) or "://" in value:
            continue
        groups = all_groups(job) if key == "output.dir" else all_groups(job)[:1]  # data: read by the driver only
        for name, group in groups:
            if not any(value.startswith(mount.rstrip("/") + "/") for mount in mount_paths(group)):
                problems.append(f"{key}={value} is not under a volume the {name} pods mount")
    return problems


def rayjob_not_exposed(job: dict) -> Problems:
    """No LoadBalancer/NodePort/Ingress; the in-cluster dashboard is guarded by token auth."""
    head = cluster_spec(job)["headGroupSpec"]
    types = [head.get("serviceType"), head.get("headService", {}).get("spec", {}).get("type")]
    problems = [f"head Service type {t} exposes the cluster" for t in types
                if t in ("LoadBalancer", "NodePort")]
    if head.get("enableIngress"):
        problems.append("enableIngress exposes the dashboard")
    if cluster_spec(job).get("authOptions", {}).get("mode") != "token":
        problems.append("rayClusterSpec.authOptions.mode must be token")
    return problems


def rayjob_cleans_up(job: dict) -> Problems:
    problems = []
    if job["spec"].get("shutdownAfterJobFinishes") is not True:
        problems.append("shutdownAfterJobFinishes must be true")
    ttl = job["spec"].get("ttlSecondsAfterFinished")
    if not isinstance(ttl, int) or ttl < 0:
        problems.append(f"ttlSecondsAfterFinished must be a non-negative integer, got {ttl!r}")
    return problems


def rayjob_hf_token_from_secret(job: dict) -> Problems:
    problems = []
    for name, group in all_groups(job):
        for container in containers(group):
            env = {item["name"]: item for item in container.get("env", [])}
            ref = env.get("HF_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
            if not (ref.get("name") and ref.get("key")):
                problems.append(f"{name}/{container.get('name')}: HF_TOKEN needs a secretKeyRef")
    return problems


CLUSTER = "spec.rayClusterSpec"
HEAD = f"{CLUSTER}.headGroupSpec"
KR_TEACHER = f"{CLUSTER}.workerGroupSpecs[teacher-gpu]"
KR_STUDENT = f"{CLUSTER}.workerGroupSpecs[student-gpu]"
KR_TEACHER_PARAMS = f"{KR_TEACHER}.rayStartParams"
HEAD_CONTAINER = f"{HEAD}.template.spec.containers[0]"
LITERAL_HF_TOKEN = [{"name": "HF_TOKEN", "value": "not-from-a-secret"}]
RAYJOB_RULE_BREAKERS: dict[Rule, list[tuple[str, Mutation, str]]] = {
    rayjob_required_fields: [
        ("old-api-version", setting("apiVersion", "ray.io/v1alpha1"), "apiVersion"),
        ("no-entrypoint", deleting("spec.entrypoint"), "entrypoint"),
        ("head-without-template", deleting(f"{HEAD}.template"), "containers"),
        ("group-without-name", deleting(f"{KR_STUDENT}.groupName"), "groupName"),
        ("group-without-max-replicas", deleting(f"{KR_TEACHER}.maxReplicas"), "integers"),
        ("replicas-above-max", setting(f"{KR_STUDENT}.replicas", 9), "<= maxReplicas"),
    ],
    rayjob_known_fields: [
        ("misspelled-spec-field", setting("spec.shutdownAfterJobFinish", True), "JobFinish'"),
        ("misspelled-group-field", setting(f"{KR_TEACHER}.minReplica", 0), "minReplica'"),
    ],
    rayjob_gpu_groups_start_at_zero: [
        ("teacher-kept-warm", setting(f"{KR_TEACHER}.minReplicas", 1), "start at 0"),
        ("autoscaler-off", setting(f"{CLUSTER}.enableInTreeAutoscaling", False), "InTree"),
    ],
    rayjob_head_takes_no_gpu_work: [
        ("head-may-offer-gpus", deleting(f"{HEAD}.rayStartParams.num-gpus"), "num-gpus"),
    ],
    rayjob_start_params_are_strings: [
        ("num-gpus-as-int", setting(f"{HEAD}.rayStartParams.num-gpus", 0), "must be a string"),
    ],
    rayjob_teacher_resource: [
        ("teacher-resource-unquoted", setting(f"{KR_TEACHER_PARAMS}.resources", "{}"), "quotes"),
        ("teacher-resource-one-per-pod", setting(f"{KR_TEACHER_PARAMS}.resources", '"{\\"teacher\\": 1}"'),
         "one 'teacher' unit per GPU"),
    ],
    rayjob_outputs_on_shared_volume: [
        ("no-output-dir", setting("spec.entrypoint", "python jobs/distill.py configs/gpu/csqa-qwen7b.yaml"),
         "must set output.dir"),
        ("output-dir-in-the-working-dir", setting("spec.entrypoint", "python jobs/distill.py "
                                                  "configs/gpu/csqa-qwen7b.yaml output.dir=runs/x"), "head pods"),
        ("data-not-mounted", setting("spec.entrypoint", "python jobs/distill.py configs/gpu/csqa-qwen7b.yaml "
                                     "output.dir=/mnt/scotd/x tasks.0.train=/data/train.jsonl"), "tasks.0.train"),
        ("volume-missing-on-students", setting(f"{KR_STUDENT}.template.spec.containers[0].volumeMounts", []),
         "student-gpu pods"),
    ],
    rayjob_not_exposed: [
        ("head-load-balancer", setting(f"{HEAD}.serviceType", "LoadBalancer"), "LoadBalancer"),
        ("head-node-port", setting(f"{HEAD}.serviceType", "NodePort"), "NodePort"),
        ("dashboard-ingress", setting(f"{HEAD}.enableIngress", True), "Ingress"),
        ("token-auth-off", deleting(f"{CLUSTER}.authOptions"), "token"),
    ],
    rayjob_cleans_up: [
        ("cluster-kept", setting("spec.shutdownAfterJobFinishes", False), "shutdownAfter"),
        ("no-ttl", deleting("spec.ttlSecondsAfterFinished"), "ttlSecondsAfterFinished"),
    ],
    rayjob_hf_token_from_secret: [
        ("hf-token-literal", setting(f"{HEAD_CONTAINER}.env", LITERAL_HF_TOKEN), "secretKeyRef"),
    ],
}


# ---------------------------------------------------------------- rules on real and broken files

# Every rule is listed with at least one copy it must reject, so no rule can pass vacuously.
RULES = {name: AUTOSCALER_RULE_BREAKERS for name in AUTOSCALER_FILES}
RULES |= {name: RAYJOB_RULE_BREAKERS for name in KUBERAY_FILES}


@pytest.mark.parametrize(("name", "rule"), [
    pytest.param(name, rule, id=f"{name}-{rule.__name__}")
    for name, breakers in RULES.items() for rule in breakers
])
def test_cluster_file_follows_rule(name: str, rule: Rule) -> None:
    assert rule(load_yaml(name)) == []


@pytest.mark.parametrize(("name", "rule", "mutate", "expected"), [
    pytest.param(name, rule, mutate, expected, id=f"{name}-{case_id}")
    for name, breakers in RULES.items()
    for rule, cases in breakers.items() for case_id, mutate, expected in cases
])
def test_rule_catches_broken_copy(name: str, rule: Rule, mutate: Mutation, expected: str) -> None:
    doc = load_yaml(name)
    mutate(doc)
    assert any(expected in problem for problem in rule(doc)), rule(doc)


# ---------------------------------------------------------------- every file in cluster/

SECRET_PATTERNS = {
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key assignment": re.compile(r"aws_secret_access_key\s*[:=]\s*\S", re.IGNORECASE),
    "private key block": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GCP service-account key": re.compile(r'"private_key(?:_id)?"\s*:'),
    "literal secret value": re.compile(
        r"(?:TOKEN|SECRET|PASSWORD|API_KEY)\w*\s*[:=]\s*[\"']?[A-Za-z0-9/+_\-]{20,}"
    ),
}


def secrets_in(text: str) -> list[str]:
    return [label for label, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


def test_cluster_dir_holds_exactly_the_checked_files() -> None:
    """A new YAML in cluster/ must be added to a list above, so it cannot skip the checks."""
    assert {p.name for p in CLUSTER_DIR.glob("*.y*ml")} == set(AUTOSCALER_FILES + KUBERAY_FILES)


@pytest.mark.parametrize("path", sorted(CLUSTER_DIR.iterdir()), ids=lambda path: path.name)
def test_no_secrets_in_cluster_files(path: Path) -> None:
    assert secrets_in(path.read_text()) == []


@pytest.mark.parametrize("text", [
    pytest.param("HF_TOKEN: hf_" + "a1B2c3D4" * 5, id="hf-token"),
    pytest.param("AccessKey: AKIA" + "ABCDEFGHIJKLMNOP", id="aws-access-key"),
    pytest.param("aws_secret_access_key = abc", id="aws-secret-assignment"),
    pytest.param("-----BEGIN RSA PRIVATE KEY-----", id="private-key"),
    pytest.param('{"private_key_id": "x"}', id="gcp-key-file"),
    pytest.param("RAY_AUTH_TOKEN=" + "0123456789abcdef" * 2, id="literal-token-env"),
])
def test_secret_scan_catches(text: str) -> None:
    assert secrets_in(text)


@pytest.mark.parametrize("name", AUTOSCALER_FILES + KUBERAY_FILES)
def test_every_field_is_commented(name: str) -> None:
    """STYLE.md: cluster files are documentation, so each key has a comment on or above it."""
    assert uncommented_keys((CLUSTER_DIR / name).read_text()) == []


def test_uncommented_key_is_reported() -> None:
    text = "# the name\ncluster_name: scotd\nmax_workers: 2  \n\nhead_node_type: head  # why\n"
    assert uncommented_keys(text) == ["line 3: max_workers: 2"]
