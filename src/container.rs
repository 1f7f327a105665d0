//! Who a listener belongs to: container identity from the OCI state and its annotations.

use std::collections::HashMap;

use oci_spec::runtime::ContainerProcessState;
use serde::Serialize;

use crate::policy::SelectorInput;

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
    /// The profile's `listenerMetadata`.
    pub metadata: String,
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
        Container {
            container_id: inner.id().clone(),
            namespace: first(&NAMESPACE_KEYS),
            pod: first(&POD_KEYS),
            container: first(&CONTAINER_KEYS),
            init_pid: inner.pid().filter(|pid| *pid > 0).unwrap_or(*state.pid()),
            bundle: inner.bundle().display().to_string(),
            metadata: state.metadata().clone().unwrap_or_default(),
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
}
