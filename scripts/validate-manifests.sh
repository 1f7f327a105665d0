#!/usr/bin/env bash
# Validates the Kubernetes manifests offline, as an API server would take them:
# - every built-in kind against the Kubernetes schemas of kubernetes-validate,
#   strictly (unknown fields are errors), for the oldest version the manifests
#   support (1.30: appArmorProfile) and the newest the package knows;
# - ServiceMonitor and PrometheusRule against the Prometheus Operator's CRD
#   schemas (scripts/validate-crds.py).
# The SPO SeccompProfile has no schema available offline; tests/deploy_k8s.rs
# checks its rules against the policy and runs them under runc.
#
#   scripts/validate-manifests.sh [DIR]     # default deploy/kubernetes
#
# The tools live in the virtualenv scripts/install.sh makes (SWITCHBOARD_VENV).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-$here/../deploy/kubernetes}
venv=${SWITCHBOARD_VENV:-/opt/switchboard/venv}
files=("$dir"/*.yaml)
for version in 1.30.0 ""; do
  # kubernetes-validate exits non-zero on an invalid object; it only warns about
  # kinds it has no schema for (the CRDs, checked below).
  "$venv/bin/kubernetes-validate" --strict --quiet ${version:+-k "$version"} "${files[@]}"
done
"$venv/bin/python" "$here/validate-crds.py" "${files[@]}"
echo "validate-manifests: ${#files[@]} files valid"
