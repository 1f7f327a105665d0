//! `switchboard-oci-hook`: parses the command line and dispatches to inject, profile or drop-in runtime mode.

mod arch;
mod atomic;
mod bundle;
mod commands;
mod profile;
mod runtime;
mod settings;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use settings::Settings;

#[derive(Parser)]
#[command(
    name = "switchboard-oci-hook",
    version = switchboard_shared::version!(),
    about = "Makes the syscalls a Switchboard policy names SCMP_ACT_NOTIFY in OCI bundles and seccomp profiles",
    after_help = "Called with runc's command line (runc's global flags, then one of runc's commands such as \
`create`, `run`, `state`, `delete`), it acts as an OCI runtime: on `create` and `run` it \
injects into the bundle, then it execs the real runtime (configured in /etc/switchboard/oci-hook.toml, \
or the file $SWITCHBOARD_OCI_HOOK_CONFIG names) with the same arguments."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rewrite an OCI bundle's config.json in place; the record goes in an annotation.
    Inject {
        /// The bundle directory (holds config.json).
        #[arg(long)]
        bundle: PathBuf,
        #[command(flatten)]
        merge: MergeArgs,
    },
    /// Merge into a Docker-format seccomp profile (podman, CRI-O, containerd, Kubernetes Localhost).
    Profile {
        /// The profile to merge into.
        input: PathBuf,
        /// Where to write the result; stdout without it.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        merge: MergeArgs,
    },
}

#[derive(Args)]
struct MergeArgs {
    /// The agent's policy file (YAML); without it, the agent's embedded default.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The agent's socket, written to listenerPath.
    #[arg(long, default_value = switchboard_shared::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Replace a listenerPath that names another socket.
    #[arg(long)]
    force: bool,
    /// For allowlist profiles, also make every syscall the default denies NOTIFY.
    #[arg(long)]
    log_default_denied: bool,
    /// A recording profile: every syscall the kernel can tell the agent of on this host
    /// is NOTIFY, except those the runtime needs to hand the listener over; the agent's
    /// `--record-dir` gets the profile the container needs.
    #[arg(long)]
    record: bool,
}

impl From<MergeArgs> for Settings {
    fn from(args: MergeArgs) -> Settings {
        Settings {
            policy: args.policy,
            socket: Some(args.socket),
            force: args.force,
            log_default_denied: args.log_default_denied,
            record: args.record,
        }
    }
}

/// runc's commands: as the first argument after runc's global flags, they make the hook a runtime.
const RUNTIME_COMMANDS: [&str; 18] = [
    "checkpoint",
    "create",
    "delete",
    "events",
    "exec",
    "features",
    "init",
    "kill",
    "list",
    "pause",
    "ps",
    "restore",
    "resume",
    "run",
    "spec",
    "start",
    "state",
    "update",
];

/// runc's global flags that take a value (unless written `--flag=value`); engines put them before the command.
const RUNTIME_FLAGS_WITH_VALUE: [&str; 5] =
    ["--root", "--log", "--log-format", "--criu", "--rootless"];
/// runc's global flags without a value.
const RUNTIME_FLAGS: [&str; 2] = ["--debug", "--systemd-cgroup"];

/// Whether the command line is a runtime invocation: runc global flags, then a runc command.
/// Everything else (the hook's own commands, `--version`, `help`, typos) is the hook's to answer,
/// so that a mistake never reaches the real runtime and comes back as its usage.
fn is_runtime_invocation(args: &[OsString]) -> bool {
    let mut rest = args.iter().skip(1).map(|a| a.to_str());
    while let Some(arg) = rest.next() {
        let Some(arg) = arg else { return false };
        if RUNTIME_COMMANDS.contains(&arg) {
            return true;
        }
        if RUNTIME_FLAGS.contains(&arg)
            || RUNTIME_FLAGS_WITH_VALUE
                .iter()
                .any(|f| arg.starts_with(&format!("{f}=")))
        {
            continue;
        }
        if RUNTIME_FLAGS_WITH_VALUE.contains(&arg) {
            rest.next();
            continue;
        }
        return false;
    }
    false
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if is_runtime_invocation(&args) {
        return exit_code(runtime::run(args));
    }
    let cli: Cli = switchboard_shared::docs::parse();
    let result = match cli.command {
        Command::Inject { bundle, merge } => commands::inject(&bundle, merge.into()),
        Command::Profile {
            input,
            output,
            merge,
        } => commands::profile(&input, output.as_deref(), merge.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-oci-hook: {e:#}");
            let invalid_policy = matches!(
                e.downcast_ref(),
                Some(switchboard_shared::policy::PolicyError::Invalid { .. })
            );
            ExitCode::from(if invalid_policy { 2 } else { 1 })
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
