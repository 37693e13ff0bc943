"""deploy/: every overlay renders with kustomize, every object validates strictly against the Kubernetes
versions AKS supports (KEDA and Secrets Store objects against their CRDs, kept in deploy/schemas), what
matters to an operator holds, the commands exist in the CLI, and checkov's scan of the manifests, the
Dockerfile and the Bicep is clean. No cluster and no Azure: everything here runs offline."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.cli import build_parser
from service.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "aks-cpu", "aks-gpu")
# The minor versions AKS supports as of 2026-11; main.bicep's kubernetesVersion is one of them.
AKS_VERSIONS = ("1.33", "1.34", "1.35")
CRDS = {  # kind -> the CRD file in deploy/schemas (deploy/schemas/README.md says where each comes from)
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
    "SecretProviderClass": "secrets-store.csi.x-k8s.io_secretproviderclasses.yaml",
    "PodMonitor": "azmonitoring.coreos.com_podmonitors.yaml",
}
TRAINSERVE = ("api", "worker", "gpu-worker", "exporter", "migrate")
CHECKOV = ROOT / ".venv-checkov" / "bin"


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} comes with the dev extra; run `make test`"
    return found


def render(overlay: str) -> list[dict]:
    out = subprocess.run([tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


def cluster_objects() -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / "cluster" / "nvidia-device-plugin.yaml").read_text())
            if doc]


def every_object(rendered) -> list[tuple[str, dict]]:
    return [(overlay, obj) for overlay, objs in rendered.items() for obj in objs] + \
           [("cluster", obj) for obj in cluster_objects()]


def workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] in ("Deployment", "Job", "DaemonSet")]


def component(obj: dict) -> str | None:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def pod(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def containers(obj: dict, init: bool = True) -> list[dict]:
    return pod(obj)["containers"] + (pod(obj).get("initContainers", []) if init else [])


def named(objs: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def strict_crd_schema(schema: dict) -> dict:
    """The CRD's schema with unknown fields refused, as the API server prunes them: every object that lists
    its properties and does not keep unknown fields gets additionalProperties false."""
    schema = copy.deepcopy(schema)

    def walk(node: dict) -> None:
        if not isinstance(node, dict):
            return
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                walk(child)

    walk(schema)
    return schema


def crd_validator(kind: str, api_version: str):
    crd = yaml.safe_load((DEPLOY / "schemas" / CRDS[kind]).read_text())
    version = api_version.split("/")[1]
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    assert served["served"], f"{kind} {api_version} is not served by the CRD in deploy/schemas"
    schema = strict_crd_schema(served["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders(overlay):
    kinds = {o["kind"] for o in render(overlay)}
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Job", "Service", "Ingress",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} <= kinds


@pytest.mark.parametrize("version", AKS_VERSIONS)
def test_every_object_validates_strictly(rendered, version):
    checked = 0
    for overlay, obj in every_object(rendered):
        where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in CRDS:
            errors = sorted(crd_validator(obj["kind"], obj["apiVersion"]).iter_errors(obj), key=str)
            assert not errors, f"{where}: {errors[0].message} at {list(errors[0].absolute_path)}"
        else:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where} is not valid Kubernetes {version}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 55


def test_a_field_the_crd_does_not_know_is_refused():
    """The CRD validation is strict: a misspelt ScaledObject field does not pass."""
    scaled = named(render("aks-gpu"), "ScaledObject", "trainserve-gpu-worker")
    scaled["spec"]["minReplicas"] = 0  # the field is minReplicaCount
    assert list(crd_validator("ScaledObject", scaled["apiVersion"]).iter_errors(scaled))


def test_gpu_limits_tolerations_and_node_selector_only_on_gpu_workers(rendered):
    for overlay, objs in rendered.items():
        gpu_workers = []
        for obj in workloads(objs):
            spec = pod(obj)
            gpu = any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in containers(obj))
            on_gpu_pool = bool(spec.get("tolerations")) or "trainserve.io/pool" in spec.get("nodeSelector", {})
            is_gpu_worker = component(obj) == "gpu-worker"
            assert gpu == is_gpu_worker and on_gpu_pool == is_gpu_worker, f"{overlay}: {obj['metadata']['name']}"
            if is_gpu_worker:
                gpu_workers.append(obj)
        assert len(gpu_workers) == (1 if overlay == "aks-gpu" else 0), overlay
        for worker in gpu_workers:
            main = containers(worker, init=False)[0]
            assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod(worker)["tolerations"]
            args = build_parser().parse_args(main["args"][1:])
            assert args.queues == ["gpu"] and args.max_tasks_per_child == 1, "one job per child process"
            assert args.concurrency == 2, "two small jobs share a GPU"
            assert main["image"].split("/")[-1].startswith("trainserve-cuda")
            assert pod(worker)["terminationGracePeriodSeconds"] >= 300, "time for a warm shutdown"


def test_keda_scales_gpu_workers_from_zero_on_the_gpu_queue(rendered):
    objs = rendered["aks-gpu"]
    scaled = named(objs, "ScaledObject", "trainserve-gpu-worker")
    assert scaled["spec"]["minReplicaCount"] == 0
    target = named(objs, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert component(target) == "gpu-worker" and "replicas" not in target["spec"], "KEDA owns the count"
    settings_map = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("trainserve-settings"))
    settings = Settings(**{k.removeprefix("TRAINSERVE_").lower(): v for k, v in settings_map["data"].items()
                           if k.startswith("TRAINSERVE_") and k != "TRAINSERVE_ENV_FILE"}, _env_file=None)
    assert settings.gpu_workers is True, "auto jobs go to the GPU workers"
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    assert triggers["redis"]["metadata"]["listName"] == settings.gpu_queue
    assert f"queue = '{settings.gpu_queue}'" in triggers["postgresql"]["metadata"]["query"]
    worker_args = build_parser().parse_args(containers(target, init=False)[0]["args"][1:])
    assert int(triggers["postgresql"]["metadata"]["targetQueryValue"]) == worker_args.concurrency, \
        "a GPU worker for every --concurrency jobs in hand"
    for trigger in triggers.values():
        auth = named(objs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["spec"], auth


def test_every_long_running_container_has_probes(rendered):
    for overlay, obj in every_object(rendered):
        if obj["kind"] != "Deployment":
            continue
        for c in containers(obj, init=False):
            assert "livenessProbe" in c and "readinessProbe" in c, f"{overlay}: {obj['metadata']['name']}/{c['name']}"
    api = named(rendered["aks-gpu"], "Deployment", "trainserve-api")
    main = containers(api, init=False)[0]
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Inference readiness: database and artifact store; a Redis outage does not take /predict out of service.
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["readinessProbe"]["timeoutSeconds"] > 3, "/readyz answers within 3 s per check"


def test_the_worker_liveness_probe_reads_the_file_the_worker_touches(rendered):
    from workers.tasks import ALIVE_FILE

    worker = named(rendered["dev"], "Deployment", "trainserve-worker")
    settings_map = next(o for o in rendered["dev"] if o["kind"] == "ConfigMap")
    home = settings_map["data"]["TRAINSERVE_HOME"]
    assert f"{home}/{ALIVE_FILE}" in " ".join(containers(worker, init=False)[0]["livenessProbe"]["exec"]["command"])


SECRET_KEYS = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCOUNTKEY|CONNECTION_STRING|_KEY)$", re.IGNORECASE)
SECRET_VALUES = re.compile(r"AccountKey=|SharedAccessSignature|://[^/\s:@]*:[^/\s@]+@|-----BEGIN")


def test_no_plaintext_secret_in_any_manifest(rendered):
    for overlay, obj in every_object(rendered):
        where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        assert obj["kind"] != "Secret", f"{where}: secrets come from Key Vault, never from a manifest"
        assert not SECRET_VALUES.search(json.dumps(obj)), f"{where} holds a credential"
        if obj["kind"] == "ConfigMap":
            assert not [k for k in obj.get("data", {}) if SECRET_KEYS.search(k)], where
        if obj["kind"] in ("Deployment", "Job", "DaemonSet"):
            for c in containers(obj):
                for env in c.get("env", []):
                    assert not (SECRET_KEYS.search(env["name"]) and "value" in env), f"{where}: {env['name']}"
    for path in (DEPLOY / "k8s").rglob("*"):
        if path.is_file():
            assert not SECRET_VALUES.search(path.read_text()), path


def test_the_secret_scan_catches_a_password_in_a_url():
    assert SECRET_VALUES.search("rediss://:s3cret@cache.example:6380/0")
    assert not SECRET_VALUES.search("postgresql+psycopg://id-trainserve@psql.example:5432/trainserve")


def test_every_image_is_pinned(rendered):
    for overlay, obj in every_object(rendered):
        if obj["kind"] not in ("Deployment", "Job", "DaemonSet"):
            continue
        for c in containers(obj):
            image = c["image"]
            name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
            assert "@sha256:" in image or (name and tag and tag != "latest"), f"{overlay}: {image}"
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            assert re.match(r"FROM [\w./-]+:\d+\.\d+\.\d+-[\w-]+$", line), line
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        assert re.search(r":\d+(\.\d+)+", service["image"]), f"docker-compose {name}: {service['image']}"


def test_every_pod_runs_as_non_root(rendered):
    for overlay, obj in every_object(rendered):
        if obj["kind"] not in ("Deployment", "Job"):
            continue  # the NVIDIA device plugin: root by need, reasons in its checkov.io/skip annotations
        spec = pod(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True, f"{overlay}: {obj['metadata']['name']}"
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in containers(obj):
            context = c["securityContext"]
            assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False, c["name"]
            assert context["capabilities"]["drop"] == ["ALL"] and context["readOnlyRootFilesystem"] is True


def test_the_migration_job_runs_before_new_pods_serve(rendered):
    for overlay, objs in rendered.items():
        job = named(objs, "Job", "trainserve-migrate")
        assert containers(job)[0]["args"] == ["trainserve", "migrate"]
        for obj in workloads(objs):
            if component(obj) in ("api", "worker", "gpu-worker", "exporter"):
                first = pod(obj)["initContainers"][0]
                assert first["args"][:2] == ["trainserve", "wait-for-migrations"], f"{overlay}: {obj['metadata']['name']}"
                build_parser().parse_args(first["args"][1:])
                assert first["image"] == containers(obj, init=False)[0]["image"], "the same release's schema"
        api = named(objs, "Deployment", "trainserve-api")
        assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "old pods serve until new ones are ready"
    script = (DEPLOY / "azure" / "deploy.sh").read_text()
    order = [script.index(step) for step in ("delete job trainserve-migrate", "apply -k",
                                             "--for=condition=complete job/trainserve-migrate", "rollout status")]
    assert order == sorted(order)


def test_commands_and_settings_exist_in_the_code(rendered):
    fields = {f"TRAINSERVE_{name.upper()}" for name in Settings.model_fields}
    for overlay, objs in rendered.items():
        for obj in workloads(objs):
            for c in containers(obj):
                if c.get("args", [""])[0] == "trainserve":
                    build_parser().parse_args(c["args"][1:])
                    unknown = {e["name"] for e in c.get("env", [])} - fields
                    assert not unknown, f"{overlay}: {obj['metadata']['name']} sets {unknown}"
        for obj in objs:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("trainserve-settings"):
                unknown = set(obj["data"]) - fields - {"TRAINSERVE_ENV_FILE", "TRAINSERVE_SECRETS_DIR"}
                assert not unknown, f"{overlay}: {unknown}"


def test_network_policies_let_only_the_ingress_reach_the_api_and_only_trainserve_reach_the_data(rendered):
    for overlay, objs in rendered.items():
        policies = {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "NetworkPolicy"}
        deny = policies["default-deny"]
        assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
        api = policies["api-from-ingress"]
        assert api["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
        sources = api["ingress"][0]["from"]
        assert len(sources) == 1 and "namespaceSelector" in sources[0]
        data = policies["trainserve-to-data"]
        assert set(data["podSelector"]["matchExpressions"][0]["values"]) == set(TRAINSERVE)
        if overlay == "dev":
            inbound = policies["data-from-trainserve"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]
            assert set(inbound["values"]) == set(TRAINSERVE)
    aks = {o["metadata"]["name"]: o for o in rendered["aks-cpu"] if o["kind"] == "NetworkPolicy"}
    assert aks["api-from-ingress"]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == \
        {"kubernetes.io/metadata.name": "app-routing-system"}


def test_on_azure_pods_use_the_workload_identity_and_key_vault(rendered):
    for overlay in ("aks-cpu", "aks-gpu"):
        objs = rendered[overlay]
        account = named(objs, "ServiceAccount", "trainserve")
        assert "azure.workload.identity/client-id" in account["metadata"]["annotations"]
        provider = named(objs, "SecretProviderClass", "trainserve-secrets")
        assert provider["spec"]["provider"] == "azure" and provider["spec"]["parameters"]["usePodIdentity"] == "false"
        for obj in workloads(objs):
            assert obj["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
            assert pod(obj)["serviceAccountName"] == "trainserve"
            volumes = {v["name"]: v for v in pod(obj)["volumes"]}
            assert volumes["secrets-store"]["csi"]["volumeAttributes"]["secretProviderClass"] == "trainserve-secrets"
        settings_map = next(o for o in objs if o["kind"] == "ConfigMap")
        assert settings_map["data"]["TRAINSERVE_DATABASE_AUTH"] == "entra"
        assert "TRAINSERVE_BROKER_URL" not in settings_map["data"], "the broker URL holds Redis's key: Key Vault"


@pytest.mark.slow
def test_checkov_finds_nothing_in_the_manifests_the_dockerfile_and_the_bicep(rendered, tmp_path):
    for overlay, objs in rendered.items():
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(objs))
    shutil.copy(DEPLOY / "k8s" / "cluster" / "nvidia-device-plugin.yaml", tmp_path / "cluster.yaml")
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    out = subprocess.run([str(CHECKOV / "checkov"), "--config-file", str(DEPLOY / "checkov.yaml"), "--skip-download",
                          "--output", "json", "-d", str(tmp_path), "-d", str(DEPLOY / "azure"), "--framework", "kubernetes", "bicep", "dockerfile"],
                         capture_output=True, text=True, cwd=ROOT)
    reports, text, decoder = [], out.stdout.strip(), json.JSONDecoder()
    while text:  # one JSON document per scanned folder, each a report or a list of them
        document, end = decoder.raw_decode(text)
        reports += document if isinstance(document, list) else [document]
        text = text[end:].strip()
    failed = [f"{r['check_type']}: {c['check_id']} {c['check_name']} ({c['resource']})"
              for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert {r["check_type"] for r in reports} == {"kubernetes", "bicep", "dockerfile"}
    assert sum(r["summary"]["passed"] for r in reports) > 1000


def test_the_api_serves_grpc_on_the_port_its_settings_name(rendered):
    """The Open Inference Protocol over gRPC: TRAINSERVE_GRPC_PORT, the container's grpc port, the Service's
    grpc port and the network policy all agree."""
    for overlay, objs in rendered.items():
        settings = next(o["data"] for o in objs if o["kind"] == "ConfigMap"
                        and o["metadata"]["name"].startswith("trainserve-settings"))
        port = int(settings["TRAINSERVE_GRPC_PORT"])
        (api,) = [c for c in containers(named(objs, "Deployment", "trainserve-api"), init=False)]
        assert {"name": "grpc", "containerPort": port, "protocol": "TCP"} in api["ports"], overlay
        service = named(objs, "Service", "trainserve-api")
        assert {"name": "grpc", "port": port, "targetPort": "grpc", "protocol": "TCP",
                "appProtocol": "grpc"} in service["spec"]["ports"], overlay
        policy = named(objs, "NetworkPolicy", "api-from-ingress")
        assert {"protocol": "TCP", "port": port} in policy["spec"]["ingress"][0]["ports"], overlay


def test_the_api_runs_a_process_per_cpu_it_requests(rendered):
    """TRAINSERVE_API_WORKERS comes from the container's own CPU request (the downward API rounds it up), and
    the AKS overlays request two CPUs, so their API pods serve on two processes."""
    for overlay, objs in rendered.items():
        (api,) = containers(named(objs, "Deployment", "trainserve-api"), init=False)
        (workers,) = [e for e in api["env"] if e["name"] == "TRAINSERVE_API_WORKERS"]
        assert workers["valueFrom"]["resourceFieldRef"] == {"containerName": api["name"], "resource": "requests.cpu",
                                                            "divisor": "1"}, overlay
        if overlay.startswith("aks"):
            assert api["resources"]["requests"]["cpu"] == api["resources"]["limits"]["cpu"] == "2", overlay
