//! The manifests under deploy/kubernetes/, parsed, for the tests that run what they describe.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// `deploy/kubernetes/<name>`.
pub fn manifest_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(name)
}

/// Every object of a multi-document manifest.
pub fn manifest(name: &str) -> Vec<Value> {
    let path = manifest_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The object of `kind` in manifest `name`.
pub fn object(name: &str, kind: &str) -> Value {
    manifest(name)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {name}"))
}

/// The DaemonSet's agent container.
pub fn agent_container() -> Value {
    object("daemonset.yaml", "DaemonSet")["spec"]["template"]["spec"]["containers"][0].clone()
}

/// A list of strings in `v` (a container's command, capabilities, ...).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// The policy the ConfigMap ships.
pub fn configmap_policy() -> String {
    object("daemonset.yaml", "ConfigMap")["data"]["policy.yaml"]
        .as_str()
        .expect("data.policy.yaml")
        .to_string()
}

/// The value following `flag` in the agent's command.
pub fn agent_flag(flag: &str) -> Option<String> {
    let command = strings(&agent_container()["command"]);
    let i = command.iter().position(|a| a == flag)?;
    command.get(i + 1).cloned()
}
