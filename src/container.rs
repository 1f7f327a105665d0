//! Who a listener belongs to: container identity from the OCI state and its annotations.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use oci_spec::runtime::ContainerProcessState;
use serde::Serialize;

use crate::decision::Ceiling;
use crate::policy::SelectorInput;
use crate::record::{ListenerMetadata, OriginalProfile};

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
    /// The record the OCI hook left in the loaded profile's `listenerMetadata`.
    #[serde(skip)]
    pub record: Option<Arc<OriginalProfile>>,
    /// The original profile's filter, compiled from `record` for the container's
    /// capabilities; answers are never more permissive than it.
    #[serde(skip)]
    pub original: Option<Arc<Ceiling>>,
    /// The bounding capabilities `original` was compiled for, kept to compile it again
    /// after a restart or a takeover.
    #[serde(skip)]
    pub capabilities: Option<Vec<String>>,
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
        Container {
            container_id: inner.id().clone(),
            namespace: first(&NAMESPACE_KEYS),
            pod: first(&POD_KEYS),
            container: first(&CONTAINER_KEYS),
            init_pid,
            bundle: inner.bundle().display().to_string(),
            metadata,
            record: record.map(Arc::new),
            // Compiled by intake, which first reads the bundle's capabilities off the control plane.
            original: None,
            capabilities: None,
        }
    }

    /// The name metrics and text outputs use for the container: its Kubernetes name, else
    /// (podman, runc, ctr: their names live in the engine's own database, not in the state
    /// or the bundle) the short id, so that containers outside Kubernetes do not all add up
    /// into one series with empty labels.
    pub fn display_name(&self) -> &str {
        if self.container.is_empty() && self.namespace.is_empty() && self.pod.is_empty() {
            short_id(&self.container_id)
        } else {
            &self.container
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

/// The first 12 characters of a 64-hex id, as podman and docker show it; other ids whole.
pub fn short_id(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..12]
    } else {
        id
    }
}

/// Splits a JSON `listenerMetadata` written by the OCI hook into the user's metadata and the record.
fn split_metadata(raw: &str) -> (String, Option<OriginalProfile>) {
    let split = ListenerMetadata::split(raw);
    let user = split.user.unwrap_or_default();
    match split.record {
        None => (user, None),
        Some(Ok(record)) => (user, Some(record)),
        Some(Err(e)) => {
            // The profile the kernel loaded carries a record this build cannot read: deny
            // rather than answer without a ceiling.
            tracing::error!(error = %e, "unreadable original-profile record in listenerMetadata; denying every flagged call");
            (user, Some(OriginalProfile::unreadable()))
        }
    }
}

/// Largest bundle `config.json` read for capabilities; real ones are a few KiB.
pub(crate) const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Why the bundle's capabilities could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BundleError {
    #[error("opening {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    #[error("{path} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: String },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not JSON: {source}")]
    BadJson {
        path: String,
        source: serde_json::Error,
    },
}

/// The bounding set the runtime gives the container, from the bundle's config.json;
/// the init's own set at handover time may not be final yet. A missing
/// `process.capabilities.bounding` is an empty set, as the runtime spec has it.
///
/// The bundle path comes from the peer, so the file is opened without following a final
/// symlink and without blocking (a FIFO would otherwise wait for a writer), must be a
/// regular file, and is read up to a size cap. It still blocks on a slow file system:
/// call it off the control plane, with a timeout.
pub(crate) fn bounding_capabilities(bundle: &Path) -> Result<Vec<String>, BundleError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file_path = bundle.join("config.json");
    let path = || file_path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&file_path)
        .map_err(|source| BundleError::Open {
            path: path(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| BundleError::Read {
        path: path(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(BundleError::NotRegular { path: path() });
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(BundleError::TooLarge { path: path() });
    }
    // The take() also bounds a file that grows after the fstat.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| BundleError::Read {
            path: path(),
            source,
        })?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(BundleError::TooLarge { path: path() });
    }
    let config: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| BundleError::BadJson {
            path: path(),
            source,
        })?;
    let caps = config
        .pointer("/process/capabilities/bounding")
        .and_then(serde_json::Value::as_array)
        .map(|caps| {
            caps.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(caps)
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
    fn bundle_capabilities_come_only_from_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(
            &config,
            r#"{"process":{"capabilities":{"bounding":["CAP_KILL","CAP_CHOWN"]}}}"#,
        )
        .unwrap();
        assert_eq!(
            bounding_capabilities(dir.path()).unwrap(),
            ["CAP_KILL", "CAP_CHOWN"]
        );
        std::fs::write(&config, r#"{"process":{}}"#).unwrap();
        assert!(bounding_capabilities(dir.path()).unwrap().is_empty());
        std::fs::write(&config, "{").unwrap();
        assert!(matches!(
            bounding_capabilities(dir.path()),
            Err(BundleError::BadJson { .. })
        ));
        let big = vec![b' '; usize::try_from(MAX_CONFIG_BYTES).unwrap() + 1];
        std::fs::write(&config, big).unwrap();
        assert!(matches!(
            bounding_capabilities(dir.path()),
            Err(BundleError::TooLarge { .. })
        ));
        std::fs::remove_file(&config).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
        assert!(matches!(
            bounding_capabilities(dir.path()),
            Err(BundleError::Open { .. })
        ));
        std::fs::remove_file(&config).unwrap();
        std::fs::create_dir(&config).unwrap();
        assert!(matches!(
            bounding_capabilities(dir.path()),
            Err(BundleError::NotRegular { .. })
        ));
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
        assert!(c.record.is_none());
        assert_eq!(c.metadata, "team-a");
        // The loaded profile's listenerMetadata carries it, beside the user's metadata.
        let metadata =
            format!(r#"{{"metadata":"team-a","switchboard_original_profile":{record}}}"#);
        let c = Container::from_state(&state(&metadata, ""));
        assert!(c.record.is_some());
        assert_eq!(c.metadata, "team-a");
        // One this build cannot read there denies rather than lets through.
        let c = Container::from_state(&state(
            r#"{"switchboard_original_profile":{"default":{"action":"allow"}}}"#,
            "",
        ));
        let record = c
            .record
            .expect("an unreadable record still makes a ceiling");
        let ceiling = Ceiling::for_container(&record, Some(&[]));
        let mkdir = crate::syscalls::numbers("mkdir")[0];
        let data = crate::bpf::SeccompData {
            nr: i32::try_from(mkdir.1).unwrap(),
            arch: crate::syscalls::arches()[mkdir.0].audit,
            instruction_pointer: 0,
            args: [0; 6],
        };
        assert_eq!(ceiling.verdict(&data).errno, libc::EPERM);
    }
}
