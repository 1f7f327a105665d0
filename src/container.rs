//! Who a listener belongs to: container identity from the OCI state and its annotations.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use oci_spec::runtime::ContainerProcessState;
use serde::Serialize;

use crate::decision::Ceiling;
use crate::policy::SelectorInput;
use crate::record::{OriginalProfile, METADATA_RECORD_KEY, METADATA_USER_KEY};

/// Annotation keys, in order of preference, for the Kubernetes names.
/// CRI-O and podman write `io.kubernetes.cri-o.*` / `io.kubernetes.pod.*`;
/// containerd writes `io.kubernetes.cri.*`.
const NAMESPACE_KEYS: [&str; 3] = [
    "io.kubernetes.pod.namespace",
    "io.kubernetes.cri.sandbox-namespace",
    "io.kubernetes.cri-o.Namespace",
];
const POD_KEYS: [&str; 3] = [
    "io.kubernetes.pod.name",
    "io.kubernetes.cri.sandbox-name",
    "io.kubernetes.cri-o.PodName",
];
const CONTAINER_KEYS: [&str; 3] = [
    "io.kubernetes.container.name",
    "io.kubernetes.cri.container-name",
    "io.kubernetes.cri-o.ContainerName",
];

/// A served container as events and metrics name it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Container {
    pub container_id: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub init_pid: i32,
    pub bundle: String,
    /// The profile's `listenerMetadata` (the user's part, when the OCI hook wrapped it).
    pub metadata: String,
    /// The original profile's filter, from the record the OCI hook left in the loaded
    /// profile's `listenerMetadata`; answers are never more permissive than it.
    #[serde(skip)]
    pub original: Option<Arc<Ceiling>>,
    /// The container's bounding capabilities, for the record's capability conditions.
    #[serde(skip)]
    pub capabilities: Vec<String>,
}

impl Container {
    /// Identity from the state a runtime sent over `listenerPath`.
    pub fn from_state(state: &ContainerProcessState) -> Container {
        let inner = state.state();
        let empty = HashMap::new();
        let annotations = inner.annotations().as_ref().unwrap_or(&empty);
        let first = |keys: &[&str]| {
            keys.iter()
                .find_map(|key| annotations.get(*key))
                .cloned()
                .unwrap_or_default()
        };
        // Only the loaded profile's listenerMetadata (which runc passes as `metadata`) may
        // carry the record: annotations come from users, and a record could loosen answers.
        let raw_metadata = state.metadata().clone().unwrap_or_default();
        let (metadata, record) = split_metadata(&raw_metadata);
        let init_pid = inner.pid().filter(|pid| *pid > 0).unwrap_or(*state.pid());
        let capabilities = if record.is_some() {
            bounding_capabilities(inner.bundle(), init_pid)
        } else {
            Vec::new()
        };
        let original = record.map(|record| {
            Arc::new(Ceiling::from_record(&record, |c| {
                capabilities.iter().any(|have| have == c)
            }))
        });
        Container {
            container_id: inner.id().clone(),
            namespace: first(&NAMESPACE_KEYS),
            pod: first(&POD_KEYS),
            container: first(&CONTAINER_KEYS),
            init_pid,
            bundle: inner.bundle().display().to_string(),
            metadata,
            original,
            capabilities,
        }
    }

    /// The fields policy selectors match on.
    pub fn selector_input(&self) -> SelectorInput<'_> {
        SelectorInput {
            namespace: &self.namespace,
            pod: &self.pod,
            container: &self.container,
            metadata: &self.metadata,
        }
    }
}

/// Splits a JSON `listenerMetadata` written by the OCI hook into the user's metadata and the record.
fn split_metadata(raw: &str) -> (String, Option<OriginalProfile>) {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str(raw) else {
        return (raw.to_string(), None);
    };
    let Some(record) = object.remove(METADATA_RECORD_KEY) else {
        return (raw.to_string(), None);
    };
    let user = match object.remove(METADATA_USER_KEY) {
        Some(serde_json::Value::String(user)) => user,
        _ => String::new(),
    };
    match serde_json::from_value::<OriginalProfile>(record) {
        Ok(record) => (user, Some(record)),
        Err(e) => {
            // The profile the kernel loaded carries a record this build cannot read: deny
            // rather than answer without a ceiling.
            tracing::error!(error = %e, "unreadable original-profile record in listenerMetadata; denying every flagged call");
            (user, Some(OriginalProfile::unreadable()))
        }
    }
}

/// The bounding set the runtime gives the container, from the bundle's config.json;
/// the init's own set at handover time may not be final yet.
fn bounding_capabilities(bundle: &Path, init_pid: i32) -> Vec<String> {
    let from_config = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|config| {
            let caps = config
                .pointer("/process/capabilities/bounding")?
                .as_array()?
                .clone();
            Some(
                caps.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect::<Vec<_>>(),
            )
        });
    from_config.unwrap_or_else(|| {
        tracing::warn!(
            pid = init_pid,
            "no capabilities in the bundle's config.json; capability-conditioned rules of the original profile count as absent"
        );
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_come_from_either_runtime_family() {
        let crio: ContainerProcessState = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","fds":["seccompFd"],"pid":42,"metadata":"team-a",
               "state":{"ociVersion":"1.0.2","id":"abc","status":"creating","pid":41,"bundle":"/b",
               "annotations":{"io.kubernetes.pod.namespace":"prod-eu","io.kubernetes.pod.name":"web-1",
               "io.kubernetes.container.name":"nginx"}}}"#,
        )
        .unwrap();
        let c = Container::from_state(&crio);
        assert_eq!(
            (c.namespace.as_str(), c.pod.as_str(), c.container.as_str()),
            ("prod-eu", "web-1", "nginx")
        );
        assert_eq!((c.init_pid, c.metadata.as_str()), (41, "team-a"));

        let containerd: ContainerProcessState = serde_json::from_str(
            r#"{"ociVersion":"0.2.0","fds":["seccompFd"],"pid":7,
               "state":{"ociVersion":"1.0.2","id":"x","status":"creating","bundle":"/b",
               "annotations":{"io.kubernetes.cri.sandbox-namespace":"ns","io.kubernetes.cri.sandbox-name":"p",
               "io.kubernetes.cri.container-name":"c"}}}"#,
        )
        .unwrap();
        let c = Container::from_state(&containerd);
        assert_eq!(
            (c.namespace.as_str(), c.pod.as_str(), c.container.as_str()),
            ("ns", "p", "c")
        );
        assert_eq!(c.init_pid, 7);
    }

    #[test]
    fn records_come_only_from_listener_metadata() {
        let record = r#"{"version":2,"defaultAction":"SCMP_ACT_ALLOW","notify":["mkdir"]}"#;
        let state = |metadata: &str, annotation: &str| -> ContainerProcessState {
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": 42, "metadata": metadata,
                "state": {"ociVersion": "1.0.2", "id": "abc", "status": "creating", "pid": 41,
                          "bundle": "/nonexistent",
                          "annotations": {"io.switchboard.original-profile": annotation}}
            }))
            .unwrap()
        };
        // A record in an annotation (which users set) is not one.
        let c = Container::from_state(&state("team-a", record));
        assert!(c.original.is_none());
        assert_eq!(c.metadata, "team-a");
        // The loaded profile's listenerMetadata carries it, beside the user's metadata.
        let metadata =
            format!(r#"{{"metadata":"team-a","switchboard_original_profile":{record}}}"#);
        let c = Container::from_state(&state(&metadata, ""));
        assert!(c.original.is_some());
        assert_eq!(c.metadata, "team-a");
        // One this build cannot read there denies rather than lets through.
        let c = Container::from_state(&state(
            r#"{"switchboard_original_profile":{"default":{"action":"allow"}}}"#,
            "",
        ));
        let ceiling = c
            .original
            .expect("an unreadable record still makes a ceiling");
        let mkdir = crate::syscalls::numbers("mkdir")[0];
        let data = crate::bpf::SeccompData {
            nr: mkdir.1 as i32,
            arch: crate::syscalls::arches()[mkdir.0].audit,
            instruction_pointer: 0,
            args: [0; 6],
        };
        assert_eq!(ceiling.verdict(&data).errno, libc::EPERM);
    }
}
