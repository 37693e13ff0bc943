"""deploy/azure and the image: the Bicep parses and matches what the manifests and deploy.sh expect, the
deploy script passes shellcheck, and the image's lock file pins every dependency with its hashes. checkov's
scan of the Bicep and the Dockerfile is in tests/test_deploy_k8s.py, with the manifests'."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

from tests.test_deploy_k8s import AKS_VERSIONS, CHECKOV, DEPLOY, ROOT


def test_the_cluster_version_in_the_bicep_is_one_the_manifests_are_validated_against():
    version = re.search(r"param kubernetesVersion string = '([\d.]+)'", (DEPLOY / "azure" / "main.bicep").read_text())
    assert version and version.group(1) in AKS_VERSIONS


def test_the_gpu_pool_in_the_bicep_matches_what_the_gpu_workers_ask_for():
    bicep = (DEPLOY / "azure" / "main.bicep").read_text()
    assert "nodeTaints: ['sku=gpu:NoSchedule']" in bicep
    assert "nodeLabels: { 'trainserve.io/pool': 'gpu' }" in bicep
    assert re.search(r"name: 'gpu'[\s\S]*?enableAutoScaling: true[\s\S]*?minCount: 0", bicep), "the GPU pool scales from 0"


def test_the_image_lock_pins_every_dependency_with_hashes():
    lock = (DEPLOY / "requirements.lock").read_text()
    pinned = {m.group(1).lower().replace("_", "-") for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", lock, re.MULTILINE)}
    project = (ROOT / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*?)^\]", project, re.MULTILINE | re.DOTALL).group(1)
    wanted = {m.group(1).lower() for m in re.finditer(r'^\s+"([A-Za-z0-9_.-]+)', dependencies, re.MULTILINE)}
    wanted = {w.replace("_", "-") for w in wanted}
    assert wanted - {"torch"} <= pinned, f"not in deploy/requirements.lock: {wanted - {'torch'} - pinned}"
    assert "torch" not in pinned, "torch comes from PyTorch's own index, CPU or CUDA"
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 3)[3]):
        if "==" in block.splitlines()[0]:
            assert "--hash=sha256:" in block, block.splitlines()[0]


def test_the_cuda_image_is_a_build_argument_of_the_one_dockerfile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_VARIANT=cpu" in dockerfile
    assert 'download.pytorch.org/whl/${TORCH_VARIANT}" torch==2.13.0' in dockerfile
    assert "--require-hashes --no-deps -r deploy/requirements.lock" in dockerfile
    assert "TORCH_VARIANT=cu" in (DEPLOY / "azure" / "deploy.sh").read_text()


def bicep_template() -> dict:
    code = ("import json, sys; from pycep import BicepParser; "
            "print(json.dumps(BicepParser().parse(text=open(sys.argv[1]).read()), default=str))")
    out = subprocess.run([str(CHECKOV / "python"), "-c", code, str(DEPLOY / "azure" / "main.bicep")],
                         capture_output=True, text=True)
    assert out.returncode == 0, f"main.bicep does not parse:\n{out.stderr[-2000:]}"
    return json.loads(out.stdout)


def test_the_bicep_parses_and_holds_every_resource_the_guide_names():
    template = bicep_template()
    types = {r["type"] for r in template["resources"].values()}
    assert {"Microsoft.ContainerService/managedClusters", "Microsoft.ContainerRegistry/registries",
            "Microsoft.DBforPostgreSQL/flexibleServers", "Microsoft.Cache/redis", "Microsoft.Storage/storageAccounts",
            "Microsoft.Storage/storageAccounts/blobServices/containers", "Microsoft.ManagedIdentity/userAssignedIdentities",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
            "Microsoft.KeyVault/vaults", "Microsoft.OperationalInsights/workspaces"} <= types
    assert {"location", "systemVmSize", "gpuVmSize", "gpuMaxCount", "postgresSkuName", "redisSkuName",
            "storageSku"} <= set(template["parameters"])
    # Everything deploy.sh reads from the outputs exists.
    script = (DEPLOY / "azure" / "deploy.sh").read_text()
    assert set(re.findall(r"output ([A-Z_]+)\)", script)) <= set(template["outputs"])
    params = (DEPLOY / "azure" / "main.bicepparam").read_text()
    assert set(re.findall(r"^param (\w+)", params, re.MULTILINE)) <= set(template["parameters"])


def test_the_deploy_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is installed by .ci/run (Debian's shellcheck)"
    out = subprocess.run([shellcheck, str(DEPLOY / "azure" / "deploy.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
