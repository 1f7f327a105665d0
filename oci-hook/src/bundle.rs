//! `inject`: merging the policy into an OCI bundle's config.json in place, with the record in `linux.seccomp.listenerMetadata`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use switchboard_shared::record::ANNOTATION_PREFIX;

use crate::atomic::{self, WriteError};
use crate::profile::{self, MergeError, MergeOptions};

/// Why a bundle could not be injected; the config is then left as it was.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Shape { path: PathBuf, message: String },
    #[error("{path}: linux.seccomp: {source}")]
    Merge { path: PathBuf, source: MergeError },
    #[error("cannot update the bundle's config: {0}")]
    Write(#[from] WriteError),
}

/// What an injection did.
#[derive(Debug)]
pub struct Injected {
    pub config: PathBuf,
    /// False when the config already had everything (a repeated injection) and was not written.
    pub changed: bool,
    /// Syscalls now NOTIFY.
    pub notify: Vec<String>,
    pub warnings: Vec<String>,
}

/// Merges the policy into `bundle/config.json`, rewriting it atomically.
pub fn inject(bundle: &Path, options: &MergeOptions) -> Result<Injected, InjectError> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|source| InjectError::Read {
        path: path.clone(),
        source,
    })?;
    let original: Value = serde_json::from_slice(&bytes).map_err(|source| InjectError::Parse {
        path: path.clone(),
        source,
    })?;
    let shape = |message: &str| InjectError::Shape {
        path: path.clone(),
        message: message.to_string(),
    };
    if !original.is_object() {
        return Err(shape("the config is not a JSON object"));
    }
    let mut config = original.clone();

    // Annotations come from users (`podman --annotation`, pod annotations under CRI-O):
    // none of ours may reach the runtime from outside, the record least of all.
    let mut warnings = Vec::new();
    if let Some(Value::Object(annotations)) = config.get_mut("annotations") {
        annotations.retain(|key, _| {
            let ours = key.starts_with(ANNOTATION_PREFIX);
            if ours {
                warnings.push(format!(
                    "removed annotation {key:?}: the record of the original profile comes only from the profile"
                ));
            }
            !ours
        });
    }

    let linux =
        object_field(&mut config, "linux").ok_or_else(|| shape("linux is not an object"))?;
    let mut seccomp = match linux.get("seccomp") {
        None | Some(Value::Null) => profile::empty_profile(),
        Some(seccomp) => seccomp.clone(),
    };
    // The record travels in listenerMetadata, which runc passes to the agent as the
    // `metadata` of the container's state: it reaches the agent only with the profile
    // the kernel loaded. A profile merged in profile mode already carries one there.
    let mut merged =
        profile::merge_profile(&mut seccomp, options).map_err(|source| InjectError::Merge {
            path: path.clone(),
            source,
        })?;
    merged.warnings.splice(0..0, warnings);
    let notify: Vec<String> = merged.record.notify.iter().cloned().collect();
    if !notify.is_empty() {
        linux.insert("seccomp".into(), seccomp);
    }

    let changed = config != original;
    if changed {
        atomic::replace(&path, &render(&config, &bytes))?;
    }
    Ok(Injected {
        config: path,
        changed,
        notify,
        warnings: merged.warnings,
    })
}

/// The object at `config[key]`, created when absent; None when it is something else.
fn object_field<'a>(config: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let object = config.as_object_mut()?;
    let field = object
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if field.is_null() {
        *field = Value::Object(Map::new());
    }
    field.as_object_mut()
}

/// Serializes like the original looked: indented if it had line breaks, compact if not.
pub fn render(value: &Value, original: &[u8]) -> Vec<u8> {
    let trimmed = original.trim_ascii_end();
    let mut out = if trimmed.contains(&b'\n') {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
    .expect("a JSON value serializes");
    if trimmed.len() != original.len() {
        out.push(b'\n');
    }
    out
}
