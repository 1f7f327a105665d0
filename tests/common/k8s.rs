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

/// The README's "Kubernetes" section.
pub fn readme_kubernetes() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("\n## Kubernetes\n")
        .expect("a Kubernetes section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

/// The fenced blocks of `lang` in the README's Kubernetes section.
fn readme_blocks(lang: &str) -> Vec<String> {
    let section = readme_kubernetes();
    let fence = format!("```{lang}\n");
    section
        .split(&fence)
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}

/// The command line of the section's `sh` blocks that starts with `prefix`, without its comment.
pub fn readme_command(prefix: &str) -> String {
    readme_blocks("sh")
        .iter()
        .flat_map(|b| b.lines().map(str::to_string).collect::<Vec<_>>())
        .find(|l| l.starts_with(prefix))
        .map(|l| l.split(" #").next().unwrap().trim_end().to_string())
        .unwrap_or_else(|| panic!("no `{prefix}` command in the README's Kubernetes section"))
}

/// The section's `toml` block that contains `needle`.
pub fn readme_toml(needle: &str) -> String {
    readme_blocks("toml")
        .into_iter()
        .find(|b| b.contains(needle))
        .unwrap_or_else(|| panic!("no toml block with {needle} in the README's Kubernetes section"))
}

/// `text` with each `(from, to)` replaced; every `from` must occur, so that a README
/// that drifts from what the tests run fails them.
pub fn substitute(text: &str, pairs: &[(&str, &str)]) -> String {
    pairs.iter().fold(text.to_string(), |t, (from, to)| {
        assert!(t.contains(from), "{from:?} not in {text:?}");
        t.replace(from, to)
    })
}

/// Writes a podman storage configuration of the test's own under `dir` (vfs) and returns
/// its path, for `CONTAINERS_STORAGE_CONF` in every podman the test runs, the build
/// script's included: parallel tests' images and the host's stay apart, and nothing is
/// left behind.
pub fn private_podman_storage(dir: &Path) -> PathBuf {
    let conf = dir.join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/podman-run\"\ngraphroot = \"{0}/podman-root\"\n",
            dir.display()
        ),
    )
    .unwrap();
    conf
}
