//! The `switchboard` command line: parses arguments and dispatches to the library.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchboard::agent::{self, AgentConfig};
use switchboard::events::LogFormat;
use switchboard::policy::{Policy, PolicyError};
use switchboard::run::{self, RunConfig};
use switchboard::status::Status;

/// `--log-format`: the CLI's spelling of [`LogFormat`].
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// One JSON object per line.
    Json,
    /// One line per event, for people.
    Text,
}

impl From<Format> for LogFormat {
    fn from(format: Format) -> LogFormat {
        match format {
            Format::Json => LogFormat::Json,
            Format::Text => LogFormat::Text,
        }
    }
}

#[derive(Parser)]
#[command(
    name = "switchboard",
    version = switchboard_shared::version!(),
    about = "A seccomp user-notification agent for Linux containers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve seccomp listeners that container runtimes send over `listenerPath`.
    Agent {
        /// Unix socket the runtimes' `listenerPath` names.
        #[arg(long, default_value = agent::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Policy file (YAML); without it, the embedded default logs everything and denies nothing.
        /// Reloaded on SIGHUP and when the file changes; a file that does not validate is refused
        /// and the old policy keeps running.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Address of the Prometheus endpoint (`/metrics`); port 0 picks a free one.
        #[arg(long, default_value = agent::DEFAULT_METRICS_ADDR)]
        metrics_addr: SocketAddr,
        /// A second address serving only `/metrics` and `/healthz` (no `/status`), for Prometheus.
        #[arg(long)]
        scrape_addr: Option<SocketAddr>,
        /// Event format on stdout.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        log_format: Format,
        /// A uid allowed to connect besides root; repeatable. Pair with --socket-group.
        #[arg(long = "allow-uid")]
        allow_uid: Vec<u32>,
        /// Group (name or gid) the socket is created for, with mode 0660 instead of 0600.
        #[arg(long)]
        socket_group: Option<String>,
        /// Most connections read at once on the socket; beyond it the oldest is dropped.
        #[arg(long, default_value_t = switchboard::intake::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Seconds a gone container's series stay on /metrics.
        #[arg(long, default_value_t = 300)]
        series_ttl: u64,
        /// Most `switchboard_syscalls_total` series; later label sets fold into one overflow series.
        #[arg(long, default_value_t = 10_000)]
        max_series: usize,
        /// Do not ask for same-CPU wake-ups (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP); for measurements.
        #[arg(long)]
        no_sync_wakeup: bool,
        /// Write what containers with a recording profile (`switchboard-oci-hook --record`)
        /// call here, as the profile they need, when their last listener goes.
        #[arg(long)]
        record_dir: Option<PathBuf>,
        /// With --record-dir: keep small argument values and write conditions for them.
        #[arg(long)]
        record_args: bool,
        /// Take everything over from the agent running on --socket (listeners, counters), which
        /// then exits 0; for upgrades. Starts afresh when none runs there.
        #[arg(long)]
        takeover: bool,
        /// After a successor took over, stay idle until SIGTERM instead of exiting 0
        /// (Kubernetes: an exit would restart the container, which would take over back).
        #[arg(long)]
        wait_after_takeover: bool,
        /// Internal: run as the deciding child of the holding process, talking to it on this fd.
        #[arg(long, hide = true)]
        child_fd: Option<i32>,
    },
    /// Run a command with every syscall seen and allowed; write the seccomp profile it needs.
    Record {
        /// Where the profile goes.
        #[arg(short, long, required_unless_present = "diff")]
        output: Option<PathBuf>,
        /// What the profile answers any other syscall: an errno name or number.
        #[arg(long, default_value = "EPERM", value_parser = switchboard::record_run::parse_errno)]
        default_errno: u32,
        /// Keep small argument values (socket domains, personas, clone flags, ioctl
        /// requests) where few distinct ones come, and allow only those.
        #[arg(long)]
        args: bool,
        /// Instead of recording: print what profile NEW allows that OLD does not (+) and back (-).
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with_all = ["output", "command"])]
        diff: Option<Vec<PathBuf>>,
        /// The command and its arguments.
        #[arg(
            required_unless_present = "diff",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<OsString>,
    },
    /// Run a command with the policy's syscalls flagged and decided by the same engine.
    Run {
        /// Policy file (YAML); its rules' syscalls are the ones flagged. Without it, the embedded
        /// default flags the syscalls of examples/default.yaml (mkdir, unlink, rename, chmod, chown,
        /// mount, unshare, setns, ptrace, bpf, module loading, reboot, ...) and logs them, denying none.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Hand the listener to the agent at this socket instead of serving it here.
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Event format on stderr.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        log_format: Format,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Show what a running agent serves: listeners, counts, top syscalls, recent denials.
    Status {
        /// The agent's metrics address.
        #[arg(long, default_value = agent::DEFAULT_METRICS_ADDR)]
        metrics_addr: SocketAddr,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a policy file: every error, with file, line and column, and warnings about dead rules.
    Check {
        /// The policy file.
        file: PathBuf,
    },
}

/// Log fields as the default formatter writes them (`message key=value ...`), with control
/// characters escaped: container ids, paths and errors can come from a peer.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use switchboard::text::Printable;
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let value = format!("{value:?}");
        if field.name() == "message" {
            write!(writer, "{}", Printable(&value))
        } else {
            write!(writer, "{field}={}", Printable(&value))
        }
    })
    .delimited(" ")
}

/// `switchboard check`: every error and warning of the file, one per line; exit 2 on errors.
fn check(file: &std::path::Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(file).map_err(|error| PolicyError::Read {
        path: file.to_path_buf(),
        error,
    })?;
    let report = Policy::check(&text, &file.display().to_string());
    for warning in &report.warnings {
        eprintln!("switchboard: {warning}");
    }
    for error in &report.errors {
        eprintln!("switchboard: {error}");
    }
    Ok(match report.policy {
        Some(policy) => {
            println!("{}: ok, {} rules", file.display(), policy.rules.len());
            0
        }
        None => 2,
    })
}

fn main() -> ExitCode {
    let cli: Cli = switchboard_shared::docs::parse();
    tracing_subscriber::fmt()
        .fmt_fields(escaped_fields())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(tracing::Level::INFO)
        .init();
    let result = match cli.command {
        Command::Agent {
            socket,
            policy,
            metrics_addr,
            scrape_addr,
            log_format,
            allow_uid,
            socket_group,
            max_connections,
            series_ttl,
            no_sync_wakeup,
            max_series,
            record_dir,
            record_args,
            takeover,
            wait_after_takeover,
            child_fd,
        } => agent::run(AgentConfig {
            socket,
            policy,
            metrics_addr,
            scrape_addr,
            log_format: log_format.into(),
            allowed_uids: allow_uid,
            socket_group,
            max_connections,
            series_ttl: Duration::from_secs(series_ttl),
            sync_wakeup: !no_sync_wakeup,
            max_series,
            record_dir,
            record_args,
            takeover,
            wait_after_takeover,
            child_fd,
        })
        .map(|()| 0),
        Command::Record {
            diff: Some(paths), ..
        } => switchboard::record_run::diff(&paths[0], &paths[1]).map(|text| {
            print!("{text}");
            0
        }),
        Command::Record {
            output,
            default_errno,
            args,
            command,
            diff: None,
        } => switchboard::record_run::record(switchboard::record_run::RecordConfig {
            output: output.unwrap_or_default(),
            errno: default_errno,
            args,
            command,
        }),
        Command::Run {
            policy,
            agent,
            log_format,
            command,
        } => run::run(RunConfig {
            policy,
            agent,
            log_format: log_format.into(),
            command,
        }),
        Command::Status { metrics_addr, json } => Status::fetch(metrics_addr).map(|status| {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
            } else {
                print!("{}", status.to_text());
            }
            0
        }),
        Command::Check { file } => check(&file),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::from(
                if matches!(
                    e.downcast_ref(),
                    Some(switchboard::policy::PolicyError::Invalid { .. })
                ) {
                    2
                } else {
                    1
                },
            )
        }
    }
}
