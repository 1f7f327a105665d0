//! Drop-in runtime mode: injects into the bundle on `create`/`run`, then execs the real OCI runtime with the same arguments.
//!
//! podman (`--runtime`), CRI-O (`runtime_path`) and containerd (runc `BinaryName`)
//! call this binary as they would call runc. Nothing is written to stdout here:
//! callers parse a runtime's stdout (`state`, `features`, `--version`). Errors go
//! to stderr and to the runtime log (`--log`), and a failed injection stops the
//! container from starting.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::bundle;
use crate::settings::{self, Settings};

/// The configuration file of runtime mode.
pub const DEFAULT_CONFIG: &str = "/etc/switchboard/oci-hook.toml";
/// Overrides [`DEFAULT_CONFIG`] (for a wrapper script; podman passes no environment to runtimes).
pub const CONFIG_ENV: &str = "SWITCHBOARD_OCI_HOOK_CONFIG";
/// The real runtime when the configuration names none.
pub const DEFAULT_RUNTIME: &str = "/usr/bin/runc";
/// Where Debian and Ubuntu install runc, tried when [`DEFAULT_RUNTIME`] is absent.
const DEBIAN_RUNC: &str = "/usr/sbin/runc";

/// `oci-hook.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The real runtime's path.
    pub runtime: Option<PathBuf>,
    /// The agent's policy file.
    pub policy: Option<PathBuf>,
    /// The agent's socket.
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub log_default_denied: bool,
    #[serde(default)]
    pub force: bool,
    /// Make every syscall the agent can be told of NOTIFY, for `switchboard agent --record-dir`.
    #[serde(default)]
    pub record: bool,
}

impl FileConfig {
    /// Reads the file named by [`CONFIG_ENV`] (which must exist), else [`DEFAULT_CONFIG`] if present.
    pub fn load() -> anyhow::Result<FileConfig> {
        let (path, required) = match std::env::var_os(CONFIG_ENV) {
            Some(path) if !path.is_empty() => (PathBuf::from(path), true),
            _ => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(FileConfig::default())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid configuration", path.display()))
    }

    /// The real runtime to exec.
    pub fn runtime(&self) -> PathBuf {
        match &self.runtime {
            Some(runtime) => runtime.clone(),
            None if !Path::new(DEFAULT_RUNTIME).exists() && Path::new(DEBIAN_RUNC).exists() => {
                PathBuf::from(DEBIAN_RUNC)
            }
            None => PathBuf::from(DEFAULT_RUNTIME),
        }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            policy: self.policy.clone(),
            socket: self.socket.clone(),
            force: self.force,
            log_default_denied: self.log_default_denied,
            record: self.record,
        }
    }
}

/// Global options of runc and crun that take a value as the next argument.
const GLOBAL_VALUE_FLAGS: [&str; 7] = [
    "--root",
    "--log",
    "--log-format",
    "--criu",
    "--rootless",
    "--cgroup-manager",
    "--log-level",
];

/// Options of `create`/`run` that take a value as the next argument.
const CREATE_VALUE_FLAGS: [&str; 4] = [
    "--console-socket",
    "--pid-file",
    "--preserve-fds",
    "--notify-socket",
];

/// What the runtime was asked to do, as far as the hook cares.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    /// `create` or `run`; None for every other command.
    pub command: Option<String>,
    /// The bundle of `create`/`run` (the working directory by default).
    pub bundle: PathBuf,
    /// `--log` and `--log-format`, to report errors where the caller reads them.
    pub log: Option<PathBuf>,
    pub log_json: bool,
}

/// `--flag=value` or `--flag value`: the value, and how many arguments it took.
fn flag_value<'a>(args: &'a [OsString], i: usize, flag: &str) -> Option<(&'a OsStr, usize)> {
    let arg = args[i].to_str()?;
    if arg == flag {
        return args.get(i + 1).map(|v| (v.as_os_str(), 2));
    }
    let rest = arg.strip_prefix(flag)?.strip_prefix('=')?;
    Some((OsStr::new(rest), 1))
}

/// Finds the command among runtime arguments (without argv[0]) and, for
/// `create`/`run`, the bundle.
pub fn parse_invocation(args: &[OsString]) -> anyhow::Result<Invocation> {
    let mut invocation = Invocation {
        bundle: PathBuf::from("."),
        ..Invocation::default()
    };
    let mut i = 0;
    let command_at = loop {
        let Some(arg) = args.get(i) else {
            return Ok(invocation);
        };
        if let Some((flag, (value, taken))) = GLOBAL_VALUE_FLAGS
            .iter()
            .find_map(|flag| flag_value(args, i, flag).map(|v| (*flag, v)))
        {
            match flag {
                "--log" => invocation.log = Some(PathBuf::from(value)),
                "--log-format" => invocation.log_json = value == "json",
                _ => {}
            }
            i += taken;
            continue;
        }
        if arg.to_str().is_some_and(|a| a.starts_with('-')) {
            i += 1;
            continue;
        }
        break i;
    };
    let command = args[command_at].to_string_lossy().into_owned();
    if command != "create" && command != "run" {
        return Ok(invocation);
    }
    invocation.command = Some(command);
    let mut i = command_at + 1;
    while i < args.len() {
        if let Some((value, taken)) =
            flag_value(args, i, "--bundle").or_else(|| flag_value(args, i, "-b"))
        {
            invocation.bundle = PathBuf::from(value);
            i += taken;
            continue;
        }
        let arg = args[i].to_string_lossy();
        if arg == "--config" || arg.starts_with("--config=") || arg == "-f" {
            bail!("{arg}: a config file other than the bundle's config.json is not supported; the policy could not be injected");
        }
        if let Some(short) = arg
            .strip_prefix("-b")
            .filter(|rest| !rest.is_empty() && !arg.starts_with("--"))
        {
            invocation.bundle = PathBuf::from(short);
        } else if let Some((_, taken)) = CREATE_VALUE_FLAGS
            .iter()
            .find_map(|flag| flag_value(args, i, flag))
        {
            i += taken;
            continue;
        }
        i += 1;
    }
    Ok(invocation)
}

/// Runtime mode: never returns on success (the real runtime replaces this process).
pub fn run(args: Vec<OsString>) -> i32 {
    let rest = &args[1..];
    let invocation = match parse_invocation(rest) {
        Ok(invocation) => invocation,
        Err(e) => return fail(&Invocation::default(), &e),
    };
    match prepare(&invocation) {
        Ok(runtime) => {
            let error = std::process::Command::new(&runtime).args(rest).exec();
            fail(
                &invocation,
                &anyhow::Error::new(error)
                    .context(format!("executing the real runtime {}", runtime.display())),
            )
        }
        Err(e) => fail(&invocation, &e),
    }
}

/// Reads the configuration and, for `create`/`run`, injects into the bundle; returns the real runtime.
fn prepare(invocation: &Invocation) -> anyhow::Result<PathBuf> {
    let config = FileConfig::load()?;
    let runtime = config.runtime();
    if let (Ok(real), Ok(me)) = (std::fs::canonicalize(&runtime), std::env::current_exe()) {
        if std::fs::canonicalize(me).is_ok_and(|me| me == real) {
            bail!(
                "the configured runtime {} is switchboard-oci-hook itself; set `runtime` to the real OCI runtime (such as /usr/sbin/runc)",
                runtime.display()
            );
        }
    }
    if let Some(command) = &invocation.command {
        let options = config.settings().merge_options()?;
        let injected = bundle::inject(&invocation.bundle, &options).with_context(|| {
            format!(
                "{command}: injecting the seccomp policy into bundle {}",
                invocation.bundle.display()
            )
        })?;
        settings::warn_all(&injected.warnings);
    }
    Ok(runtime)
}

/// Reports an error to stderr and the runtime log; returns the exit code.
fn fail(invocation: &Invocation, error: &anyhow::Error) -> i32 {
    let message = format!("switchboard-oci-hook: {error:#}");
    eprintln!("{message}");
    if let Some(log) = &invocation.log {
        let line = if invocation.log_json {
            serde_json::json!({"level": "error", "msg": message, "time": switchboard_shared::rfc3339_seconds(SystemTime::now())}).to_string()
        } else {
            format!(
                "time=\"{}\" level=error msg={:?}",
                switchboard_shared::rfc3339_seconds(SystemTime::now()),
                message
            )
        };
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(file, "{line}");
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Invocation {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse_invocation(&args).unwrap()
    }

    #[test]
    fn finds_create_and_bundle_after_global_flags() {
        let i = parse(&[
            "--root",
            "/run/runc",
            "--log",
            "/l.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "id",
        ]);
        assert_eq!(i.command.as_deref(), Some("create"));
        assert_eq!(i.bundle, PathBuf::from("/b"));
        assert_eq!(i.log, Some(PathBuf::from("/l.json")));
        assert!(i.log_json);
        assert_eq!(
            parse(&["--root=/r", "run", "-b", "/x", "id"]).bundle,
            PathBuf::from("/x")
        );
        assert_eq!(
            parse(&["create", "--bundle=/y", "id"]).bundle,
            PathBuf::from("/y")
        );
        assert_eq!(parse(&["create", "-b/z", "id"]).bundle, PathBuf::from("/z"));
        assert_eq!(parse(&["create", "id"]).bundle, PathBuf::from("."));
        // A value that looks like a command is still a value.
        assert_eq!(parse(&["--root", "create", "state", "id"]).command, None);
    }

    #[test]
    fn other_commands_pass_through() {
        for args in [
            &["state", "id"][..],
            &["--version"],
            &["delete", "--force", "id"],
            &["features"],
        ] {
            assert_eq!(parse(args).command, None, "{args:?}");
        }
        let args: Vec<OsString> = ["create", "--config", "x.json", "id"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(parse_invocation(&args).is_err());
    }

    #[test]
    fn time_is_rfc3339() {
        let t = switchboard_shared::rfc3339_seconds(SystemTime::now());
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
