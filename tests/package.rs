//! The Debian package as a user gets it: contents and control data, the installed binaries, man pages and completion, the systemd unit verified and its ExecStart line serving a runc container.
//!
//! The .deb is the one `scripts/build-deb.sh` wrote (scripts/test.sh builds it before the
//! tests); without it these tests print SKIP, and under CI=true they fail. Each test
//! extracts it into a scratch root (`dpkg-deb -x`, as dpkg would unpack it; no
//! maintainer script runs). The ExecStart test needs root.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const UNIT: &str = "usr/lib/systemd/system/switchboard.service";
const TIMEOUT: Duration = Duration::from_secs(20);

/// The .deb of this version, or None (after a SKIP line; a panic under CI=true) when it
/// or one of `tools` is missing.
fn deb(test: &str, tools: &[&str]) -> Option<PathBuf> {
    if !tools.iter().all(|tool| require_tool(tool)) {
        return None;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let prefix = format!("switchboard_{VERSION}-1_");
    let found = fs::read_dir(target.join("debian"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".deb")
        });
    if found.is_none() {
        assert!(
            !switchboard_test_support::under_ci(),
            "{test}: no {prefix}*.deb in {}; scripts/test.sh builds it with scripts/build-deb.sh",
            target.join("debian").display()
        );
        eprintln!("SKIP {test}: no .deb (scripts/build-deb.sh builds it)");
    }
    found
}

/// Runs `cmd`, asserting success; its stdout.
fn output(cmd: &mut Command) -> String {
    let out = run_cmd(cmd, TIMEOUT);
    assert!(out.status.success() && !out.timed_out, "{cmd:?}: {out:?}");
    out.stdout
}

/// The package unpacked into a fresh directory.
fn unpacked(deb: &Path) -> tempfile::TempDir {
    let root = tmpdir();
    output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
    root
}

/// The subcommands `bin --help` lists (clap's own `help` aside).
fn subcommands(bin: &Path) -> Vec<String> {
    let help = output(Command::new(bin).arg("--help"));
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// One man page per command and subcommand of both binaries, as installed.
fn expected_man_pages(root: &Path) -> BTreeSet<String> {
    let mut pages = BTreeSet::new();
    for bin in ["switchboard", "switchboard-oci-hook"] {
        pages.insert(format!("{bin}.1.gz"));
        let subs = subcommands(&root.join("usr/bin").join(bin));
        assert!(subs.len() >= 2, "{bin}: {subs:?}");
        for sub in subs {
            pages.insert(format!("{bin}-{sub}.1.gz"));
        }
    }
    pages
}

#[test]
fn deb_holds_binaries_conffiles_unit_docs_and_license() {
    let Some(deb) = deb(
        "deb_holds_binaries_conffiles_unit_docs_and_license",
        &["dpkg-deb"],
    ) else {
        return;
    };
    let listing = output(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files: BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter_map(|p| p.strip_prefix("./"))
        .collect();
    for want in [
        "usr/bin/switchboard",
        "usr/bin/switchboard-oci-hook",
        "etc/switchboard/policy.yaml",
        "etc/switchboard/oci-hook.toml",
        UNIT,
        "usr/share/doc/switchboard/copyright",
        "usr/share/doc/switchboard/CHANGELOG.md",
        "usr/share/doc/switchboard/examples/default.yaml",
        "usr/share/doc/switchboard/examples/deny-mkdir.yaml",
        "usr/share/bash-completion/completions/switchboard",
        "usr/share/bash-completion/completions/switchboard-oci-hook",
        "usr/share/zsh/vendor-completions/_switchboard",
        "usr/share/fish/vendor_completions.d/switchboard.fish",
    ] {
        assert!(
            files.contains(want),
            "{want} missing from the .deb:\n{listing}"
        );
    }
    let root = unpacked(&deb);
    let pages: BTreeSet<String> = files
        .iter()
        .filter_map(|p| p.strip_prefix("usr/share/man/man1/"))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(pages, expected_man_pages(root.path()));

    let control = output(Command::new("dpkg-deb").arg("-f").arg(&deb));
    for want in [
        "Package: switchboard\n".to_string(),
        format!("Version: {VERSION}-1\n"),
        "Section: admin\n".to_string(),
    ] {
        assert!(control.contains(&want), "{want:?} not in\n{control}");
    }
    let depends = control
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends:\n{control}"));
    assert!(
        depends.contains("libseccomp2") && depends.contains("libc6"),
        "{depends}"
    );
    let conffiles = output(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .arg("conffiles"),
    );
    let conffiles: BTreeSet<&str> = conffiles.lines().collect();
    assert_eq!(
        conffiles,
        BTreeSet::from([
            "/etc/switchboard/oci-hook.toml",
            "/etc/switchboard/policy.yaml"
        ])
    );
    // The conffile is the policy the agent embeds; the license is Apache-2.0's text.
    assert_eq!(
        fs::read(root.path().join("etc/switchboard/policy.yaml")).unwrap(),
        fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/default.yaml")).unwrap()
    );
    let copyright =
        fs::read_to_string(root.path().join("usr/share/doc/switchboard/copyright")).unwrap();
    assert!(
        copyright.contains("Apache License") && copyright.contains("Version 2.0, January 2004"),
        "{copyright}"
    );
}

#[test]
fn installed_binaries_check_the_policy_and_name_their_commit() {
    let Some(deb) = deb(
        "installed_binaries_check_the_policy_and_name_their_commit",
        &["dpkg-deb"],
    ) else {
        return;
    };
    let root = unpacked(&deb);
    let bin = root.path().join("usr/bin");
    let policy = root.path().join("etc/switchboard/policy.yaml");
    let checked = output(
        Command::new(bin.join("switchboard"))
            .arg("check")
            .arg(&policy),
    );
    assert!(checked.contains(": ok, "), "{checked}");

    // Built from this checkout, the version names its commit (scripts/build-deb.sh is
    // run on the tree under test); outside a git checkout build.rs says "unknown".
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_string(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        });
    for (name, flag) in [
        ("switchboard", "--version"),
        ("switchboard-oci-hook", "--version"),
    ] {
        let version = output(Command::new(bin.join(name)).arg(flag));
        assert_eq!(
            version,
            format!("{name} {VERSION} (commit {commit})\n"),
            "a .deb built from another commit is stale: scripts/build-deb.sh rebuilds it"
        );
    }
}

#[test]
fn man_pages_render() {
    let Some(deb) = deb("man_pages_render", &["man"]) else {
        return;
    };
    let root = unpacked(&deb);
    let pages = expected_man_pages(root.path());
    for page in &pages {
        let path = root.path().join("usr/share/man/man1").join(page);
        let out = run_cmd(
            Command::new("man")
                .arg("-l")
                .arg(&path)
                .env("MANWIDTH", "80")
                .env("MANPAGER", "cat"),
            TIMEOUT,
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {out:?}"
        );
        // The NAME section names the page's command (clap_mangen writes `a-b` for `a b`).
        let name = page.trim_end_matches(".1.gz");
        let section = out.stdout.split("NAME").nth(1).unwrap_or_default();
        assert!(
            section.trim_start().starts_with(name) && out.stdout.contains("SYNOPSIS"),
            "{page}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn bash_completes_ag_to_agent() {
    let Some(deb) = deb("bash_completes_ag_to_agent", &["dpkg-deb"]) else {
        return;
    };
    let root = unpacked(&deb);
    let script = root
        .path()
        .join("usr/share/bash-completion/completions/switchboard");
    // What bash-completion does on TAB after `switchboard ag`: sources the file, then
    // calls the function `complete -p` registered with (command, word, previous word).
    let complete = r#"source "$1"
        read -r -a spec <<<"$(complete -p switchboard)"
        COMP_WORDS=(switchboard ag); COMP_CWORD=1; COMP_LINE="switchboard ag"; COMP_POINT=14
        "${spec[-2]}" switchboard ag switchboard
        printf '%s\n' "${COMPREPLY[@]}""#;
    let out = output(
        Command::new("bash")
            .args(["--norc", "-c", complete, "bash"])
            .arg(&script),
    );
    assert_eq!(out, "agent\n");
}

#[test]
fn unit_verifies() {
    let Some(deb) = deb("unit_verifies", &["systemd-analyze"]) else {
        return;
    };
    let root = unpacked(&deb);
    // verify loads the unit as systemd would and checks every directive and value, that
    // each Exec command exists and is executable, and (--man) that the man page of
    // Documentation= is there. It needs no running systemd. The unit names
    // /usr/bin/switchboard, which only an installed package puts there, so the copy
    // verified names the unpacked binary; MANPATH points man at the unpacked pages.
    let unit = fs::read_to_string(root.path().join(UNIT)).unwrap();
    let installed = root.path().join("usr/bin/switchboard");
    assert!(unit.contains("ExecStart=/usr/bin/switchboard agent "));
    let dir = tmpdir();
    let copy = dir.path().join("switchboard.service");
    fs::write(
        &copy,
        unit.replace("/usr/bin/switchboard", installed.to_str().unwrap()),
    )
    .unwrap();
    let out = run_cmd(
        Command::new("systemd-analyze")
            .args(["verify", "--man=yes"])
            .arg(&copy)
            .env("MANPATH", root.path().join("usr/share/man")),
        TIMEOUT,
    );
    // An unknown key or a bad value is only a warning (exit 0): none is allowed.
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "{out:?}"
    );
    for want in [
        "Type=notify",
        "Restart=always",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RuntimeDirectory=switchboard",
        "CapabilityBoundingSet=CAP_KILL CAP_DAC_OVERRIDE",
    ] {
        assert!(unit.lines().any(|l| l == want), "{want} not in the unit");
    }
}

/// Copies the shared libraries `bin` (inside `root`) loads, and the loader, into `root`.
fn copy_libraries(root: &Path, bin: &str) {
    let ldd = output(Command::new("ldd").arg(root.join(bin)));
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(lib, &dest).unwrap();
    }
}

/// The unit's ExecStart, as written, in the unpacked package (chroot) with a network of
/// its own (the default metrics port stays free): it reports READY=1 on NOTIFY_SOCKET
/// only once its socket takes connections, then serves a runc container.
#[test]
fn unit_exec_start_notifies_ready_and_serves_runc() {
    let test = "unit_exec_start_notifies_ready_and_serves_runc";
    if !require_root(test) {
        return;
    }
    let Some(deb) = deb(test, &["runc", "unshare", "ip", "chroot"]) else {
        return;
    };
    let root = unpacked(&deb);
    let r = root.path();
    let unit = fs::read_to_string(r.join(UNIT)).unwrap();
    let exec: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .split_whitespace()
        .collect();
    let socket_in_root = exec
        .iter()
        .position(|a| *a == "--socket")
        .map(|i| exec[i + 1])
        .expect("--socket in ExecStart");
    let socket = r.join(socket_in_root.trim_start_matches('/'));
    copy_libraries(r, exec[0].trim_start_matches('/'));
    for dir in ["proc", "run"] {
        fs::create_dir_all(r.join(dir)).unwrap();
    }
    let notify = UnixDatagram::bind(r.join("run/notify.sock")).unwrap();
    notify.set_read_timeout(Some(TIMEOUT)).unwrap();

    // unshare's private mount namespace keeps the proc mount out of the host's; its
    // child gets SIGTERM when unshare is killed.
    let [ip, mount, chroot] = ["ip", "mount", "chroot"].map(switchboard_test_support::tool);
    let script = format!(
        "{ip} link set lo up && {mount} -t proc proc {root}/proc && exec {chroot} {root} \"$@\"",
        ip = ip.display(),
        mount = mount.display(),
        chroot = chroot.display(),
        root = r.display()
    );
    let mut agent = spawn_piped(
        Command::new("unshare")
            .args(["--mount", "--net", "--fork", "--kill-child=TERM", "--"])
            .args(["sh", "-c", &script, "sh"])
            .args(&exec)
            .env("NOTIFY_SOCKET", "/run/notify.sock"),
    );
    let stdout = read_in_background(agent.stdout.take().unwrap());
    let stderr = read_in_background(agent.stderr.take().unwrap());

    let mut buf = [0u8; 4096];
    let ready = loop {
        match notify.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.lines().any(|l| l == "READY=1") {
                    break Ok(message);
                }
            }
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = ready {
        let _ = agent.kill();
        panic!("no READY=1: {e}\n{}", collect_output(stderr));
    }
    assert!(
        UnixStream::connect(&socket).is_ok(),
        "READY=1 came before {} took connections",
        socket.display()
    );

    let bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"]);
    output(
        Command::new(r.join("usr/bin/switchboard-oci-hook"))
            .args(["inject", "--bundle"])
            .arg(bundle.path())
            .arg("--policy")
            .arg(r.join("etc/switchboard/policy.yaml"))
            .arg("--socket")
            .arg(&socket),
    );
    let id = unique_id("deb");
    let out = run_runc(&bundle, &id, TIMEOUT);
    assert!(out.stdout.contains("mkdir=0"), "{out:?}");

    let _ = agent.kill();
    let status = wait_timeout(&mut agent, TIMEOUT);
    let events = collect_output(stdout);
    let log = collect_output(stderr);
    assert!(status.is_some(), "the agent did not stop\n{log}");
    let served = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|e| {
            e["event"] == "syscall"
                && e["container_id"] == id.as_str()
                && (e["syscall"] == "mkdir" || e["syscall"] == "mkdirat")
        });
    assert!(served, "no mkdir event of {id}\n{events}\n{log}");
}
