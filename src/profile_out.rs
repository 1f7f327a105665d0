//! A recording as a seccomp profile in the runtimes' JSON format, read back for merging, and compared for review.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

use crate::handover::{RUNTIME_AFTER_LOAD, RUNTIME_HANDOVER};
use crate::recording::{ArgValues, Recording};
use crate::syscalls;

const ALLOW: &str = "SCMP_ACT_ALLOW";

/// The names of the rule every recorded profile ends with.
pub fn runtime_rule() -> BTreeSet<&'static str> {
    RUNTIME_HANDOVER
        .iter()
        .chain(&RUNTIME_AFTER_LOAD)
        .map(|(n, _)| *n)
        .collect()
}

/// A profile's name for arch table `arch` (`SCMP_ARCH_X86_64`).
pub fn arch_name(arch: usize) -> String {
    let name = syscalls::arches().get(arch).map_or("native", |a| a.name);
    format!("SCMP_ARCH_{}", name.to_ascii_uppercase())
}

/// The smallest profile that runs what was recorded: everything else fails with `errno`.
/// Rules: the syscalls seen, allowed by name; those kept with argument values, one rule per
/// value; last, on their own, the syscalls a runtime makes after loading the filter: the
/// handover ones no listener is told of, and those a plain process's recording cannot see
/// (see `switchboard_shared::handover`).
pub fn to_profile(recording: &Recording, errno: u32) -> Value {
    let handover = runtime_rule();
    let by_name: Vec<&str> = recording
        .syscalls
        .keys()
        .map(String::as_str)
        .filter(|n| !recording.args.contains_key(*n) && !handover.contains(n))
        .collect();
    let mut rules = Vec::new();
    if !by_name.is_empty() {
        rules.push(json!({"names": by_name, "action": ALLOW}));
    }
    for (name, values) in &recording.args {
        for value in &values.values {
            rules.push(json!({
                "names": [name],
                "action": ALLOW,
                "args": [{"index": values.index, "value": value, "op": "SCMP_CMP_EQ"}]
            }));
        }
    }
    rules.push(json!({"names": handover, "action": ALLOW}));
    let mut arches: Vec<String> = recording.arches.iter().cloned().collect();
    if arches.is_empty() {
        arches.push(arch_name(0));
    }
    // Native first, as profiles list it.
    arches.sort_by_key(|a| *a != arch_name(0));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno,
        "architectures": arches,
        "syscalls": rules,
    })
}

/// What a profile allows, as a recording: names an allow rule lists without conditions, and
/// the values of one-argument `SCMP_CMP_EQ` conditions, the runtime rule included (so a diff
/// against a profile written elsewhere compares all it allows). Allow rules of any other
/// shape count as allowing the name.
pub fn from_profile(profile: &Value) -> anyhow::Result<Recording> {
    let mut out = Recording {
        arches: profile
            .get("architectures")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        ..Recording::default()
    };
    let rules = match profile.get("syscalls") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(rules)) => rules,
        Some(other) => anyhow::bail!("syscalls: expected a list, found {other}"),
    };
    for (i, rule) in rules.iter().enumerate() {
        if rule.get("action").and_then(Value::as_str) != Some(ALLOW) {
            continue;
        }
        let names: Vec<&str> = rule
            .get("names")
            .and_then(Value::as_array)
            .with_context(|| format!("syscalls[{i}] has no names"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let args = rule.get("args").and_then(Value::as_array);
        let condition = match args.map(Vec::as_slice) {
            None | Some([]) => None,
            Some([arg]) if arg.get("op").and_then(Value::as_str) == Some("SCMP_CMP_EQ") => {
                match (
                    arg.get("index").and_then(Value::as_u64),
                    arg.get("value").and_then(Value::as_u64),
                ) {
                    (Some(index), Some(value)) => {
                        Some((u32::try_from(index).unwrap_or(u32::MAX), value))
                    }
                    _ => None,
                }
            }
            Some(_) => None,
        };
        for name in names {
            let mut one = Recording::default();
            one.syscalls.insert(name.to_string(), 0);
            if let Some((index, value)) = condition {
                one.args.insert(
                    name.to_string(),
                    ArgValues {
                        index,
                        values: [value].into(),
                    },
                );
            }
            out.merge(one);
        }
    }
    Ok(out)
}

/// Reads a profile file as a recording.
pub fn read(path: &Path) -> anyhow::Result<Recording> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    from_profile(&value).with_context(|| path.display().to_string())
}

/// Writes `recording`'s profile to `path`, replacing the file in one rename, so a reader sees
/// the old profile or the new one, never a part.
pub fn write(path: &Path, recording: &Recording, errno: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text =
        serde_json::to_vec_pretty(&to_profile(recording, errno)).context("encoding the profile")?;
    text.push(b'\n');
    let file_name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(&text)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, path)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// Writes `recording` merged with what `path` already allows (an earlier recording of the
/// same container); returns the union written.
pub fn write_merged(path: &Path, recording: Recording, errno: u32) -> anyhow::Result<Recording> {
    let mut merged = match path.try_exists() {
        Ok(true) => read(path)?,
        _ => Recording::default(),
    };
    merged.merge(recording);
    write(path, &merged, errno)?;
    Ok(merged)
}

/// One line per allowed thing: the syscall, or the syscall with one argument value.
fn allowed(recording: &Recording) -> BTreeSet<String> {
    recording
        .syscalls
        .keys()
        .flat_map(|name| match recording.args.get(name) {
            None => vec![name.clone()],
            Some(a) => a
                .values
                .iter()
                .map(|v| format!("{name} (arg{} == {v:#x})", a.index))
                .collect(),
        })
        .collect()
}

/// What `new` adds (`+`) to and removes (`-`) from `old`, one line each, for a pull request.
pub fn diff(old: &Recording, new: &Recording) -> String {
    let (old_lines, new_lines) = (allowed(old), allowed(new));
    let mut out = String::new();
    for arch in new.arches.difference(&old.arches) {
        let _ = writeln!(out, "+ architecture {arch}");
    }
    for arch in old.arches.difference(&new.arches) {
        let _ = writeln!(out, "- architecture {arch}");
    }
    for line in new_lines.difference(&old_lines) {
        let _ = writeln!(out, "+ {line}");
    }
    for line in old_lines.difference(&new_lines) {
        let _ = writeln!(out, "- {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Recording {
        let mut r = Recording::default();
        r.arches.insert(arch_name(0));
        r.syscalls.insert("getppid".into(), 3);
        r.syscalls.insert("uname".into(), 1);
        r.syscalls.insert("personality".into(), 1);
        r.args.insert(
            "personality".into(),
            ArgValues {
                index: 0,
                values: [0].into(),
            },
        );
        r
    }

    #[test]
    fn profile_shape_and_read_back() {
        let profile = to_profile(&sample(), 1);
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], 1);
        let rules = profile["syscalls"].as_array().unwrap();
        assert_eq!(
            rules[0],
            json!({"names": ["getppid", "uname"], "action": ALLOW})
        );
        assert_eq!(
            rules[1]["args"],
            json!([{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}])
        );
        let handover = rules.last().unwrap()["names"].as_array().unwrap();
        assert_eq!(handover.len(), runtime_rule().len());
        let mut back = from_profile(&profile).unwrap();
        back.syscalls
            .retain(|name, _| !runtime_rule().contains(name.as_str()));
        for count in back.syscalls.values_mut() {
            *count = 0;
        }
        let mut expected = sample();
        for count in expected.syscalls.values_mut() {
            *count = 0;
        }
        assert_eq!(back, expected);
    }

    #[test]
    fn diff_lists_additions_and_removals() {
        let old = sample();
        let mut new = sample();
        new.syscalls.remove("uname");
        new.syscalls.insert("mkdir".into(), 1);
        new.args.get_mut("personality").unwrap().values.insert(8);
        assert_eq!(
            diff(&old, &new),
            "+ mkdir\n+ personality (arg0 == 0x8)\n- uname\n"
        );
    }

    #[test]
    fn write_merged_is_the_union() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns/pod/c.json");
        write_merged(&path, sample(), 1).unwrap();
        let mut more = Recording::default();
        more.syscalls.insert("mkdir".into(), 1);
        let merged = write_merged(&path, more, 1).unwrap();
        let on_disk = read(&path).unwrap();
        let recorded: Vec<&String> = on_disk
            .syscalls
            .keys()
            .filter(|n| !runtime_rule().contains(n.as_str()))
            .collect();
        assert_eq!(recorded, ["getppid", "mkdir", "personality", "uname"]);
        assert!(on_disk.syscalls.contains_key("futex"));
        assert_eq!(on_disk.args, merged.args);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
