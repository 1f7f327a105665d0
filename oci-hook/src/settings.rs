//! What every mode needs to merge: the policy's syscalls, the agent's socket, and the flags.

use std::path::PathBuf;

use switchboard_shared::policy::{Policy, PolicyError};
use switchboard_shared::DEFAULT_SOCKET;

use crate::profile::MergeOptions;

/// Merge settings as the command line or the runtime-mode config file gives them.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The agent's policy file; None means the agent's embedded default.
    pub policy: Option<PathBuf>,
    /// The agent's socket; None means [`DEFAULT_SOCKET`].
    pub socket: Option<PathBuf>,
    pub force: bool,
    pub log_default_denied: bool,
    pub record: bool,
}

impl Settings {
    /// Loads the policy and turns the settings into merge options.
    pub fn merge_options(&self) -> Result<MergeOptions, PolicyError> {
        let policy = Policy::load_or_default(self.policy.as_deref())?;
        Ok(MergeOptions {
            flagged: policy.named_syscalls(),
            socket: self.socket.as_ref().map_or_else(
                || DEFAULT_SOCKET.to_string(),
                // listenerPath is opened by the runtime, from its own working directory.
                |s| {
                    std::path::absolute(s)
                        .unwrap_or_else(|_| s.clone())
                        .display()
                        .to_string()
                },
            ),
            force: self.force,
            log_default_denied: self.log_default_denied,
            record: self.record,
        })
    }
}

/// Prints the merge's warnings to stderr (never stdout: runtimes' stdout is parsed).
pub fn warn_all(warnings: &[String]) {
    for warning in warnings {
        eprintln!("switchboard-oci-hook: warning: {warning}");
    }
}
