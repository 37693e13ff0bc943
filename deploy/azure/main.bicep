// trainserve's Azure resources, in one resource group:
//   az group create -n trainserve -l westeurope
//   az deployment group create -g trainserve -f deploy/azure/main.bicep -p deploy/azure/main.bicepparam
// deploy.sh does both, then builds and pushes the images and applies deploy/k8s. Nothing here holds a key:
// the pods sign in as one user-assigned managed identity (Azure Workload Identity) to Blob storage,
// PostgreSQL and Key Vault; Redis's key goes from Redis straight into Key Vault.

@description('Azure region of every resource.')
param location string = resourceGroup().location

@description('Short name that every resource name starts with or contains (3-12 lowercase letters and digits).')
@minLength(3)
@maxLength(12)
param prefix string = 'trainserve'

@description('Kubernetes version of the AKS cluster (a minor AKS supports; tests validate the manifests against it).')
param kubernetesVersion string = '1.34'

@description('VM size of the system node pool, which also runs the API and the CPU workers.')
param systemVmSize string = 'Standard_D4ds_v5'

@description('Nodes in the system pool (autoscaled up to systemMaxCount).')
@minValue(2)
param systemMinCount int = 2
param systemMaxCount int = 5

@description('VM size of the GPU node pool (NC-series). Standard_NC4as_T4_v3: one T4; Standard_NC24ads_A100_v4: one A100.')
param gpuVmSize string = 'Standard_NC4as_T4_v3'

@description('Most GPU nodes. The pool scales from 0: no GPU job, no GPU node to pay for.')
@minValue(1)
param gpuMaxCount int = 2

@description('PostgreSQL flexible server compute: Burstable B2s by default, GeneralPurpose for production load.')
param postgresSkuName string = 'Standard_B2s'
@allowed(['Burstable', 'GeneralPurpose', 'MemoryOptimized'])
param postgresSkuTier string = 'Burstable'
param postgresStorageGb int = 32

@description('Azure Cache for Redis: Basic C0 is one node without SLA; Standard C1 replicates.')
@allowed(['Basic', 'Standard', 'Premium'])
param redisSkuName string = 'Standard'
@allowed(['C', 'P'])
param redisSkuFamily string = 'C'
param redisSkuCapacity int = 1

@description('Replication of the artifact storage account.')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS'])
param storageSku string = 'Standard_ZRS'

@description('Addresses (CIDR) that may reach the Kubernetes API server, e.g. your office and CI runners; empty: any address, Entra ID sign-in still required.')
param apiServerAuthorizedIpRanges array = []

@description('Namespace and service account of the trainserve pods (deploy/k8s).')
param namespace string = 'trainserve'
param serviceAccount string = 'trainserve'

var suffix = uniqueString(resourceGroup().id)
var names = {
  identity: 'id-${prefix}'
  logs: 'log-${prefix}-${suffix}'
  registry: 'cr${prefix}${suffix}'
  aks: 'aks-${prefix}'
  postgres: 'psql-${prefix}-${suffix}'
  redis: 'redis-${prefix}-${suffix}'
  storage: take('st${prefix}${suffix}', 24)
  vault: take('kv-${prefix}-${suffix}', 24)
}
var roles = {
  acrPull: '7f951dda-4ed3-4ff0-a42b-0bf7e7d3ba2b'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

resource logs 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: names.logs
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_139: deploy.sh pushes from the operator's machine; AKS pulls with its kubelet identity (AcrPull), anonymous pull is off
  // checkov:skip=CKV_AZURE_166: image quarantine needs the Premium SKU; deploy.sh pushes only images it built from a tagged commit
  name: names.registry
  location: location
  sku: { name: 'Standard' }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
  }
}

resource aks 'Microsoft.ContainerService/managedClusters@2024-02-01' = {
  // checkov:skip=CKV_AZURE_172: enableSecretRotation is set below; ARM takes add-on settings as strings ('true'), which this check does not read
  name: names.aks
  location: location
  identity: { type: 'SystemAssigned' }
  sku: { name: 'Base', tier: 'Standard' }
  properties: {
    kubernetesVersion: kubernetesVersion
    dnsPrefix: prefix
    enableRBAC: true
    disableLocalAccounts: true
    apiServerAccessProfile: {
      authorizedIPRanges: apiServerAuthorizedIpRanges
    }
    aadProfile: {
      managed: true
      enableAzureRBAC: true
    }
    autoUpgradeProfile: {
      upgradeChannel: 'patch'
      nodeOSUpgradeChannel: 'NodeImage'
    }
    oidcIssuerProfile: { enabled: true }
    securityProfile: {
      workloadIdentity: { enabled: true }
      imageCleaner: { enabled: true, intervalHours: 48 }
    }
    // KEDA scales the GPU workers from zero (deploy/k8s/components/gpu-workers).
    workloadAutoScalerProfile: {
      keda: { enabled: true }
    }
    // The managed NGINX ingress controller (ingress class webapprouting.kubernetes.azure.com).
    ingressProfile: {
      webAppRouting: { enabled: true }
    }
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
      networkDataplane: 'cilium'
      networkPolicy: 'cilium'
      loadBalancerSku: 'standard'
    }
    addonProfiles: {
      azureKeyvaultSecretsProvider: {
        enabled: true
        config: { enableSecretRotation: 'true', rotationPollInterval: '2m' }
      }
      omsagent: {
        enabled: true
        config: { logAnalyticsWorkspaceResourceID: logs.id }
      }
      azurepolicy: { enabled: true }
      kubeDashboard: { enabled: false }
    }
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        vmSize: systemVmSize
        osType: 'Linux'
        osSKU: 'AzureLinux'
        enableAutoScaling: true
        minCount: systemMinCount
        maxCount: systemMaxCount
        count: systemMinCount
        maxPods: 50
        type: 'VirtualMachineScaleSets'
        enableEncryptionAtHost: true
        osDiskType: 'Ephemeral'
        osDiskSizeGB: 64
      }
      {
        // GPU training: from 0 nodes, tainted so that only pods that tolerate it (the GPU workers) land here.
        name: 'gpu'
        mode: 'User'
        vmSize: gpuVmSize
        osType: 'Linux'
        osSKU: 'Ubuntu'
        enableAutoScaling: true
        minCount: 0
        maxCount: gpuMaxCount
        count: 0
        maxPods: 50
        type: 'VirtualMachineScaleSets'
        enableEncryptionAtHost: true
        osDiskType: 'Ephemeral'
        osDiskSizeGB: 128 // the CUDA image is several GB
        nodeTaints: ['sku=gpu:NoSchedule']
        nodeLabels: { 'trainserve.io/pool': 'gpu' }
      }
    ]
  }
}

// The pods' identity, trusted when AKS vouches for the trainserve service account; and KEDA's operator, which
// reads the GPU job count from PostgreSQL as the same identity.
resource podsFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: identity
  name: 'aks-${namespace}-${serviceAccount}'
  properties: {
    issuer: aks.properties.oidcIssuerProfile.issuerURL
    subject: 'system:serviceaccount:${namespace}:${serviceAccount}'
    audiences: ['api://AzureADTokenExchange']
  }
}

resource kedaFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: identity
  name: 'aks-kube-system-keda-operator'
  properties: {
    issuer: aks.properties.oidcIssuerProfile.issuerURL
    subject: 'system:serviceaccount:kube-system:keda-operator'
    audiences: ['api://AzureADTokenExchange']
  }
  dependsOn: [podsFederation] // one federated credential at a time per identity
}

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: registry
  name: guid(registry.id, aks.id, roles.acrPull)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: aks.properties.identityProfile.kubeletidentity.objectId
    principalType: 'ServicePrincipal'
  }
}

// PostgreSQL: Microsoft Entra sign-in only, no password. The pods' identity is its Entra administrator, so
// the migration Job can change the schema.
resource postgres 'Microsoft.DBforPostgreSQL/flexibleServers@2022-12-01' = {
  name: names.postgres
  location: location
  sku: { name: postgresSkuName, tier: postgresSkuTier }
  properties: {
    version: '16'
    storage: { storageSizeGB: postgresStorageGb }
    backup: { backupRetentionDays: 14, geoRedundantBackup: 'Disabled' }
    highAvailability: { mode: 'Disabled' }
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: subscription().tenantId
    }
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2022-12-01' = {
  parent: postgres
  name: 'trainserve'
  properties: { charset: 'UTF8', collation: 'en_US.utf8' }
}

resource postgresAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2022-12-01' = {
  parent: postgres
  name: identity.properties.principalId
  properties: {
    principalType: 'ServicePrincipal'
    principalName: identity.name
    tenantId: subscription().tenantId
  }
  dependsOn: [database]
}

// Reached from AKS's outbound addresses, which are Azure addresses; for a private network, put the server
// in the cluster's virtual network instead (docs/deploy-aks.md).
resource postgresFromAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2022-12-01' = {
  parent: postgres
  name: 'AllowAzureServices'
  properties: { startIpAddress: '0.0.0.0', endIpAddress: '0.0.0.0' }
  dependsOn: [postgresAdmin]
}

resource redis 'Microsoft.Cache/redis@2023-08-01' = {
  // checkov:skip=CKV_AZURE_89: public endpoint, TLS only, key in Key Vault; private endpoints are the next step (docs/deploy-aks.md)
  name: names.redis
  location: location
  properties: {
    sku: { name: redisSkuName, family: redisSkuFamily, capacity: redisSkuCapacity }
    enableNonSslPort: false
    minimumTlsVersion: '1.2'
    redisVersion: '6'
    // A queue, not a cache: never evict an accepted job's message.
    redisConfiguration: { 'maxmemory-policy': 'noeviction' }
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-01-01' = {
  // checkov:skip=CKV_AZURE_35: public endpoint, Entra sign-in only (shared keys are off); private endpoints are the next step (docs/deploy-aks.md)
  // checkov:skip=CKV_AZURE_206: zone-redundant by default (storageSku); models can be trained again, choose Standard_GRS to keep them through a region's loss
  // checkov:skip=CKV_AZURE_43: the name is computed (take('st<prefix><unique>', 24)): lowercase letters and digits, 24 at most
  name: names.storage
  location: location
  kind: 'StorageV2'
  sku: { name: storageSku }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // workload identity only: no account key works
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource artifacts 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-01-01' = {
  parent: blobs
  name: 'artifacts'
  properties: { publicAccess: 'None' }
}

resource blobAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, identity.id, roles.blobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: public endpoint, Entra RBAC only; private endpoints are the next step (docs/deploy-aks.md)
  // checkov:skip=CKV_AZURE_189: as CKV_AZURE_109: the CSI driver on the nodes reads it over the public endpoint
  name: names.vault
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 30
    enablePurgeProtection: true
  }
}

// Redis's access key, written from Redis into Key Vault during the deployment; the pods read them through the
// Secrets Store CSI driver (deploy/k8s/components/azure/secretproviderclass.yaml).
resource brokerUrl 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: Redis's access key has no expiry of its own; rotate it with docs/deploy-aks.md#rotating-the-redis-key
  parent: vault
  name: 'broker-url'
  properties: {
    contentType: 'text/plain'
    value: 'rediss://:${redis.listKeys().primaryKey}@${redis.properties.hostName}:6380/0?ssl_cert_reqs=required'
  }
}

resource redisPassword 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: as broker-url: the key is rotated by redeploying (docs/deploy-aks.md#rotating-the-redis-key)
  parent: vault
  name: 'redis-password'
  properties: {
    contentType: 'text/plain'
    value: redis.listKeys().primaryKey
  }
}

resource secretsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// What deploy.sh writes into deploy/k8s/components/azure (azure.env, settings.env).
output AKS_NAME string = aks.name
output REGISTRY string = registry.properties.loginServer
output AZURE_CLIENT_ID string = identity.properties.clientId
output AZURE_TENANT_ID string = subscription().tenantId
output KEY_VAULT_NAME string = vault.name
output POSTGRES_HOST string = postgres.properties.fullyQualifiedDomainName
output POSTGRES_USER string = identity.name
output REDIS_ADDRESS string = '${redis.properties.hostName}:6380'
output ARTIFACTS_URL string = '${storage.properties.primaryEndpoints.blob}artifacts'
output LOG_ANALYTICS_WORKSPACE string = logs.name
