//! Drop-in runtime mode against a fake runtime script: argument pass-through, injection on create/run, fail-closed.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SOCKET: &str = "/run/switchboard/test.sock";

/// A directory with a fake runtime (records argv, prints `{"fake":true}` on stdout) and a hook config naming it.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        let dir = tmpdir();
        let runtime = dir.path().join("fake-runc");
        fs::write(
            &runtime,
            "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > \"$(dirname \"$0\")/argv.txt\"\necho '{\"fake\":true}'\n",
        )
        .unwrap();
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o755)).unwrap();
        let fake = Fake { dir };
        fake.write_config(&format!(
            "runtime = {:?}\npolicy = {:?}\nsocket = {SOCKET:?}\n",
            runtime.display().to_string(),
            fixture("policy.yaml").display().to_string()
        ));
        fake
    }

    fn write_config(&self, text: &str) {
        fs::write(self.config(), text).unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("oci-hook.toml")
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("fake-runc")
    }

    fn argv(&self) -> Option<Vec<String>> {
        let text = fs::read_to_string(self.dir.path().join("argv.txt")).ok()?;
        Some(text.lines().map(str::to_string).collect())
    }

    fn run(&self, args: &[&str], cwd: &Path) -> RunOutput {
        run_cmd(
            Command::new(HOOK)
                .args(args)
                .current_dir(cwd)
                .env("SWITCHBOARD_OCI_HOOK_CONFIG", self.config()),
            Duration::from_secs(20),
        )
    }
}

fn bundle() -> tempfile::TempDir {
    let dir = tmpdir();
    fs::copy(fixture("config.json"), dir.path().join("config.json")).unwrap();
    dir
}

fn is_injected(bundle: &Path) -> bool {
    let config = read_json(&bundle.join("config.json"));
    config["linux"]["seccomp"]["listenerPath"] == SOCKET && config_record(&config)["version"] == 2
}

#[test]
fn create_injects_then_execs_with_the_same_arguments() {
    let fake = Fake::new();
    let b = bundle();
    let bundle_dir = b.path().to_str().unwrap();
    let args = [
        "--root",
        "/run/fake",
        "--log",
        "/dev/null",
        "--log-format",
        "json",
        "--systemd-cgroup",
        "create",
        "--bundle",
        bundle_dir,
        "--pid-file",
        "/run/fake.pid",
        "ctr-1",
    ];
    let out = fake.run(&args, Path::new("/"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout, "{\"fake\":true}\n",
        "only the real runtime writes stdout"
    );
    assert!(is_injected(b.path()));
    let mut expected = vec![fake.runtime().display().to_string()];
    expected.extend(args.iter().map(|a| a.to_string()));
    assert_eq!(
        fake.argv().unwrap(),
        expected,
        "argv[0] is the real runtime, the rest unchanged"
    );
}

#[test]
fn run_with_bundle_in_the_working_directory() {
    let fake = Fake::new();
    let b = bundle();
    let out = fake.run(&["run", "--detach", "ctr-2"], b.path());
    assert!(out.status.success(), "{out:?}");
    assert!(is_injected(b.path()));
    let b2 = bundle();
    let arg = format!("--bundle={}", b2.path().display());
    assert!(fake
        .run(&["run", &arg, "ctr-3"], Path::new("/"))
        .status
        .success());
    assert!(is_injected(b2.path()));
}

#[test]
fn other_commands_pass_straight_through() {
    let fake = Fake::new();
    let b = bundle();
    let before = fs::read(b.path().join("config.json")).unwrap();
    for args in [
        &["state", "ctr-1"][..],
        &["--root", "/run/fake", "start", "ctr-1"],
        &["kill", "ctr-1", "KILL"],
        &["delete", "--force", "ctr-1"],
        &["features"],
        &["--log-format=json", "--systemd-cgroup", "list"],
    ] {
        let out = fake.run(args, b.path());
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(out.stdout, "{\"fake\":true}\n", "{args:?}");
        assert_eq!(
            fake.argv().unwrap()[1..],
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>()[..]
        );
        assert!(out.stderr.is_empty(), "{args:?}: {out:?}");
    }
    assert_eq!(
        fs::read(b.path().join("config.json")).unwrap(),
        before,
        "no injection outside create/run"
    );
}

#[test]
fn failed_injection_does_not_start_the_container() {
    let fake = Fake::new();
    let b = tmpdir();
    let broken = b"{\"ociVersion\": ";
    fs::write(b.path().join("config.json"), broken).unwrap();
    let log = b.path().join("runtime-log.json");
    let out = fake.run(
        &[
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "create",
            "--bundle",
            b.path().to_str().unwrap(),
            "x",
        ],
        Path::new("/"),
    );
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("not valid JSON"), "{out:?}");
    assert!(fake.argv().is_none(), "the real runtime must not run");
    assert_eq!(fs::read(b.path().join("config.json")).unwrap(), broken);
    let line: Value = serde_json::from_str(fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"].as_str().unwrap().contains("not valid JSON"),
        "{line}"
    );

    // A policy naming a handover syscall fails closed too.
    fake.write_config(&format!(
        "runtime = {:?}\npolicy = {:?}\n",
        fake.runtime().display().to_string(),
        fixture("policy-write.yaml").display().to_string()
    ));
    let good = bundle();
    let out = fake.run(
        &["create", "--bundle", good.path().to_str().unwrap(), "y"],
        Path::new("/"),
    );
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("names write"), "{out:?}");
    assert!(fake.argv().is_none());
}

#[test]
fn bad_or_missing_config_fails_closed() {
    let fake = Fake::new();
    let b = bundle();
    fake.write_config("runtime = [\n");
    let out = fake.run(
        &["create", "--bundle", b.path().to_str().unwrap(), "x"],
        Path::new("/"),
    );
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("oci-hook.toml"), "{out:?}");
    fake.write_config("runtime = \"/bin/true\"\nsockett = \"/x\"\n");
    let out = fake.run(&["state", "x"], Path::new("/"));
    assert_eq!(out.code(), 1, "unknown keys are errors: {out:?}");
    assert!(out.stderr.contains("sockett"), "{out:?}");
    fs::remove_file(fake.config()).unwrap();
    let out = fake.run(&["state", "x"], Path::new("/"));
    assert_eq!(
        out.code(),
        1,
        "a config named by the environment must exist: {out:?}"
    );
}

#[test]
fn a_runtime_pointing_at_the_hook_itself_is_refused() {
    let fake = Fake::new();
    fake.write_config(&format!("runtime = {HOOK:?}\n"));
    let out = fake.run(&["state", "x"], Path::new("/"));
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr.contains("switchboard-oci-hook itself"),
        "{out:?}"
    );
}

#[test]
fn own_help_is_not_runtime_mode() {
    let out = hook(&["--help"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("inject") && out.stdout.contains("profile"),
        "{out:?}"
    );
}

#[test]
fn own_flags_help_and_typos_get_the_hooks_answers() {
    let fake = Fake::new();
    let b = bundle();
    for (args, success, stdout, stderr) in [
        (&["--version"][..], true, "switchboard-oci-hook ", ""),
        (&["-V"], true, "switchboard-oci-hook ", ""),
        (&["help", "inject"], true, "--bundle", ""),
        (
            &["injct", "--bundle", "."],
            false,
            "",
            "a similar subcommand exists: 'inject'",
        ),
        (
            &["--root", "/run/fake", "injct"],
            false,
            "",
            "unexpected argument '--root'",
        ),
        (&[], false, "", "Usage: switchboard-oci-hook"),
    ] {
        let out = fake.run(args, b.path());
        assert_eq!(out.status.success(), success, "{args:?}: {out:?}");
        assert!(out.stdout.contains(stdout), "{args:?}: {out:?}");
        assert!(out.stderr.contains(stderr), "{args:?}: {out:?}");
        assert!(
            !out.stdout.contains("fake"),
            "{args:?} reached the runtime: {out:?}"
        );
        assert!(fake.argv().is_none(), "{args:?} reached the runtime");
    }
}
