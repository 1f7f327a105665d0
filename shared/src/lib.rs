//! What the Switchboard agent and its OCI hook both need: the policy, the original-profile record, syscall tables.

pub mod bpf;
pub mod docs;
pub mod handover;
pub mod policy;
pub mod record;
pub mod syscalls;

/// A timestamp as the agent's events carry it: RFC 3339, UTC, microseconds.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

/// A timestamp as runc's log lines (and so the hook's) carry it: RFC 3339, UTC, seconds.
pub fn rfc3339_seconds(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Where the agent listens for runtimes' listener fds unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/switchboard/agent.sock";
