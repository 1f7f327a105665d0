//! The record of what a container's original seccomp profile did with each syscall the OCI hook made NOTIFY.
//!
//! `switchboard-oci-hook` writes it (as an annotation in `inject` mode, inside
//! `listenerMetadata` in `profile` mode); the agent reads it at intake and never
//! answers more permissively than it says.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::{ArgCondition, ArgOp};

/// The annotation that carries the record in `inject` mode.
pub const RECORD_ANNOTATION: &str = "io.switchboard.original-profile";

/// Key of the record inside a JSON `listenerMetadata` (profile mode).
pub const METADATA_RECORD_KEY: &str = "switchboard_original_profile";
/// Key of the user's own metadata string inside a JSON `listenerMetadata` (profile mode).
pub const METADATA_USER_KEY: &str = "metadata";

/// What the original profile would have done with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Outcome {
    /// SCMP_ACT_ALLOW or SCMP_ACT_LOG.
    Allow,
    /// SCMP_ACT_ERRNO with this errno (SCMP_ACT_TRACE without a tracer counts as ENOSYS).
    Errno { errno: i32 },
    /// SCMP_ACT_KILL*, SCMP_ACT_TRAP.
    Kill,
}

/// One argument comparison, in the agent policy's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordArg {
    pub index: usize,
    /// eq, ne, lt, le, gt, ge or masked_eq.
    pub op: ArgOp,
    pub value: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<u64>,
}

impl RecordArg {
    /// The same comparison as the policy engine runs it.
    pub fn condition(&self) -> Option<ArgCondition> {
        if self.index > 5 {
            return None;
        }
        Some(ArgCondition {
            index: self.index,
            op: self.op,
            value: self.value,
            mask: self.mask.unwrap_or(u64::MAX),
        })
    }
}

/// One rule of the original profile for a syscall; all its conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<RecordArg>,
    /// Capabilities the container must have for the rule to exist (`includes.caps`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
    /// Capabilities whose presence removes the rule (`excludes.caps`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_caps: Vec<String>,
    pub outcome: Outcome,
}

/// What the original profile did with each syscall the hook made NOTIFY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalProfile {
    /// The profile's `defaultAction`, for recorded syscalls no rule matches.
    pub default: Outcome,
    /// Per syscall name, its original rules in profile order; the first that matches decides.
    pub syscalls: BTreeMap<String, Vec<OriginalRule>>,
}
