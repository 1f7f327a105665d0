//! Architectures of a seccomp profile and libseccomp's syscall tables for them.

use std::str::FromStr;

use libseccomp::{ScmpAction, ScmpArch, ScmpFilterContext, ScmpSyscall};
use serde_json::Value;
use switchboard_shared::{bpf, syscalls};

/// One architecture a profile filters, as libseccomp knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    pub scmp: ScmpArch,
    /// The profile's spelling, e.g. "SCMP_ARCH_X86_64".
    pub name: &'static str,
}

const NAMES: [(&str, ScmpArch); 24] = [
    ("SCMP_ARCH_X86_64", ScmpArch::X8664),
    ("SCMP_ARCH_X86", ScmpArch::X86),
    ("SCMP_ARCH_X32", ScmpArch::X32),
    ("SCMP_ARCH_AARCH64", ScmpArch::Aarch64),
    ("SCMP_ARCH_ARM", ScmpArch::Arm),
    ("SCMP_ARCH_LOONGARCH64", ScmpArch::Loongarch64),
    ("SCMP_ARCH_M68K", ScmpArch::M68k),
    ("SCMP_ARCH_MIPS", ScmpArch::Mips),
    ("SCMP_ARCH_MIPS64", ScmpArch::Mips64),
    ("SCMP_ARCH_MIPS64N32", ScmpArch::Mips64N32),
    ("SCMP_ARCH_MIPSEL", ScmpArch::Mipsel),
    ("SCMP_ARCH_MIPSEL64", ScmpArch::Mipsel64),
    ("SCMP_ARCH_MIPSEL64N32", ScmpArch::Mipsel64N32),
    ("SCMP_ARCH_PPC", ScmpArch::Ppc),
    ("SCMP_ARCH_PPC64", ScmpArch::Ppc64),
    ("SCMP_ARCH_PPC64LE", ScmpArch::Ppc64Le),
    ("SCMP_ARCH_S390", ScmpArch::S390),
    ("SCMP_ARCH_S390X", ScmpArch::S390X),
    ("SCMP_ARCH_PARISC", ScmpArch::Parisc),
    ("SCMP_ARCH_PARISC64", ScmpArch::Parisc64),
    ("SCMP_ARCH_RISCV64", ScmpArch::Riscv64),
    ("SCMP_ARCH_SHEB", ScmpArch::Sheb),
    ("SCMP_ARCH_SH", ScmpArch::Sh),
    ("SCMP_ARCH_NATIVE", ScmpArch::Native),
];

impl Arch {
    /// Looks up a profile's architecture name ("SCMP_ARCH_X86_64").
    pub fn parse(name: &str) -> Option<Arch> {
        let scmp = ScmpArch::from_str(name).ok()?;
        let scmp = if scmp == ScmpArch::Native {
            ScmpArch::native()
        } else {
            scmp
        };
        NAMES
            .iter()
            .find(|(_, a)| *a == scmp)
            .map(|(name, scmp)| Arch { scmp: *scmp, name })
    }

    /// Whether the filter libseccomp builds for this arch makes `syscall` NOTIFY when a
    /// profile names it, read from the exported program: on x86 the socket and SysV IPC
    /// calls have pseudo-numbers yet are flagged, both by their own number and through
    /// `socketcall`/`ipc`; a syscall the arch lacks is not flagged at all.
    pub fn flags(self, syscall: &str) -> bool {
        let flagged = || -> Option<bool> {
            let native = ScmpArch::native();
            let mut filter = ScmpFilterContext::new(ScmpAction::Allow).ok()?;
            filter.add_arch(self.scmp).ok()?;
            if self.scmp != native {
                filter.remove_arch(native).ok()?;
            }
            // As runc resolves a name: by the native table, libseccomp maps it per arch.
            let nr = ScmpSyscall::from_name(syscall).ok()?;
            filter.add_rule(ScmpAction::Notify, nr).ok()?;
            let program = switchboard_shared::record::export(&filter).ok()?;
            Some(program.iter().any(|insn| {
                insn.returns()
                    .is_some_and(|ret| ret & bpf::RET_ACTION == bpf::RET_USER_NOTIF)
            }))
        };
        flagged().unwrap_or(false)
    }

    /// Every syscall name in libseccomp's table for this arch (numbers 0 to 1023).
    pub fn syscall_names(self) -> Vec<String> {
        (0..syscalls::MAX_NR)
            .filter_map(|nr| syscalls::name_by_arch(self.scmp, nr))
            .collect()
    }
}

/// The host's architecture family as a profile spells it, native first
/// (what a profile written from scratch lists in `architectures`).
pub fn native_family() -> Vec<Arch> {
    syscalls::arches()
        .iter()
        .filter_map(|a| NAMES.iter().find(|(_, s)| *s == a.scmp))
        .map(|(name, scmp)| Arch { scmp: *scmp, name })
        .collect()
}

/// The native architecture as Go spells it (`includes.arches` in Docker-format profiles).
pub fn native_go_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else if cfg!(target_arch = "x86") {
        "386"
    } else if cfg!(target_arch = "arm") {
        "arm"
    } else if cfg!(target_arch = "s390x") {
        "s390x"
    } else if cfg!(target_arch = "powerpc64") {
        if cfg!(target_endian = "little") {
            "ppc64le"
        } else {
            "ppc64"
        }
    } else if cfg!(target_arch = "riscv64") {
        "riscv64"
    } else if cfg!(target_arch = "loongarch64") {
        "loong64"
    } else {
        std::env::consts::ARCH
    }
}

/// The architectures a profile lists, as the engine hands them to the runtime.
///
/// `architectures` lists them outright. A Docker-format `archMap` is read the way
/// the engines read it: only the entry for the native arch counts, with its
/// `subArchitectures`. Names libseccomp does not know go to `unknown`.
pub fn listed_arches(profile: &Value, unknown: &mut Vec<String>) -> Vec<Arch> {
    let mut arches = Vec::new();
    let mut push = |name: &str, arches: &mut Vec<Arch>| match Arch::parse(name) {
        Some(arch) if !arches.contains(&arch) => arches.push(arch),
        Some(_) => {}
        None => unknown.push(name.to_string()),
    };
    let native = Arch::parse("SCMP_ARCH_NATIVE");
    if let Some(list) = profile.get("architectures").and_then(Value::as_array) {
        for name in list.iter().filter_map(Value::as_str) {
            push(name, &mut arches);
        }
    } else if let Some(map) = profile.get("archMap").and_then(Value::as_array) {
        for entry in map {
            let Some(main) = entry.get("architecture").and_then(Value::as_str) else {
                continue;
            };
            if Arch::parse(main) != native {
                continue;
            }
            push(main, &mut arches);
            let subs = entry.get("subArchitectures").and_then(Value::as_array);
            for sub in subs.into_iter().flatten().filter_map(Value::as_str) {
                push(sub, &mut arches);
            }
        }
    }
    arches
}

/// The architectures a filter built from `listed` covers: libseccomp always adds the native one.
pub fn with_native(listed: &[Arch]) -> Vec<Arch> {
    let mut arches = listed.to_vec();
    if let Some(native) = Arch::parse("SCMP_ARCH_NATIVE") {
        if !arches.contains(&native) {
            arches.insert(0, native);
        }
    }
    arches
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arch_map_keeps_only_the_native_entry() {
        let profile = json!({"archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ]});
        let mut unknown = Vec::new();
        let names: Vec<&str> = with_native(&listed_arches(&profile, &mut unknown))
            .iter()
            .map(|a| a.name)
            .collect();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                names,
                ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
            );
        }
        assert!(unknown.is_empty());
    }

    #[test]
    fn tables_hold_names_per_arch() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let x86 = Arch::parse("SCMP_ARCH_X86").unwrap();
        let x32 = Arch::parse("SCMP_ARCH_X32").unwrap();
        let names = x86.syscall_names();
        assert!(names.iter().any(|n| n == "mkdir"));
        assert!(x32.syscall_names().iter().any(|n| n == "mkdirat"));
        let aarch64 = Arch::parse("SCMP_ARCH_AARCH64").unwrap();
        assert!(!aarch64.flags("mkdir"));
        assert!(aarch64.flags("mkdirat"));
        // Flagged through its own number and through socketcall; see the record's tests.
        assert!(x86.flags("socket") && x86.flags("shmget"));
        assert!(!Arch::parse("SCMP_ARCH_X86_64").unwrap().flags("socketcall"));
    }
}
