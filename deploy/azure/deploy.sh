#!/usr/bin/env bash
# From an Azure subscription to trainserve on AKS, and every upgrade after: the Azure resources (main.bicep),
# the images (built in ACR, no local Docker needed), the migration, then the pods. docs/deploy-aks.md walks
# through it.
#
#   deploy/azure/deploy.sh [--overlay aks-gpu|aks-cpu] [--resource-group NAME] [--location REGION]
#                          [--parameters FILE] [--tag TAG] [--skip-infra] [--skip-images]
#
# Needs: az (logged in, `az login`), kubectl, kubelogin (`az aks install-cli` brings both), git, curl.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OVERLAY=aks-gpu
RESOURCE_GROUP=trainserve
LOCATION=westeurope
PARAMETERS="$ROOT/deploy/azure/main.bicepparam"
TAG="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")-$(git -C "$ROOT" rev-parse --short=12 HEAD)"
SKIP_INFRA=false
SKIP_IMAGES=false
NAMESPACE=trainserve

while [ $# -gt 0 ]; do
  case "$1" in
    --overlay) OVERLAY="$2"; shift 2 ;;
    --resource-group) RESOURCE_GROUP="$2"; shift 2 ;;
    --location) LOCATION="$2"; shift 2 ;;
    --parameters) PARAMETERS="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --skip-infra) SKIP_INFRA=true; shift ;;
    --skip-images) SKIP_IMAGES=true; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "deploy.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$OVERLAY" in aks-gpu|aks-cpu) ;; *) echo "deploy.sh: --overlay is aks-gpu or aks-cpu, not $OVERLAY" >&2; exit 2 ;; esac
if [ "$SKIP_IMAGES" = false ] && [ -n "$(git -C "$ROOT" status --porcelain -- service workers models migrations pyproject.toml Dockerfile deploy/requirements.lock)" ]; then
  echo "deploy.sh: the code has uncommitted changes; commit them so that the image tag $TAG names what it holds" >&2
  exit 1
fi
for tool in az kubectl kubelogin git curl; do
  command -v "$tool" >/dev/null || { echo "deploy.sh: $tool not found (az aks install-cli brings kubectl and kubelogin)" >&2; exit 1; }
done
step() { printf '\n==> %s\n' "$*"; }

DEPLOYMENT=trainserve
if [ "$SKIP_INFRA" = false ]; then
  step "Azure resources in $RESOURCE_GROUP ($LOCATION): main.bicep"
  az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --output none
  az deployment group create --resource-group "$RESOURCE_GROUP" --name "$DEPLOYMENT" \
    --template-file "$ROOT/deploy/azure/main.bicep" --parameters "$PARAMETERS" --output none
fi
output() { az deployment group show -g "$RESOURCE_GROUP" -n "$DEPLOYMENT" --query "properties.outputs.$1.value" -o tsv; }
AKS_NAME="$(output AKS_NAME)"
REGISTRY="$(output REGISTRY)"
REGISTRY_NAME="${REGISTRY%%.*}"

if [ "$SKIP_IMAGES" = false ]; then
  step "images trainserve:$TAG and trainserve-cuda:$TAG, built in $REGISTRY"
  az acr build --registry "$REGISTRY_NAME" --image "trainserve:$TAG" "$ROOT"
  if [ "$OVERLAY" = aks-gpu ]; then
    az acr build --registry "$REGISTRY_NAME" --image "trainserve-cuda:$TAG" --build-arg TORCH_VARIANT=cu128 "$ROOT"
  fi
fi
digest() { az acr repository show --name "$REGISTRY_NAME" --image "$1:$TAG" --query digest -o tsv; }
IMAGE="$REGISTRY/trainserve@$(digest trainserve)"
CUDA_IMAGE="$IMAGE"
[ "$OVERLAY" = aks-gpu ] && CUDA_IMAGE="$REGISTRY/trainserve-cuda@$(digest trainserve-cuda)"

step "deploy/k8s/components/azure: where this deployment's resources are"
cat > "$ROOT/deploy/k8s/components/azure/azure.env" <<ENV
# Written by deploy/azure/deploy.sh from deployment $DEPLOYMENT in $RESOURCE_GROUP, images $TAG.
AZURE_CLIENT_ID=$(output AZURE_CLIENT_ID)
AZURE_TENANT_ID=$(output AZURE_TENANT_ID)
KEY_VAULT_NAME=$(output KEY_VAULT_NAME)
POSTGRES_HOST=$(output POSTGRES_HOST)
POSTGRES_USER=$(output POSTGRES_USER)
REDIS_ADDRESS=$(output REDIS_ADDRESS)
API_HOST=${TRAINSERVE_API_HOST:-trainserve.example.com}
TLS_CERT_KEYVAULT_URI=${TRAINSERVE_TLS_CERT_KEYVAULT_URI:-https://$(output KEY_VAULT_NAME).vault.azure.net/certificates/trainserve-tls}
IMAGE=$IMAGE
CUDA_IMAGE=$CUDA_IMAGE
ENV
cat > "$ROOT/deploy/k8s/components/azure/settings.env" <<ENV
# Written by deploy/azure/deploy.sh from deployment $DEPLOYMENT in $RESOURCE_GROUP.
TRAINSERVE_DATABASE_URL=postgresql+psycopg://$(output POSTGRES_USER)@$(output POSTGRES_HOST):5432/trainserve?sslmode=require
TRAINSERVE_DATABASE_AUTH=entra
TRAINSERVE_ARTIFACTS_URL=$(output ARTIFACTS_URL)
TRAINSERVE_SECRETS_DIR=/mnt/secrets-store
ENV

step "cluster credentials for $AKS_NAME"
az aks get-credentials --resource-group "$RESOURCE_GROUP" --name "$AKS_NAME" --overwrite-existing
kubelogin convert-kubeconfig -l azurecli

# The metrics add-on brings the PodMonitor CRD (azmonitoring.coreos.com) that components/monitoring uses,
# and sends what it scrapes to an Azure Monitor workspace (a default one unless the cluster has one).
if [ "$(az aks show --resource-group "$RESOURCE_GROUP" --name "$AKS_NAME" \
        --query azureMonitorProfile.metrics.enabled --output tsv)" != "true" ]; then
  step "managed Prometheus: the AKS metrics add-on"
  az aks update --resource-group "$RESOURCE_GROUP" --name "$AKS_NAME" --enable-azure-monitor-metrics --output none
fi

if [ "$OVERLAY" = aks-gpu ]; then
  step "NVIDIA device plugin on the GPU pool; KEDA signs in with the workload identity"
  kubectl apply -f "$ROOT/deploy/k8s/cluster/nvidia-device-plugin.yaml"
  kubectl -n kube-system rollout restart deployment keda-operator
fi

step "migration first: the previous run's Job goes, the new one starts with the rest of $OVERLAY"
kubectl -n "$NAMESPACE" delete job trainserve-migrate --ignore-not-found --wait=true
kubectl apply -k "$ROOT/deploy/k8s/overlays/$OVERLAY"
# New pods wait in their init container until the schema is there; the old ones serve meanwhile.
if ! kubectl -n "$NAMESPACE" wait --for=condition=complete job/trainserve-migrate --timeout=15m; then
  kubectl -n "$NAMESPACE" logs job/trainserve-migrate --tail=100 || true
  echo "deploy.sh: the migration failed; the previous release keeps serving. Roll back: docs/deploy-aks.md#rollback" >&2
  exit 1
fi

step "rollout"
for deployment in trainserve-api trainserve-worker trainserve-exporter; do
  kubectl -n "$NAMESPACE" rollout status "deployment/$deployment" --timeout=15m
done

step "smoke test: /readyz through a port-forward (the network policies let only the ingress controller in)"
kubectl -n "$NAMESPACE" port-forward service/trainserve-api 18080:80 >/dev/null &
FORWARD=$!
trap 'kill "$FORWARD" 2>/dev/null || true' EXIT
for _ in $(seq 30); do
  if curl -fsS http://127.0.0.1:18080/readyz; then echo; break; fi
  sleep 2
done
curl -fsS http://127.0.0.1:18080/readyz/jobs >/dev/null || { echo "deploy.sh: the API does not take jobs yet (/readyz/jobs)" >&2; exit 1; }
echo "trainserve $TAG is live ($OVERLAY); train and predict: docs/deploy-aks.md#first-predict"
