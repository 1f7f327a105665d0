//! What the Switchboard agent and its OCI hook both need: the policy, the original-profile record, syscall tables.

pub mod bpf;
pub mod handover;
pub mod policy;
pub mod record;
pub mod syscalls;

/// Where the agent listens for runtimes' listener fds unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/switchboard/agent.sock";
