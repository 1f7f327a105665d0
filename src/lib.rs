//! Switchboard: a seccomp user-notification agent for Linux containers.

pub mod agent;
pub mod bench;
pub mod bpf;
pub mod container;
pub mod decision;
pub mod events;
pub mod handover;
pub mod http;
pub mod intake;
pub mod kill;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod record;
pub mod run;
pub mod status;
pub mod sys;
pub mod syscalls;
pub mod text;
pub mod watch;
