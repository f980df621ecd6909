#!/usr/bin/env bash
# Creates the kind cluster of kind-config.yaml and gives its workers KubeEdge's role labels
# (the kubelet may not set node-role.kubernetes.io/* itself). Needs Docker and kind.
set -euo pipefail
cd "$(dirname "$0")/.."
kind create cluster --config kind-config.yaml
for n in $(kubectl get nodes -l edgeai.io/edge=true -o name); do
  kubectl label "$n" node-role.kubernetes.io/edge= node-role.kubernetes.io/agent= --overwrite
done
kubectl get nodes -L edgeai.io/accelerator,edgeai.io/site
