//! Arch-aware syscall names and numbers, from libseccomp's tables.

use std::sync::OnceLock;

use libseccomp::{ScmpArch, ScmpSyscall};

/// The kernel marks x32 syscalls with this bit in `nr`, under the x86_64 audit arch.
const X32_SYSCALL_BIT: i32 = 0x4000_0000;

/// Highest syscall number (exclusive) kept in per-arch tables.
pub const MAX_NR: usize = 1024;

/// An architecture whose syscalls a container on this host can make.
#[derive(Debug)]
pub struct Arch {
    pub scmp: ScmpArch,
    /// `seccomp_data.arch` as the kernel reports it.
    pub audit: u32,
    /// Set in `seccomp_data.nr` for this arch (x32), else 0.
    pub nr_bit: i32,
    pub name: &'static str,
}

static X86_64_FAMILY: [Arch; 3] = [
    Arch {
        scmp: ScmpArch::X8664,
        audit: libseccomp_sys::SCMP_ARCH_X86_64,
        nr_bit: 0,
        name: "x86_64",
    },
    Arch {
        scmp: ScmpArch::X86,
        audit: libseccomp_sys::SCMP_ARCH_X86,
        nr_bit: 0,
        name: "x86",
    },
    Arch {
        scmp: ScmpArch::X32,
        audit: libseccomp_sys::SCMP_ARCH_X86_64,
        nr_bit: X32_SYSCALL_BIT,
        name: "x32",
    },
];

static AARCH64_FAMILY: [Arch; 2] = [
    Arch {
        scmp: ScmpArch::Aarch64,
        audit: libseccomp_sys::SCMP_ARCH_AARCH64,
        nr_bit: 0,
        name: "aarch64",
    },
    Arch {
        scmp: ScmpArch::Arm,
        audit: libseccomp_sys::SCMP_ARCH_ARM,
        nr_bit: 0,
        name: "arm",
    },
];

/// The native arch first, then the compat arches the kernel also runs.
pub fn arches() -> &'static [Arch] {
    if cfg!(target_arch = "aarch64") {
        &AARCH64_FAMILY
    } else {
        &X86_64_FAMILY
    }
}

/// Finds the arch table and table index of a notification's (arch, nr).
#[inline]
pub fn locate(audit_arch: u32, nr: i32) -> Option<(usize, usize)> {
    arches().iter().enumerate().find_map(|(index, arch)| {
        let matches = arch.audit == audit_arch
            && (if arch.nr_bit == 0 {
                nr & X32_SYSCALL_BIT == 0 || arch.audit != libseccomp_sys::SCMP_ARCH_X86_64
            } else {
                nr & arch.nr_bit != 0
            });
        let table_nr = usize::try_from(nr & !arch.nr_bit).ok()?;
        (matches && table_nr < MAX_NR).then_some((index, table_nr))
    })
}

/// The number of `name` on each arch that has it, as (arch index, table index).
pub fn numbers(name: &str) -> Vec<(usize, usize)> {
    arches()
        .iter()
        .enumerate()
        .filter_map(|(index, arch)| {
            let raw = ScmpSyscall::from_name_by_arch(name, arch.scmp)
                .ok()?
                .as_raw_syscall();
            let nr = usize::try_from(raw & !arch.nr_bit).ok()?;
            (raw >= 0 && nr < MAX_NR).then_some((index, nr))
        })
        .collect()
}

/// True when libseccomp knows `name` on at least one arch of this host.
pub fn is_known(name: &str) -> bool {
    !numbers(name).is_empty()
}

/// The name of syscall `nr` on arch `arch_index`, or "?" when libseccomp has none.
pub fn name(arch_index: usize, nr: usize) -> &'static str {
    static NAMES: OnceLock<Vec<Vec<Option<&'static str>>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        arches()
            .iter()
            .map(|arch| {
                (0..MAX_NR)
                    .map(|nr| {
                        let raw = i32::try_from(nr).ok()? | arch.nr_bit;
                        let name = ScmpSyscall::from_raw_syscall(raw)
                            .get_name_by_arch(arch.scmp)
                            .ok()?;
                        Some(&*Box::leak(name.into_boxed_str()))
                    })
                    .collect()
            })
            .collect()
    });
    names
        .get(arch_index)
        .and_then(|table| table.get(nr).copied().flatten())
        .unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_and_compat_numbers_differ() {
        let mkdir = numbers("mkdir");
        assert!(mkdir.contains(&(0, 83)), "{mkdir:?}");
        assert!(mkdir.contains(&(1, 39)), "{mkdir:?}");
        assert_eq!(name(0, 83), "mkdir");
        assert_eq!(name(1, 39), "mkdir");
        assert_eq!(name(1, 83), "symlink");
    }

    #[test]
    fn locate_tells_x32_from_x86_64() {
        assert_eq!(locate(libseccomp_sys::SCMP_ARCH_X86_64, 83), Some((0, 83)));
        assert_eq!(locate(libseccomp_sys::SCMP_ARCH_X86, 39), Some((1, 39)));
        assert_eq!(
            locate(libseccomp_sys::SCMP_ARCH_X86_64, 83 | X32_SYSCALL_BIT),
            Some((2, 83))
        );
        assert_eq!(locate(0xdead, 1), None);
    }

    #[test]
    fn unknown_names_are_unknown() {
        assert!(is_known("openat"));
        assert!(!is_known("mkdri"));
    }
}
