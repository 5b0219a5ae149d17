"""Offline checks of the Kubernetes manifests under k8s/ (no cluster, no network).

The manifests must agree with the code: ConfigMap/Secret keys with the variables of the settings'
concerns (`common/settings.py`), each process's settings parsed from them, KafkaTopic CRs with
`common/topics.py` and `ensure_topics`, KEDA triggers with each stage's `StageConfig`, container
args with the `amberscan` command line, and the custom resources with their CRD schemas (copied
under shared/data/crds, beside the shared data set), and every built-in resource with the
Kubernetes API's own schemas (strict: an unknown field is an error), read offline from the
pinned `kubernetes-validate` package. The overlays are built with `kustomize` (installed by
`stack/setup.sh`; a missing one fails, it never skips) and the same checks run on what
`kubectl apply -k` would send.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from amberscan.cli import build_parser, serve
from amberscan.cli import replay as replay_command
from amberscan.common import topics
from amberscan.common.data import places
from amberscan.common.settings import PROCESSES, Settings, from_variables, variables
from amberscan.model.recipe import SERVED_RECIPE

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SERVICES = ROOT / "services" / "amberscan"
# The CRD schemas sit beside the shared data set (`shared/data/crds`), found by the data set's
# own rule (`common/data.py`): AMBERSCAN_SHARED_DATA, else `shared/` beside the checkout or
# beside a folder above it (a clone as CI makes, or a git worktree kept a level down).
CRD_PLACES = [data_set.parent / "crds" for data_set in places(Settings().data.shared_data, ROOT)]
CRDS = next((place for place in CRD_PLACES if place.is_dir()), CRD_PLACES[0])
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())

# The Kafka consumers among `amberscan serve` services (the web map is served the same way).
STREAMING = [name for name in serve.STAGES if name != "web"]
# Deployments scaled on a consumer group they do not belong to: the model server follows the
# feature stage's lag.
SCALED_LIKE = {"model-server": "feature"}
GPU_TAINT_KEY = "nvidia.com/gpu"


# --- loading -------------------------------------------------------------------------------------


def _yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def _kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


@cache
def _patch_files() -> frozenset[Path]:
    """Files that kustomizations use as patches: partial objects, not resources."""
    found = set()
    for kfile in _kustomizations():
        spec = yaml.safe_load(kfile.read_text())
        for patch in spec.get("patches", []) or []:
            if "path" in patch:
                found.add((kfile.parent / patch["path"]).resolve())
    return frozenset(found)


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _resources() -> list[tuple[Path, dict[str, Any]]]:
    """Every object of every manifest file that is not a patch."""
    return [
        (path, obj)
        for path in _yaml_files()
        if path.resolve() not in _patch_files()
        for obj in _load(path)
    ]


def _base() -> list[dict[str, Any]]:
    return [obj for path, obj in _resources() if path.parent == K8S / "base"]


def _kustomize_command() -> list[str]:
    """kustomize from PATH, else where `stack/setup.sh` caches it (as stack/lib.sh names it)."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    lib = (ROOT / "stack" / "lib.sh").read_text()
    version = re.search(r"^KUSTOMIZE_VERSION=(\S+)$", lib, re.M)
    assert version, "stack/lib.sh names no KUSTOMIZE_VERSION"
    cache = Path(os.environ.get("AMBERSCAN_CACHE_DIR", Path.home() / ".cache" / "amberscan"))
    cached = cache / f"kustomize-{version.group(1)}" / "kustomize"
    if cached.exists():
        return [str(cached), "build"]
    pytest.fail(f"kustomize is not installed ({cached}): run `stack/setup.sh kustomize`")


@cache
def _built(overlay: str, scratch: Path) -> tuple[dict[str, Any], ...]:
    """`kustomize build` of an overlay, in a copy of k8s/ where example secrets stand in."""
    command = _kustomize_command()
    tree = scratch / f"k8s-{overlay}"
    if not tree.exists():
        shutil.copytree(K8S, tree)
        for example in tree.rglob("*.env.example"):
            target = example.with_name(example.name.removesuffix(".example"))
            if not target.exists():
                shutil.copy(example, target)
    result = subprocess.run(
        [*command, str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kustomize build of overlays/{overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kustomize")


@pytest.fixture(params=["base", *OVERLAYS])
def objects(request: pytest.FixtureRequest, scratch: Path) -> list[dict[str, Any]]:
    """The objects of the base as written, or of an overlay as kustomize builds it."""
    if request.param == "base":
        return _base()
    return list(_built(request.param, scratch))


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template", {})
    return template.get("spec") if isinstance(template, dict) else None


def _containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    pod = _pod_spec(obj)
    if pod:
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def _config(objects: list[dict[str, Any]]) -> dict[str, str]:
    return _one(objects, "ConfigMap", "amberscan-config")["data"]


# --- the code's side ------------------------------------------------------------------------------


def _settings_keys() -> set[str]:
    """Every variable of every concern (`Settings` composes every process's)."""
    return set(variables(Settings))


@cache
def _stage_configs() -> dict[str, str]:
    """service name → source topic, read from each service module's `StageConfig(...)` call."""
    found: dict[str, str] = {}
    for path in sorted(SERVICES.glob("*/service.py")):
        tree = ast.parse(path.read_text())
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "StageConfig"
            ):
                continue
            args = {k.arg: k.value for k in node.keywords}
            service, source = args.get("service"), args.get("source_topic")
            if isinstance(service, ast.Name):
                name = constants[service.id]
            else:
                assert isinstance(service, ast.Constant), f"{path}: StageConfig service"
                name = service.value
            assert isinstance(source, ast.Attribute), f"{path}: StageConfig source_topic"
            found[name] = getattr(topics, source.attr)
    return found


def _group(config: dict[str, str], service: str) -> str:
    # Same rule as StageConfig.group with no explicit group_id.
    return f"{config['AMBERSCAN_TOPIC_PREFIX']}amberscan-{service}"


# --- every object ---------------------------------------------------------------------------------


def test_manifests_exist() -> None:
    assert (K8S / "base" / "kustomization.yaml").exists()
    assert {"local", "production"} <= set(OVERLAYS)
    assert _resources()


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_object_has_api_version_kind_and_name(path: Path) -> None:
    objects = _load(path)
    assert objects, f"{path}: no object"
    for obj in objects:
        assert isinstance(obj, dict), f"{path}: not a mapping"
        assert obj.get("apiVersion"), f"{path}: object without apiVersion"
        assert obj.get("kind"), f"{path}: object without kind"
        metadata = obj.get("metadata") or {}
        # On-demand Job templates (k8s/jobs/) use generateName, for `kubectl create`.
        assert metadata.get("name") or metadata.get("generateName"), (
            f"{path}: {obj['kind']} without metadata.name"
        )


@pytest.mark.parametrize("kfile", _kustomizations(), ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_references_exist(kfile: Path) -> None:
    spec = yaml.safe_load(kfile.read_text())
    assert spec["kind"] == "Kustomization"
    for resource in spec.get("resources", []):
        assert (kfile.parent / resource).exists(), f"{kfile}: missing resource {resource}"
    for patch in spec.get("patches", []) or []:
        if "path" in patch:
            assert (kfile.parent / patch["path"]).exists(), f"{kfile}: missing {patch['path']}"


def test_every_manifest_file_is_used() -> None:
    """A file in a kustomization directory that no kustomization lists is a mistake."""
    used: set[Path] = set(_patch_files())
    for kfile in _kustomizations():
        spec = yaml.safe_load(kfile.read_text())
        used |= {(kfile.parent / r).resolve() for r in spec.get("resources", [])}
    for path in _yaml_files():
        if (path.parent / "kustomization.yaml").exists():
            assert path.resolve() in used, f"{path} is not listed in its kustomization.yaml"


# --- custom resources against their CRDs -----------------------------------------------------------


@cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → openAPIV3Schema of every served version of every CRD file."""
    if not CRDS.exists():
        pytest.fail(f"the CRD schemas are in none of {', '.join(map(str, CRD_PLACES))}")
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in _load(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    api = f"{group}/{version['name']}"
                    schemas[(api, kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def _validate_custom_resources(objects: list[dict[str, Any]]) -> int:
    schemas = _crd_schemas()
    groups = {api.split("/")[0] for api, _ in schemas}
    checked = 0
    for obj in objects:
        if obj["apiVersion"].split("/")[0] not in groups:
            continue
        key = (obj["apiVersion"], obj["kind"])
        assert key in schemas, f"{obj['kind']}/{obj['metadata']['name']}: {key} is not served"
        validator = jsonschema.Draft7Validator(schemas[key])
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )
        checked += 1
    return checked


def test_custom_resources_match_their_crd_schemas(objects: list[dict[str, Any]]) -> None:
    assert _validate_custom_resources(objects) >= len(topics.ALL_TOPICS)


def test_all_manifest_custom_resources_match_their_crd_schemas() -> None:
    """Overlay-only resources (the ScaledObjects) are checked as written too."""
    resources = [obj for _, obj in _resources()]
    kinds = {o["kind"] for o in resources}
    assert {"KafkaTopic", "ScaledObject", "Kafka", "KafkaNodePool"} <= kinds
    _validate_custom_resources(resources)


def test_schema_validation_catches_a_bad_topic() -> None:
    """The validation is not vacuous: a wrong type and an unknown field are refused."""
    topic = _one(_base(), "KafkaTopic", topics.FEATURES)
    bad = {**topic, "spec": {**topic["spec"], "partitions": "twelve"}}
    with pytest.raises(AssertionError, match="partitions"):
        _validate_custom_resources([bad])


# --- built-in resources against the Kubernetes API schemas -----------------------------------------

# The oldest Kubernetes the manifests must apply to (the schemas are those of this release).
KUBERNETES_VERSION = "1.31.0"


def _validate_builtin_resources(objects: list[dict[str, Any]]) -> int:
    """Check every object that no shared CRD defines against the Kubernetes schema of its kind."""
    groups = {api.split("/")[0] for api, _ in _crd_schemas()}
    checked = 0
    for obj in objects:
        if obj["apiVersion"].split("/")[0] in groups:
            continue
        name = obj["metadata"].get("name") or obj["metadata"].get("generateName")
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{obj['kind']}/{name}: {obj['apiVersion']} is not a Kubernetes API")
        except kubernetes_validate.ValidationError as error:
            where = "/".join(map(str, error.path))
            raise AssertionError(f"{obj['kind']}/{name}: {where}: {error.message}") from None
        checked += 1
    return checked


def test_resources_match_the_kubernetes_schemas(objects: list[dict[str, Any]]) -> None:
    assert _validate_builtin_resources(objects) >= len(serve.STAGES)


def test_all_manifest_resources_match_the_kubernetes_schemas() -> None:
    """The Job templates (not in any kustomization) are checked as written."""
    resources = [obj for _, obj in _resources()]
    assert {"Job", "CronJob", "Deployment"} <= {o["kind"] for o in resources}
    _validate_builtin_resources(resources)


def test_kubernetes_schema_validation_catches_a_bad_deployment() -> None:
    """Not vacuous: a misspelt field and a wrong type are refused."""
    deployment = _one(_base(), "Deployment", "sink")
    spec = deployment["spec"]
    typo = {**deployment, "spec": {**spec, "replica": 2}}
    with pytest.raises(AssertionError, match="replica"):
        _validate_builtin_resources([typo])
    wrong = {**deployment, "spec": {**spec, "replicas": "two"}}
    with pytest.raises(AssertionError, match="replicas"):
        _validate_builtin_resources([wrong])


# --- configuration ------------------------------------------------------------------------------


def _secret_keys() -> dict[str, set[str]]:
    """Keys of every form of the Secret: Secret manifests and the generator's example env files."""
    found: dict[str, set[str]] = {}
    for path, obj in _resources():
        if obj["kind"] == "Secret" and obj["metadata"]["name"] == "amberscan-secrets":
            found[str(path)] = set(obj.get("stringData", {})) | set(obj.get("data", {}))
    for path in K8S.rglob("secrets.env.example"):
        lines = [line for line in path.read_text().splitlines() if line and line[0] != "#"]
        found[str(path)] = {line.split("=", 1)[0] for line in lines}
    return found


def test_secret_forms_agree() -> None:
    forms = _secret_keys()
    assert len(forms) >= 2, forms
    first = next(iter(forms.values()))
    for where, keys in forms.items():
        assert keys == first, f"{where}: {sorted(keys ^ first)}"


def test_configmap_and_secret_cover_settings_one_to_one() -> None:
    settings = _settings_keys()
    config = set(_config(_base()))
    secret = next(iter(_secret_keys().values()))
    assert not config & secret, f"both in the ConfigMap and the Secret: {sorted(config & secret)}"
    assert config <= settings, f"ConfigMap keys that are no setting: {sorted(config - settings)}"
    unknown = secret - settings
    assert not unknown, f"Secret keys that are no setting: {sorted(unknown)}"
    missing = settings - config - secret
    assert not missing, f"settings with no ConfigMap or Secret key: {sorted(missing)}"


def test_configmap_values_parse_as_settings(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap's values, read from the environment as in a pod, are valid settings of
    every process (each reads only its own concerns, so each is parsed)."""
    for key in [k for k in os.environ if k.startswith("AMBERSCAN_")]:
        monkeypatch.delenv(key)
    for key, value in _config(objects).items():
        monkeypatch.setenv(key, value)
    for name, process in PROCESSES.items():
        settings = process()
        assert settings.ops.metrics_port > 0, f"{name} needs a metrics port for its probes"
    assert Settings().web.host == "0.0.0.0"


def test_every_served_process_has_its_settings() -> None:
    """Each server `amberscan serve` runs (the containers' args) reads its own process's
    settings, which `PROCESSES` names."""
    for server in ["model-server", *serve.STAGES]:
        args = build_parser().parse_args(["serve", server])
        assert PROCESSES[args.process(args)] is PROCESSES[server], server
    args = build_parser().parse_args(["topics"])
    assert PROCESSES[args.process(args)] is Settings


def test_workloads_read_the_configmap_and_secret(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        for container in _containers(obj):
            if not _is_amberscan(container):
                continue
            refs = {
                next(iter(ref)): ref[next(iter(ref))]["name"]
                for ref in container.get("envFrom", [])
            }
            assert refs == {
                "configMapRef": "amberscan-config",
                "secretRef": "amberscan-secrets",
            }, f"{obj['kind']}/{obj['metadata']['name']}: envFrom {refs}"


# --- commands -------------------------------------------------------------------------------------


def _is_amberscan(container: dict[str, Any]) -> bool:
    image = container["image"].split("@")[0].rsplit("/", 1)[-1]
    return image.split(":")[0] == "amberscan"


def _amberscan_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path, obj in _resources():
        for container in _containers(obj):
            if _is_amberscan(container):
                assert "command" not in container, f"{path}: the image's ENTRYPOINT is amberscan"
                where = f"{path.relative_to(K8S)} {obj['kind']}/{container['name']}"
                found.append((where, [str(a) for a in container.get("args", [])]))
    return found


def _parses(args: list[str]) -> bool:
    try:
        build_parser().parse_args(args)
    except SystemExit:
        return False
    return True


def test_container_args_are_amberscan_commands() -> None:
    commands = _amberscan_commands()
    assert len(commands) >= len(serve.STAGES) + 3  # + export, scan and the Job templates
    for where, args in commands:
        assert args, f"{where}: no args (the image's default is --help)"
        assert _parses(args), f"{where}: `amberscan {' '.join(args)}` is not a valid command"


def _deployment_args(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    found = {}
    for obj in _of_kind(objects, "Deployment"):
        for container in _containers(obj):
            if _is_amberscan(container):
                found[obj["metadata"]["name"]] = container["args"]
    return found


def test_one_deployment_per_streaming_service(objects: list[dict[str, Any]]) -> None:
    deployments = _deployment_args(objects)
    for stage in serve.STAGES:
        assert deployments.get(stage) == ["serve", stage], f"Deployment {stage}"


def test_scan_cronjob_scans_a_region_with_bing(objects: list[dict[str, Any]]) -> None:
    (cronjob,) = _of_kind(objects, "CronJob")
    (container,) = _containers(cronjob)
    args = build_parser().parse_args(container["args"])
    assert args.bbox and args.provider == "bing" and args.json
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


def test_replay_job_template() -> None:
    (replay,) = _load(K8S / "jobs" / "replay.yaml")
    (container,) = _containers(replay)
    args = build_parser().parse_args(container["args"])
    assert args.run is replay_command.run and args.model
    # `kubectl logs -l amberscan/model-version=V` (docs/deploy.md) selects pods: the label must
    # be on the pod template, with the same placeholder the Job's args carry.
    label = "amberscan/model-version"
    pod_labels = replay["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[label] == replay["metadata"]["labels"][label] == args.model


# --- streaming services: probes, metrics, shutdown, disruption budgets ----------------------------


def test_probes_and_scraping_use_the_metrics_port(objects: list[dict[str, Any]]) -> None:
    port = int(_config(objects)["AMBERSCAN_METRICS_PORT"])
    for name in serve.STAGES:
        deployment = _one(objects, "Deployment", name)
        pod = deployment["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == port
        (container,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == port
        # Liveness asks the loop's heartbeat (served by the loop itself, common/metrics.py).
        get = container["livenessProbe"]["httpGet"]
        assert get["path"] == "/healthz" and get["port"] in ("metrics", port), name
        if name not in STREAMING:
            continue  # the web map's readiness asks its own HTTP port
        get = container["readinessProbe"]["httpGet"]
        assert get["path"] == "/metrics" and get["port"] in ("metrics", port), name


def test_graceful_shutdown_covers_a_batch(objects: list[dict[str, Any]]) -> None:
    """SIGTERM → the stage finishes its batch and commits; the grace period must allow for it."""
    deadline = float(_config(objects)["AMBERSCAN_MODEL_DEADLINE_S"])
    for name in serve.STAGES:
        pod = _one(objects, "Deployment", name)["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        assert grace >= 30, name
        if name == "feature":
            assert grace > deadline, "feature's grace period must outlast a model-server call"


def test_every_service_has_a_disruption_budget(objects: list[dict[str, Any]]) -> None:
    budgets = _of_kind(objects, "PodDisruptionBudget")
    for name in [*serve.STAGES, "model-server"]:
        labels = _one(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, f"{name}: {len(matching)} PodDisruptionBudgets"


def test_services_select_their_pods(objects: list[dict[str, Any]]) -> None:
    for service in _of_kind(objects, "Service"):
        # A headless Service (DNS of every pod) is named for its Deployment plus "-headless".
        name = service["metadata"]["name"].removesuffix("-headless")
        labels = _one(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name


def test_ingress_routes_to_the_web_service(objects: list[dict[str, Any]]) -> None:
    (ingress,) = _of_kind(objects, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = _one(objects, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


# --- Kafka topics ---------------------------------------------------------------------------------


def test_kafka_topics_are_the_project_topics(objects: list[dict[str, Any]]) -> None:
    config = _config(objects)
    prefix = config["AMBERSCAN_TOPIC_PREFIX"]
    kafka_topics = _of_kind(objects, "KafkaTopic")
    names = [t["spec"].get("topicName", t["metadata"]["name"]) for t in kafka_topics]
    assert sorted(names) == sorted(topics.topic_name(prefix, t) for t in topics.ALL_TOPICS)
    (cluster,) = _of_kind(objects, "Kafka")
    for topic in kafka_topics:
        name = topic["metadata"]["name"]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster["metadata"]["name"]
        # As common/topic_admin.py ensure_topics creates them, from the same settings.
        assert topic["spec"]["partitions"] == int(config["AMBERSCAN_TOPIC_PARTITIONS"]), name
        retention = int(topic["spec"]["config"]["retention.ms"])
        assert retention == int(config["AMBERSCAN_TOPIC_RETENTION_MS"]), name
        # Topics that ensure_topics creates later (a replay, a new prefix) get the ConfigMap's
        # replication: the same as the CRs' and the brokers' default.
        assert topic["spec"]["replicas"] == int(config["AMBERSCAN_TOPIC_REPLICATION_FACTOR"]), name
        insync = topic["spec"]["config"].get(
            "min.insync.replicas", cluster["spec"]["kafka"]["config"]["min.insync.replicas"]
        )
        assert int(insync) == int(config["AMBERSCAN_TOPIC_MIN_INSYNC_REPLICAS"]), name
    brokers = cluster["spec"]["kafka"]["config"]
    assert int(brokers["default.replication.factor"]) == int(
        config["AMBERSCAN_TOPIC_REPLICATION_FACTOR"]
    )
    assert int(brokers["min.insync.replicas"]) == int(config["AMBERSCAN_TOPIC_MIN_INSYNC_REPLICAS"])
    for replayable in (topics.SUPERPIXELS, topics.FEATURES):
        assert int(_one(objects, "KafkaTopic", replayable)["spec"]["config"]["retention.ms"]) == -1


def test_services_reach_the_kafka_bootstrap(objects: list[dict[str, Any]]) -> None:
    (cluster,) = _of_kind(objects, "Kafka")
    bootstrap = _config(objects)["AMBERSCAN_KAFKA_BOOTSTRAP"]
    host, port = bootstrap.rsplit(":", 1)
    assert host.split(".")[0] == f"{cluster['metadata']['name']}-kafka-bootstrap"
    listeners = {listener["port"] for listener in cluster["spec"]["kafka"]["listeners"]}
    assert int(port) in listeners


# --- autoscaling ------------------------------------------------------------------------------------


def test_stage_configs_found() -> None:
    stages = _stage_configs()
    assert {"segmenter", "feature", "classifier"} <= set(stages)
    assert stages["feature"] == topics.SUPERPIXELS


def test_scaled_objects_follow_consumer_group_lag(scratch: Path) -> None:
    """Every ScaledObject (as written and in each overlay that has some) watches the right lag."""
    for overlay in ["as written", *OVERLAYS]:
        if overlay == "as written":
            objects = [obj for _, obj in _resources()]
            config = _config(_base())
        else:
            objects = list(_built(overlay, scratch))
            config = _config(objects)
        deployments = {d["metadata"]["name"] for d in _of_kind(objects, "Deployment")}
        for scaled in _of_kind(objects, "ScaledObject"):
            target = scaled["spec"]["scaleTargetRef"]["name"]
            assert target in deployments or overlay == "as written", f"{overlay}: {target}"
            stage = SCALED_LIKE.get(target, target)
            source = _stage_configs()[stage]
            for trigger in scaled["spec"]["triggers"]:
                assert trigger["type"] == "kafka", target
                meta = trigger["metadata"]
                assert meta["consumerGroup"] == _group(config, stage), target
                assert meta["topic"] == topics.topic_name(config["AMBERSCAN_TOPIC_PREFIX"], source)
                assert (
                    meta["bootstrapServers"].split(".")[0]
                    == config["AMBERSCAN_KAFKA_BOOTSTRAP"].split(":")[0].split(".")[0]
                ), target
                int(meta["lagThreshold"])
            if overlay != "as written" and target in serve.STAGES:
                # KEDA's HPA owns the replicas; more consumers than partitions would idle.
                partitions = int(config["AMBERSCAN_TOPIC_PARTITIONS"])
                assert scaled["spec"]["maxReplicaCount"] <= partitions, target
                assert "replicas" not in _one(objects, "Deployment", target)["spec"], target


def test_production_scales_segmenter_feature_classifier() -> None:
    scaled = {
        obj["spec"]["scaleTargetRef"]["name"]
        for path, obj in _resources()
        if obj["kind"] == "ScaledObject" and "production" in path.parts
    }
    assert {"segmenter", "feature", "classifier"} <= scaled


# --- model server -----------------------------------------------------------------------------------


def _tfserving(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _one(objects, "Deployment", "model-server")["spec"]["template"]["spec"][
        "containers"
    ]
    return container


def _is_cpu_server(container: dict[str, Any]) -> bool:
    return container["image"].split(":")[0] == "amberscan-model-server"


def test_model_server_runs_tf_serving_with_batching(objects: list[dict[str, Any]]) -> None:
    container = _tfserving(objects)
    if _is_cpu_server(container):
        return  # amberscan's CPU server (the local overlay): the test below
    assert container["image"].split(":")[0] == "tensorflow/serving"
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert flags["enable_batching"] == "true"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config = _one(objects, "ConfigMap", "tfserving-config")["data"]
    for flag, key in (
        ("model_config_file", "models.config"),
        ("batching_parameters_file", "batching_parameters.txt"),
    ):
        assert flags[flag] == f"{mounts['config']}/{key}"
        assert key in config
    # The served model is the backbone the services ask for, in the models volume.
    settings = _config(objects)
    assert f'name: "{settings["AMBERSCAN_BACKBONE_NAME"]}"' in config["models.config"]
    assert f'base_path: "{mounts["models"]}/' in config["models.config"]
    # Clients balance over every model-server pod: the headless Service's DNS, round-robin.
    (headless,) = [
        o
        for o in _of_kind(objects, "Service")
        if o["spec"].get("clusterIP") == "None"
        and o["spec"]["selector"].get("app.kubernetes.io/component") == "model-server"
    ]
    # The raw base has no namespace on its objects: kustomize sets the kustomization's.
    kustomization = yaml.safe_load((ROOT / "k8s" / "base" / "kustomization.yaml").read_text())
    namespace = headless["metadata"].get("namespace") or kustomization["namespace"]
    name = headless["metadata"]["name"]
    target = settings["AMBERSCAN_MODEL_SERVER"]
    assert target.startswith(f"dns:///{name}.{namespace}.svc:"), target
    assert {p["port"] for p in headless["spec"]["ports"]} == {int(target.rsplit(":", 1)[1])}


def test_tfserving_config_is_docker_tfserving() -> None:
    """k8s serves the very files of docker/tfserving/ (copied verbatim into the ConfigMap)."""
    data = _one(_base(), "ConfigMap", "tfserving-config")["data"]
    for key in ("models.config", "batching_parameters.txt"):
        path = ROOT / "docker" / "tfserving" / key
        assert data[key] == path.read_text(), f"k8s tfserving-config {key} differs from {path}"


def test_local_overlay_runs_the_cpu_model_server(scratch: Path) -> None:
    """The image `make image` builds as amberscan-model-server, started as its CMD would: the
    backbone of the models volume on the port the feature stage calls, gRPC health as probes."""
    objects = list(_built("local", scratch))
    container = _tfserving(objects)
    assert _is_cpu_server(container)
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    (cmd,) = re.findall(
        r"^CMD (\[.*\])$", dockerfile.split("AS model-server")[1].split("FROM")[0], re.M
    )
    assert container["args"] == json.loads(cmd), "the k8s args differ from the image's CMD"
    args = build_parser().parse_args(["serve", "model-server", *container["args"]])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(args.model_dir) == mounts["models"]
    assert args.name == _config(objects)["AMBERSCAN_BACKBONE_NAME"]
    port = int(args.address.rsplit(":", 1)[1])
    assert port == _port(_config(objects)["AMBERSCAN_MODEL_SERVER"])
    assert {p["containerPort"] for p in container["ports"]} >= {port}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
    assert container["envFrom"] == [{"configMapRef": {"name": "amberscan-config"}}]
    service = _one(objects, "Service", "model-server")
    names = {p["name"] for p in container["ports"]}
    assert all(p["targetPort"] in names for p in service["spec"]["ports"]), "a port nobody serves"


def test_client_batches_fit_the_server_batches(objects: list[dict[str, Any]]) -> None:
    if _is_cpu_server(_tfserving(objects)):
        limit = _config(objects)["AMBERSCAN_MODEL_SERVER_MAX_BATCH"]
        assert int(_config(objects)["AMBERSCAN_FEATURE_BATCH_SIZE"]) <= int(limit)
        return
    batching = _one(objects, "ConfigMap", "tfserving-config")["data"]["batching_parameters.txt"]
    match = re.search(r"max_batch_size\s*\{\s*value:\s*(\d+)", batching)
    assert match, "max_batch_size not found"
    assert int(_config(objects)["AMBERSCAN_FEATURE_BATCH_SIZE"]) <= int(match.group(1))


def test_backbone_export_writes_where_the_model_server_reads() -> None:
    base = _base()
    (job,) = [j for j in _of_kind(base, "Job")]
    (finetune,) = _pod_spec(job)["initContainers"]
    (container,) = _pod_spec(job)["containers"]
    args = build_parser().parse_args(container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(args.model_dir) == mounts["models"]
    assert args.name == _config(base)["AMBERSCAN_BACKBONE_NAME"]
    # The export loads the weights the fine-tuning init container wrote on the same volume.
    tuned = build_parser().parse_args(finetune["args"])
    # The views the recipe's nested CV measured (and its threshold), as stack/model.sh exports.
    assert str(args.finetuned) == str(tuned.out) and args.views == SERVED_RECIPE.views
    assert args.backbone == tuned.backbone == SERVED_RECIPE.backbone
    assert str(tuned.out).startswith(mounts["models"] + "/")
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in _pod_spec(job)["volumes"]
        if "persistentVolumeClaim" in v
    }
    claims.discard("training-data")  # the labelled crops; the model server needs only models
    server = _one(base, "Deployment", "model-server")["spec"]["template"]["spec"]
    assert claims == {
        v["persistentVolumeClaim"]["claimName"]
        for v in server["volumes"]
        if "persistentVolumeClaim" in v
    }


def test_production_runs_model_server_on_gpu_nodes(scratch: Path) -> None:
    objects = list(_built("production", scratch))
    container = _tfserving(objects)
    assert container["image"].endswith("-gpu")
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    pod = _one(objects, "Deployment", "model-server")["spec"]["template"]["spec"]
    assert pod["nodeSelector"]
    assert any(t["key"] == GPU_TAINT_KEY for t in pod["tolerations"])


def test_only_the_model_server_goes_to_gpu_nodes(objects: list[dict[str, Any]]) -> None:
    """The feature pods are gRPC clients: they need no GPU, so they keep off GPU nodes (no
    toleration of the taint, and where the overlay has GPU nodes, an affinity away from their
    label) and leave those nodes' CPU and memory to the model servers."""
    server = _one(objects, "Deployment", "model-server")["spec"]["template"]["spec"]
    gpu_labels = set(server.get("nodeSelector", {}))
    for obj in objects:
        pod = _pod_spec(obj)
        if pod is None or obj["metadata"]["name"] == "model-server":
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert not any(t.get("key") == GPU_TAINT_KEY for t in pod.get("tolerations", [])), name
        assert not gpu_labels & set(pod.get("nodeSelector", {})), name
        for container in _containers(obj):
            assert GPU_TAINT_KEY not in container.get("resources", {}).get("limits", {}), name
    if gpu_labels:
        feature = _one(objects, "Deployment", "feature")["spec"]["template"]["spec"]
        terms = feature["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        for label in gpu_labels:
            for term in terms["nodeSelectorTerms"]:
                assert {
                    "key": label,
                    "operator": "NotIn",
                    "values": [server["nodeSelector"][label]],
                } in term["matchExpressions"], label


# --- KEDA: lag is queued work, not history ----------------------------------------------------------


def test_keda_never_counts_retained_history_as_lag(scratch: Path) -> None:
    """Topics keep every record (retention -1, for replays): for a partition where a group has no
    committed offset, `offsetResetPolicy: earliest` would count the whole history as lag and scale
    to the maximum. `latest` counts it as lag 1 (one consumer kept: scaleToZeroOnInvalidOffset
    stays false)."""
    checked = 0
    for overlay in OVERLAYS:
        objects = list(_built(overlay, scratch))
        forever = _config(objects)["AMBERSCAN_TOPIC_RETENTION_MS"] == "-1"
        for scaled in _of_kind(objects, "ScaledObject"):
            for trigger in scaled["spec"]["triggers"]:
                meta = trigger["metadata"]
                name = f"{overlay} {scaled['metadata']['name']}"
                assert meta.get("offsetResetPolicy") == "latest" or not forever, name
                assert meta.get("scaleToZeroOnInvalidOffset", "false") == "false", name
                checked += 1
    assert checked


# --- pod hardening ----------------------------------------------------------------------------------


def _image_home() -> str:
    """The amberscan image's HOME (docker/Dockerfile): KERAS_HOME and Numba's cache are under it."""
    match = re.search(r"^\s*HOME=(\S+)", (ROOT / "docker" / "Dockerfile").read_text(), re.M)
    assert match, "docker/Dockerfile sets no HOME"
    return match.group(1)


def _workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in objects if _pod_spec(obj) is not None]


def _hardening_problems(obj: dict[str, Any]) -> list[str]:
    pod = _pod_spec(obj)
    assert pod is not None
    name = f"{obj['kind']}/{obj['metadata'].get('name') or obj['metadata']['generateName']}"
    problems = []
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: the pod mounts a service-account token")
    context = pod.get("securityContext", {})
    if context.get("runAsNonRoot") is not True or context.get("runAsUser", 0) == 0:
        problems.append(f"{name}: the pod may run as root")
    if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: no RuntimeDefault seccomp profile")
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for container in _containers(obj):
        where = f"{name} {container['name']}"
        sc = container.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
            problems.append(f"{where}: privilege escalation allowed")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc["capabilities"].get("add"):
            problems.append(f"{where}: capabilities not all dropped")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: the root filesystem is writable")
        # The writable paths, each an emptyDir: /tmp, and for the amberscan image its HOME.
        writable = {
            m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in empty_dirs
        }
        wanted = {"/tmp", _image_home()} if _is_amberscan(container) else {"/tmp"}
        if not wanted <= writable:
            problems.append(f"{where}: no emptyDir on {sorted(wanted - writable)}")
    return problems


def test_every_pod_is_hardened(objects: list[dict[str, Any]]) -> None:
    workloads = _workloads(objects)
    assert {o["metadata"]["name"] for o in workloads} >= {*serve.STAGES, "model-server"}
    problems = [p for obj in workloads for p in _hardening_problems(obj)]
    assert not problems, "\n".join(problems)


def test_every_job_template_is_hardened() -> None:
    jobs = [obj for path in sorted((K8S / "jobs").glob("*.yaml")) for obj in _load(path)]
    assert jobs
    problems = [p for obj in _workloads(jobs) for p in _hardening_problems(obj)]
    assert not problems, "\n".join(problems)


def test_hardening_check_catches_a_writable_root(scratch: Path) -> None:
    """The check above, on a Deployment of the built overlay with one field taken away."""
    deployment = copy.deepcopy(_one(list(_built("production", scratch)), "Deployment", "segmenter"))
    assert not _hardening_problems(deployment)
    del deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFilesystem"
    ]
    assert _hardening_problems(deployment) == [
        "Deployment/segmenter segmenter: the root filesystem is writable"
    ]


# --- network policies ---------------------------------------------------------------------------------

# What each pod's code opens, found by its imports (below): the paths its NetworkPolicies allow.
PATH_IMPORTS = {
    "bus": ("aiokafka", "amberscan.common.topic_admin", "amberscan.common.features_reader"),
    "blob store": ("amberscan.common.blobstore", "amberscan.common.registry"),
    "database": ("amberscan.common.db",),
    # The web map's explore page embeds labelled crops through the model server
    # (features_reader → served_features → model_client).
    "model server": (
        "amberscan.common.model_client",
        "amberscan.common.served_features",
        "amberscan.common.features_reader",
    ),
    # HTTPS to the world outside the cluster: imagery providers and catalogues, alert webhooks.
    "https out": ("amberscan.imagery.providers", "amberscan.alerts.service"),
    # Alert e-mail through the SMTP relay.
    "mail": ("amberscan.alerts.service",),
}
# The modules whose imports say what a pod does, by its app.kubernetes.io/component. Commands
# count their own module and the library code they run (replay's `scanning.follow` only reads the
# database; topic_admin creates topics with aiokafka's admin client).
# `amberscan serve` (cli/serve.py) creates the topics before any stage runs, the web map's too; the
# web map's explore page reads the features topic (web/explore.py).
POD_MODULES = {
    **{stage: [f"{stage}/service.py", "cli/serve.py"] for stage in serve.STAGES if stage != "web"},
    # A subscription's test alert is sent by the web map itself (web/routes/alerts.py).
    "web": ["web/state.py", "web/explore.py", "web/routes/alerts.py", "cli/serve.py"],
    "scan": ["cli/scan.py", "scanning.py", "common/topic_admin.py"],
    "replay": ["cli/replay.py", "classifier/service.py", "common/topic_admin.py"],
    "model-server": ["modelserver/server.py"],
    "backbone-export": ["cli/export_backbone.py", "cli/finetune.py"],
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from amberscan.common import features_reader` imports amberscan.common.features_reader
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def _paths_in_code(component: str) -> set[str]:
    imports = set().union(*(_imports(SERVICES / module) for module in POD_MODULES[component]))
    return {
        path
        for path, prefixes in PATH_IMPORTS.items()
        if any(i == p or i.startswith(p + ".") for i in imports for p in prefixes)
    }


def _port(address: str) -> int:
    """The port of host:port, a dns:/// target or a URL with credentials."""
    match = re.search(r":(\d+)(?:/|$)", address.rsplit("@", 1)[-1])
    assert match, f"no port in {address}"
    return int(match.group(1))


def _path_ports(objects: list[dict[str, Any]]) -> dict[int, str]:
    """Port → path, from the addresses the services are configured with."""
    config = _config(objects)
    secret = next(iter(_secret_values().values()))
    return {
        _port(config["AMBERSCAN_KAFKA_BOOTSTRAP"]): "bus",
        _port(config["AMBERSCAN_S3_ENDPOINT"]): "blob store",
        _port(secret["AMBERSCAN_DATABASE_URL"]): "database",
        _port(config["AMBERSCAN_MODEL_SERVER"]): "model server",
        443: "https out",
        int(config["AMBERSCAN_SMTP_PORT"]): "mail",
    }


def _secret_values() -> dict[str, dict[str, str]]:
    local = _one(_load(K8S / "overlays" / "local" / "secret.yaml"), "Secret", "amberscan-secrets")
    example = K8S / "overlays" / "production" / "secrets.env.example"
    production = dict(
        line.split("=", 1)
        for line in example.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {"local": local["stringData"], "production": production}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None or operator == "DoesNotExist" and value:
            return False
    return True


def _pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return spec["template"]["metadata"]["labels"]


def _allowed(policies: list[dict[str, Any]], labels: dict[str, str], direction: str) -> list[Any]:
    """The rules of one direction ("egress"/"ingress") that apply to a pod with these labels."""
    return [
        rule
        for policy in policies
        if _selects(policy["spec"]["podSelector"], labels)
        and direction.capitalize() in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get(direction, [])
    ]


def _egress_paths(
    objects: list[dict[str, Any]], labels: dict[str, str]
) -> tuple[set[str], list[str]]:
    ports = _path_ports(objects)
    paths, others = set(), []
    for rule in _allowed(_of_kind(objects, "NetworkPolicy"), labels, "egress"):
        for port in rule.get("ports", []):
            if port["port"] == 53:
                continue  # DNS, for every pod (below)
            if port["port"] in ports:
                paths.add(ports[port["port"]])
            else:
                others.append(f"port {port['port']}")
        if not rule.get("ports"):
            others.append("every port")
    return paths, others


def _pods_with_policies(scratch: Path) -> list[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    """(where, the overlay's objects, pod owner) for every pod of every overlay and Job template."""
    jobs = [obj for path in sorted((K8S / "jobs").glob("*.yaml")) for obj in _load(path)]
    found = []
    for overlay in OVERLAYS:
        objects = list(_built(overlay, scratch))
        for obj in [*_workloads(objects), *jobs]:
            found.append((overlay, objects, obj))
    return found


def test_the_code_uses_the_paths_of_the_table() -> None:
    """The table the policies follow (k8s/base/network-policies.yaml's comment) is the code's."""
    assert _paths_in_code("aggregator") == {"bus"}
    assert _paths_in_code("feature") == {"bus", "blob store", "model server"}
    assert _paths_in_code("tiler") == {"bus", "blob store", "database", "https out"}
    assert _paths_in_code("watch") == {"bus", "blob store", "database", "https out", "mail"}
    assert _paths_in_code("web") == {
        "bus",
        "blob store",
        "database",
        "model server",
        "https out",
        "mail",
    }
    assert _paths_in_code("model-server") == _paths_in_code("backbone-export") == set()


def test_network_policies_allow_each_pod_only_the_paths_its_code_uses(scratch: Path) -> None:
    problems = []
    for overlay, objects, obj in _pods_with_policies(scratch):
        labels = _pod_labels(obj)
        component = labels["app.kubernetes.io/component"]
        paths, others = _egress_paths(objects, labels)
        where = f"{overlay} {obj['kind']}/{component}"
        if paths != _paths_in_code(component):
            problems.append(
                f"{where}: allowed {sorted(paths)}, uses {sorted(_paths_in_code(component))}"
            )
        if others:
            problems.append(f"{where}: also allowed {others}")
    assert not problems, "\n".join(problems)


def test_every_pod_is_denied_by_default(scratch: Path) -> None:
    for overlay, objects, obj in _pods_with_policies(scratch):
        labels = _pod_labels(obj)
        denied = [
            p
            for p in _of_kind(objects, "NetworkPolicy")
            if _selects(p["spec"]["podSelector"], labels)
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
        ]
        name = obj["metadata"].get("name") or obj["metadata"]["generateName"]
        assert denied, f"{overlay} {obj['kind']}/{name}: no default-deny policy"


def test_the_bus_and_the_model_server_are_reached_at_their_pods(scratch: Path) -> None:
    objects = list(_built("production", scratch))
    policies = _of_kind(objects, "NetworkPolicy")
    (cluster,) = _of_kind(objects, "Kafka")
    feature = _pod_labels(_one(objects, "Deployment", "feature"))
    server = _pod_labels(_one(objects, "Deployment", "model-server"))
    peers = {
        _path_ports(objects).get(port["port"]): peer["podSelector"]["matchLabels"]
        for rule in _allowed(policies, feature, "egress")
        for port in rule["ports"]
        for peer in rule["to"]
        if "podSelector" in peer and "namespaceSelector" not in peer
    }
    assert peers["bus"]["strimzi.io/cluster"] == cluster["metadata"]["name"]
    assert _selects({"matchLabels": peers["model server"]}, server)
    # The model server takes calls from the feature pods and the web map's (explore) only.
    grpc = _path_ports(objects)
    (rule,) = [
        rule
        for rule in _allowed(policies, server, "ingress")
        if any(grpc.get(port["port"]) == "model server" for port in rule["ports"])
    ]
    assert [p["podSelector"]["matchLabels"] for p in rule["from"]] == [
        {k: feature[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/component")},
        {"app.kubernetes.io/name": "amberscan", "app.kubernetes.io/component": "web"},
    ]
    # Strimzi's policy for the listener admits amberscan's pods (and KEDA) only.
    (listener,) = cluster["spec"]["kafka"]["listeners"]
    assert listener.get("networkPolicyPeers"), "the listener is open to every pod of the cluster"


# --- the replay Job's documented commands -------------------------------------------------------------


def test_replay_examples_use_the_real_version_format() -> None:
    """`kubectl logs -l amberscan/model-version=V` and the sed line use a version as `amberscan
    train` names them: xgb-<first 12 hex digits of a sha256> (model/classifier.py)."""
    source = (SERVICES / "model" / "classifier.py").read_text()
    digits = re.search(r"hexdigest\(\)\[:(\d+)\]", source)
    assert digits and 'f"xgb-{digest}"' in source
    version = re.compile(rf"^xgb-[0-9a-f]{{{digits.group(1)}}}$")
    found = 0
    for path in (K8S / "jobs" / "replay.yaml", ROOT / "docs" / "deploy.md"):
        for example in re.findall(
            r"amberscan/model-version=(\S+)|s/MODEL_VERSION/([^/]+)/", path.read_text()
        ):
            value = next(v for v in example if v)
            assert version.match(value), f"{path.name}: {value}"
            found += 1
    assert found >= 3


# --- Kafka security: a TLS listener, a SCRAM user per workload, ACLs from the code -------------------

CA_SECRET = "amberscan-cluster-ca-cert"  # Strimzi's: "<cluster>-cluster-ca-cert", key ca.crt
ACL_OPERATIONS = ("Create", "Describe", "Read", "Write")


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == name
    ]


def _topic(node: ast.expr) -> str | None:
    """The topic a `topics.X` expression names."""
    if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "topics":
        return str(getattr(topics, node.attr))
    return None


def _bus_modules(component: str) -> list[Path]:
    """The component's modules, with the library modules through which they use the bus."""
    paths = [SERVICES / module for module in POD_MODULES[component]]
    for library in ("common/features_reader.py", "common/topic_admin.py"):
        dotted = "amberscan." + library.removesuffix(".py").replace("/", ".")
        if any(dotted in _imports(path) for path in paths):
            paths.append(SERVICES / library)
    return sorted(set(paths))


def _bus_use(component: str) -> dict[str, Any]:
    """What a component's code does on the bus, read from its modules: topics read (each
    StageConfig's source; a reader's topic_name), written (its Outputs; dead letters, which every
    stage's handling writes; a producer's topic_name), its consumer groups (StageConfig.group:
    "amberscan-<service>"; a replay's group_id, one per replay, so a prefix) and whether it creates
    the project's topics (ensure_topics, through topic_admin)."""
    use: dict[str, Any] = {"read": set(), "write": set(), "groups": set(), "creates": False}
    for path in _bus_modules(component):
        tree = ast.parse(path.read_text())
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        stages = _calls(tree, "StageConfig")
        for config in stages:
            args = {k.arg: k.value for k in config.keywords}
            use["read"].add(_topic(args["source_topic"]))
            use["write"].add(topics.DEAD_LETTERS)
            if component == "replay":  # the classifier's stage in a group of the replay's own
                chosen = args["group_id"]
                assert isinstance(chosen, ast.IfExp) and isinstance(chosen.body, ast.JoinedStr)
                (fixed,) = [v.value for v in chosen.body.values if isinstance(v, ast.Constant)]
                use["groups"].add((fixed, "prefix"))
                continue
            service = args["service"]
            name = constants[service.id] if isinstance(service, ast.Name) else service.value
            use["groups"].add((f"amberscan-{name}", "literal"))
        for output in _calls(tree, "Output"):
            use["write"].add(_topic(output.args[0]))
        if not stages:
            producer = bool(_calls(tree, "AIOKafkaProducer"))
            consumer = bool(_calls(tree, "AIOKafkaConsumer"))
            for call in _calls(tree, "topic_name"):
                named = _topic(call.args[1])
                if named and producer:
                    use["write"].add(named)
                if named and consumer:
                    use["read"].add(named)
        use["creates"] |= bool(_calls(tree, "ensure_topics"))
    use["read"].discard(None)
    use["write"].discard(None)
    return use


def _acls_in_code(component: str) -> set[tuple[str, str, str, str]]:
    """(resource type, name, pattern, operation) a component's Kafka user needs."""
    use = _bus_use(component)
    acls = set()
    for topic in topics.ALL_TOPICS:
        wanted = {"Create", "Describe"} if use["creates"] else set()
        wanted |= {"Read", "Describe"} if topic in use["read"] else set()
        wanted |= {"Write", "Describe"} if topic in use["write"] else set()
        acls |= {("topic", topic, "literal", operation) for operation in wanted}
    acls |= {("group", name, pattern, "Read") for name, pattern in use["groups"]}
    return acls


def _acls(user: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    assert user["spec"]["authentication"]["type"] == "scram-sha-512", user["metadata"]["name"]
    assert user["spec"]["authorization"]["type"] == "simple", user["metadata"]["name"]
    found = set()
    for acl in user["spec"]["authorization"]["acls"]:
        assert acl.get("type", "allow") == "allow" and acl.get("host", "*") == "*", acl
        resource = acl["resource"]
        for operation in acl["operations"]:
            found.add(
                (
                    resource["type"],
                    resource["name"],
                    resource.get("patternType", "literal"),
                    operation,
                )
            )
    return found


def _bus_workloads(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(component, pod owner) of every workload whose code opens a Kafka client."""
    found = []
    for obj in _workloads(objects):
        component = _pod_labels(obj)["app.kubernetes.io/component"]
        if "bus" in _paths_in_code(component):
            found.append((component, obj))
    return found


def test_the_code_uses_the_bus_as_the_acl_table_says() -> None:
    """The derivation itself, on what the services are known to do (a check of the checker)."""
    tiler = _bus_use("tiler")
    assert tiler["read"] == {topics.SCAN_REQUESTS}
    assert tiler["write"] == {topics.SCAN_REQUESTS, topics.TILES, topics.DEAD_LETTERS}
    assert tiler["groups"] == {("amberscan-tiler", "literal")} and tiler["creates"]
    sink = _bus_use("sink")
    assert sink["read"] == {topics.DETECTIONS, topics.DEAD_LETTERS}
    assert sink["groups"] == {
        ("amberscan-sink", "literal"),
        ("amberscan-sink-dead-letters", "literal"),
    }
    assert _bus_use("watch")["write"] == _bus_use("scan")["write"] == {topics.SCAN_REQUESTS}
    assert _bus_use("web")["read"] == {topics.FEATURES} and not _bus_use("web")["write"]
    assert _bus_use("replay")["groups"] == {("amberscan-replay-", "prefix")}


def _kafka_security_problems(objects: list[dict[str, Any]]) -> list[str]:
    """What in a production build lets a workload reach the bus other than over TLS as a user of
    its own with exactly the ACLs its code needs."""
    problems = []
    config = _config(objects)
    (cluster,) = _of_kind(objects, "Kafka")
    kafka = cluster["spec"]["kafka"]
    listeners = {listener["port"]: listener for listener in kafka["listeners"]}
    bootstrap_port = _port(config["AMBERSCAN_KAFKA_BOOTSTRAP"])
    for port, listener in listeners.items():
        if not listener.get("tls") or listener.get("authentication", {}).get("type") != (
            "scram-sha-512"
        ):
            problems.append(f"listener {listener['name']}:{port} without TLS and SCRAM-SHA-512")
    if bootstrap_port not in listeners:
        problems.append(f"the services' bootstrap port {bootstrap_port} is no listener's")
    if kafka.get("authorization", {}).get("type") != "simple":
        problems.append("the brokers authorize nothing (spec.kafka.authorization)")
    if "userOperator" not in cluster["spec"].get("entityOperator", {}):
        problems.append("no User Operator: the KafkaUsers would never be made")
    if config["AMBERSCAN_KAFKA_SECURITY_PROTOCOL"] != "SASL_SSL":
        problems.append(f"clients use {config['AMBERSCAN_KAFKA_SECURITY_PROTOCOL']}")
    if config["AMBERSCAN_KAFKA_SASL_MECHANISM"] != "SCRAM-SHA-512":
        problems.append(f"clients use {config['AMBERSCAN_KAFKA_SASL_MECHANISM']}")
    if config.get("AMBERSCAN_KAFKA_SASL_PASSWORD") is not None:
        problems.append("a Kafka password in the ConfigMap")
    users = {
        u["metadata"]["name"]: u
        for u in _of_kind(objects, "KafkaUser")
        if u["metadata"]["labels"]["strimzi.io/cluster"] == cluster["metadata"]["name"]
    }
    ca_file = Path(config["AMBERSCAN_KAFKA_CA_FILE"])
    for component, obj in _bus_workloads(objects):
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        pod = _pod_spec(obj)
        assert pod is not None
        ca_volumes = {
            v["name"]
            for v in pod.get("volumes", [])
            if v.get("secret", {}).get("secretName") == CA_SECRET
            and {"key": "ca.crt", "path": ca_file.name} in v["secret"].get("items", [])
        }
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container.get("env", [])}
        user = env.get("AMBERSCAN_KAFKA_SASL_USERNAME", {}).get("value")
        if user != f"amberscan-{component}":
            problems.append(f"{name}: Kafka user {user!r}, not amberscan-{component}")
            continue
        password = env.get("AMBERSCAN_KAFKA_SASL_PASSWORD", {}).get("valueFrom", {})
        if password.get("secretKeyRef", {}) != {"name": user, "key": "password"}:
            problems.append(f"{name}: the password is not its KafkaUser's Secret {user}/password")
        mounts = {
            m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in ca_volumes
        }
        if str(ca_file.parent) not in mounts:
            problems.append(f"{name}: the cluster CA is not mounted at {ca_file.parent}")
        if user not in users:
            problems.append(f"{name}: no KafkaUser {user}")
            continue
        # The pod's settings, as it reads them, make a client (credentials present).
        variables = {**config, "AMBERSCAN_KAFKA_SASL_USERNAME": user}
        variables["AMBERSCAN_KAFKA_SASL_PASSWORD"] = "from-the-secret"
        try:
            kafka_config = from_variables(variables, Settings).kafka
        except ValidationError as error:
            problems.append(f"{name}: its Kafka settings are refused: {error}")
            continue
        if kafka_config.credentials_missing():
            problems.append(f"{name}: no {kafka_config.credentials_missing()}")
        acls, wanted = _acls(users[user]), _acls_in_code(component)
        if acls != wanted:
            problems.append(
                f"{name}: {user}'s ACLs beyond its code {sorted(acls - wanted)}, "
                f"missing {sorted(wanted - acls)}"
            )
    return problems


def test_production_reaches_the_bus_over_tls_as_a_user_per_workload(scratch: Path) -> None:
    objects = list(_built("production", scratch))
    assert len(_bus_workloads(objects)) >= len(serve.STAGES) + 1  # + the scan CronJob
    problems = _kafka_security_problems(objects)
    assert not problems, "\n".join(problems)


def _planted(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.mark.parametrize(
    ("plant", "expected"),
    [
        (
            lambda o: _planted(o, "Kafka", "amberscan")["spec"]["kafka"]["listeners"][0].update(
                tls=False
            ),
            "listener tls:9093 without TLS and SCRAM-SHA-512",
        ),
        (
            lambda o: _planted(o, "Kafka", "amberscan")["spec"]["kafka"].pop("authorization"),
            "the brokers authorize nothing",
        ),
        (
            lambda o: _planted(o, "Kafka", "amberscan")["spec"]["entityOperator"].pop(
                "userOperator"
            ),
            "no User Operator",
        ),
        (
            lambda o: _config(o).update(AMBERSCAN_KAFKA_SECURITY_PROTOCOL="PLAINTEXT"),
            "clients use PLAINTEXT",
        ),
        (
            lambda o: _planted(o, "KafkaUser", "amberscan-segmenter")["spec"]["authorization"][
                "acls"
            ].append({"resource": {"type": "topic", "name": "tiles"}, "operations": ["Write"]}),
            "Deployment/segmenter: amberscan-segmenter's ACLs beyond its code "
            "[('topic', 'tiles', 'literal', 'Write')], missing []",
        ),
        (
            lambda o: _planted(o, "KafkaUser", "amberscan-tiler")["spec"]["authorization"][
                "acls"
            ].pop(),
            "Deployment/tiler: amberscan-tiler's ACLs beyond its code [], missing "
            "[('group', 'amberscan-tiler', 'literal', 'Read')]",
        ),
        (
            lambda o: _pod_spec(_planted(o, "Deployment", "sink"))["containers"][0]["env"][1][
                "valueFrom"
            ]["secretKeyRef"].update(name="amberscan-tiler"),
            "Deployment/sink: the password is not its KafkaUser's Secret amberscan-sink/password",
        ),
        (
            lambda o: _pod_spec(_planted(o, "CronJob", "scan-region"))["containers"][0].pop(
                "volumeMounts"
            ),
            "CronJob/scan-region: the cluster CA is not mounted at /etc/amberscan/kafka-ca",
        ),
    ],
    ids=[
        "plain-listener",
        "no-authorizer",
        "no-user-operator",
        "plaintext-client",
        "extra-acl",
        "missing-acl",
        "other-password",
        "no-ca",
    ],
)
def test_kafka_security_check_catches_a_planted_regression(
    scratch: Path, plant: Any, expected: str
) -> None:
    objects = copy.deepcopy(list(_built("production", scratch)))
    assert not _kafka_security_problems(objects)
    plant(objects)
    problems = _kafka_security_problems(objects)
    assert any(p.startswith(expected) for p in problems), problems


def test_the_local_bus_stays_plaintext_without_users(scratch: Path) -> None:
    objects = list(_built("local", scratch))
    assert _config(objects)["AMBERSCAN_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert not _of_kind(objects, "KafkaUser")


def test_the_replay_job_runs_as_its_kafka_user(scratch: Path) -> None:
    """The Job template (applied as is, on either overlay) names the production user; the password
    is optional there, so it also runs where the bus is plaintext."""
    (replay,) = _load(K8S / "jobs" / "replay.yaml")
    (container,) = _containers(replay)
    env = {e["name"]: e for e in container["env"]}
    user = env["AMBERSCAN_KAFKA_SASL_USERNAME"]["value"]
    assert user == "amberscan-replay"
    assert env["AMBERSCAN_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": user,
        "key": "password",
        "optional": True,
    }
    users = {
        u["metadata"]["name"]: u for u in _of_kind(list(_built("production", scratch)), "KafkaUser")
    }
    assert _acls(users[user]) == _acls_in_code("replay")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    config = _config(list(_built("production", scratch)))
    assert str(Path(config["AMBERSCAN_KAFKA_CA_FILE"]).parent) in mounts


def test_keda_reads_lag_as_its_own_user(scratch: Path) -> None:
    """Every lag trigger authenticates (TriggerAuthentication: SCRAM-SHA-512 over TLS, the
    cluster CA) at the TLS listener, as a user allowed to describe exactly the topics and groups
    the triggers name."""
    objects = list(_built("production", scratch))
    (cluster,) = _of_kind(objects, "Kafka")
    ports = {listener["port"] for listener in cluster["spec"]["kafka"]["listeners"]}
    auths = {a["metadata"]["name"]: a["spec"] for a in _of_kind(objects, "TriggerAuthentication")}
    maps = {m["metadata"]["name"]: m.get("data", {}) for m in _of_kind(objects, "ConfigMap")}
    wanted = set()
    users = set()
    for scaled in _of_kind(objects, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert _port(meta["bootstrapServers"]) in ports, scaled["metadata"]["name"]
            auth = auths[trigger["authenticationRef"]["name"]]
            params = {r["parameter"]: maps[r["name"]][r["key"]] for r in auth["configMapTargetRef"]}
            secrets = {r["parameter"]: (r["name"], r["key"]) for r in auth["secretTargetRef"]}
            assert params == {
                "sasl": "scram_sha512",
                "tls": "enable",
                "username": params["username"],
            }
            assert secrets == {
                "password": (params["username"], "password"),
                "ca": (CA_SECRET, "ca.crt"),
            }
            users.add(params["username"])
            wanted |= {
                ("topic", meta["topic"], "literal", "Describe"),
                ("group", meta["consumerGroup"], "literal", "Describe"),
            }
    (user,) = users
    (keda,) = [u for u in _of_kind(objects, "KafkaUser") if u["metadata"]["name"] == user]
    assert _acls(keda) == wanted


def test_production_is_no_demo(scratch: Path) -> None:
    """Production never sets AMBERSCAN_DEMO (the web map would accept built-in credentials,
    #26 defect 9); the local throwaway cluster, with the example Secret, does."""
    for overlay, demo in (("production", "false"), ("local", "true")):
        assert _config(list(_built(overlay, scratch)))["AMBERSCAN_DEMO"] == demo, overlay
