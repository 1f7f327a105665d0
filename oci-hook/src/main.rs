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
    // `--version` belongs to the runtime the hook stands in for: podman and CRI-O read the
    // real runtime's version through it. The hook's own is `-V`.
    disable_version_flag = true,
    about = "Makes the syscalls a Switchboard policy names SCMP_ACT_NOTIFY in OCI bundles and seccomp profiles",
    after_help = "Called with any other first argument, it acts as an OCI runtime: on `create` and `run` it \
injects into the bundle, then it execs the real runtime (configured in /etc/switchboard/oci-hook.toml, \
or the file $SWITCHBOARD_OCI_HOOK_CONFIG names) with the same arguments."
)]
struct Cli {
    /// Print the hook's version and commit (`--version` goes to the real runtime).
    #[arg(short = 'V', action = clap::ArgAction::Version)]
    version: Option<bool>,
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
}

impl From<MergeArgs> for Settings {
    fn from(args: MergeArgs) -> Settings {
        Settings {
            policy: args.policy,
            socket: Some(args.socket),
            force: args.force,
            log_default_denied: args.log_default_denied,
        }
    }
}

/// First arguments that select the hook's own command line; any other is runtime mode.
const OWN_COMMANDS: [&str; 6] = [
    "inject",
    "profile",
    switchboard_shared::docs::SUBCOMMAND,
    "--help",
    "-h",
    "-V",
];

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let own = match args.get(1) {
        None => true,
        Some(first) => first.to_str().is_some_and(|f| OWN_COMMANDS.contains(&f)),
    };
    if !own {
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
