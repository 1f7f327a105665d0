//! Switchboard: a seccomp user-notification agent for Linux containers.

pub mod agent;
pub mod capture;
pub mod container;
pub mod decision;
pub mod events;
pub mod handoff;
pub mod holder;
pub mod http;
pub mod intake;
pub mod keep;
pub(crate) mod kill;
mod lock;
pub mod metrics;
pub mod notify;
pub mod profile_out;
pub mod record_run;
pub mod recording;
pub mod run;
pub mod status;
pub mod sys;
pub mod text;
pub mod watch;

pub use switchboard_shared::{bpf, handover, policy, record, syscalls};
