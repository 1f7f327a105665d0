"""Checks Prometheus Operator objects (ServiceMonitor, PrometheusRule) against the
operator's CRD schemas, offline and strictly (unknown fields are errors).

The schemas come from the cloudcoil-models-prometheus-operator package, whose models
are generated from the operator's CRDs; every object schema that lists properties is
closed with additionalProperties: false, as the API server's structural-schema pruning
would drop such fields silently. Usage: validate-crds.py FILE...; objects of other API
groups are left to kubernetes-validate. Exits 1 on the first invalid object.
"""
import sys

import jsonschema
import yaml
from cloudcoil.models.prometheus_operator import v1

KINDS = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}


def strict(schema):
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        pattern = schema.get("pattern")
        # Go's RE2 allows flags mid-pattern ("^(?i)..."), Python only at the start.
        if isinstance(pattern, str) and "(?i)" in pattern:
            schema["pattern"] = "(?i)" + pattern.replace("(?i)", "")
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def main(paths):

    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("apiVersion") != "monitoring.coreos.com/v1":
                    continue
                kind = doc.get("kind")
                if kind not in KINDS:
                    print(f"ERROR {path}: no schema for {kind}")
                    return 1
                schema = strict(KINDS[kind].model_json_schema(by_alias=True))
                try:
                    jsonschema.Draft202012Validator(schema).validate(doc)
                except jsonschema.ValidationError as e:
                    where = "/".join(str(p) for p in e.absolute_path)
                    print(f"ERROR {path}: {kind} {where}: {e.message}")
                    return 1
                print(f"INFO {path}: {kind} {doc['metadata']['name']} matches the CRD schema")

    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
