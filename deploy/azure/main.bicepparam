// The default deployment: one region, a T4 GPU pool from 0 to 2 nodes. Copy and change for another.
using './main.bicep'

param prefix = 'trainserve'
param kubernetesVersion = '1.34'
param gpuVmSize = 'Standard_NC4as_T4_v3'
param gpuMaxCount = 2
param postgresSkuName = 'Standard_B2s'
param postgresSkuTier = 'Burstable'
param redisSkuName = 'Standard'
param redisSkuCapacity = 1
