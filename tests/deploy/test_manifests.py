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

from amberscan.cli import build_parser, serve
from amberscan.cli import replay as replay_command
from amberscan.common import topics
from amberscan.common.data import places
from amberscan.common.settings import PROCESSES, Settings, variables
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
        if name not in STREAMING:
            continue  # the web map's probes ask its own HTTP port
        for probe in ("livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] == "/metrics" and get["port"] in ("metrics", port), f"{name} {probe}"


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


def test_model_server_runs_tf_serving_with_batching(objects: list[dict[str, Any]]) -> None:
    container = _tfserving(objects)
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


def test_client_batches_fit_the_server_batches(objects: list[dict[str, Any]]) -> None:
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
    claims = {v["persistentVolumeClaim"]["claimName"] for v in _pod_spec(job)["volumes"]}
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
    for name in ("model-server", "feature"):
        pod = _one(objects, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["nodeSelector"], name
        assert any(t["key"] == GPU_TAINT_KEY for t in pod["tolerations"]), name
