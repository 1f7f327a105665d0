//! Recording the syscalls a workload makes: a per-listener recorder on the notification path, and the union per container.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::container::Container;
use crate::lock::Locked;
use crate::profile_out;
use crate::syscalls;

/// Most distinct values `--args` keeps of one argument; past it, the syscall is allowed by name.
pub const MAX_ARG_VALUES: usize = 16;

/// The arguments whose values `--args` keeps: small integers that select what a call does
/// (a socket's domain, a persona, clone flags, an ioctl request, a prctl option).
const TRACKED_ARGS: [(&str, u32); 6] = [
    ("personality", 0),
    ("socket", 0),
    ("clone", 0),
    ("ioctl", 1),
    ("prctl", 0),
    ("arch_prctl", 0),
];

/// Slots per arch table: direct numbers below `MAX_NR`, multiplexed sub-calls above it.
const SLOTS: usize = 2 * syscalls::MAX_NR;

/// The distinct values one tracked argument took, up to [`MAX_ARG_VALUES`].
#[derive(Debug, Clone, Copy)]
struct Values {
    index: u32,
    seen: [u64; MAX_ARG_VALUES],
    len: usize,
    /// More distinct values came than fit, or the call came through a multiplexer (its
    /// arguments are in memory, where a filter cannot compare them).
    many: bool,
}

/// What one listener's calls were; owned by its worker, so counting takes no lock or allocation.
pub struct Recorder {
    /// `counts[arch][slot]`: calls let through.
    counts: Box<[Box<[u64]>]>,
    /// `tracked[arch][slot]`: 1 + index into `values` of the slot's tracked argument, or 0.
    tracked: Box<[Box<[u8]>]>,
    values: Box<[Values]>,
}

impl Recorder {
    /// A recorder; with `args`, it also keeps the tracked arguments' values.
    pub fn new(args: bool) -> Recorder {
        let arches = syscalls::arches().len();
        let mut tracked: Vec<Box<[u8]>> = (0..arches)
            .map(|_| vec![0u8; SLOTS].into_boxed_slice())
            .collect();
        let mut values = Vec::new();
        if args {
            for (name, index) in TRACKED_ARGS {
                for (arch, slot) in syscalls::numbers(name) {
                    let Some(entry) = tracked.get_mut(arch).and_then(|t| t.get_mut(slot)) else {
                        continue;
                    };
                    values.push(Values {
                        index,
                        seen: [0; MAX_ARG_VALUES],
                        len: 0,
                        many: slot >= syscalls::MAX_NR,
                    });
                    *entry = u8::try_from(values.len()).unwrap_or(0);
                }
            }
        }
        Recorder {
            counts: (0..arches)
                .map(|_| vec![0u64; SLOTS].into_boxed_slice())
                .collect(),
            tracked: tracked.into_boxed_slice(),
            values: values.into_boxed_slice(),
        }
    }

    /// Notes a call that was let through.
    #[inline]
    pub fn see(&mut self, location: Option<(usize, usize)>, args: &[u64; 6]) {
        let Some((arch, slot)) = location else {
            return;
        };
        if let Some(count) = self.counts.get_mut(arch).and_then(|t| t.get_mut(slot)) {
            *count += 1;
        }
        let tracked = self
            .tracked
            .get(arch)
            .and_then(|t| t.get(slot))
            .copied()
            .unwrap_or(0);
        if tracked == 0 {
            return;
        }
        let Some(values) = self.values.get_mut(usize::from(tracked) - 1) else {
            return;
        };
        if values.many {
            return;
        }
        let value = args[usize::try_from(values.index).unwrap_or(0).min(5)];
        if values.seen[..values.len].contains(&value) {
            return;
        }
        if values.len == MAX_ARG_VALUES {
            values.many = true;
        } else {
            values.seen[values.len] = value;
            values.len += 1;
        }
    }

    /// What was recorded, by name.
    pub fn recording(&self) -> Recording {
        let mut out = Recording::default();
        for (arch, counts) in self.counts.iter().enumerate() {
            for (slot, count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
                let name = syscalls::name(arch, slot);
                if name == "?" {
                    continue;
                }
                let mut one = Recording::default();
                one.arches.insert(profile_out::arch_name(arch));
                one.syscalls.insert(name.to_string(), *count);
                let tracked = self.tracked[arch][slot];
                if let Some(values) = usize::from(tracked)
                    .checked_sub(1)
                    .and_then(|i| self.values.get(i))
                    .filter(|v| !v.many)
                {
                    one.args.insert(
                        name.to_string(),
                        ArgValues {
                            index: values.index,
                            values: values.seen[..values.len].iter().copied().collect(),
                        },
                    );
                }
                out.merge(one);
            }
        }
        out
    }
}

/// The values a syscall was called with in one argument; only these are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgValues {
    pub index: u32,
    pub values: BTreeSet<u64>,
}

/// What a workload called: the profile's content before it is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recording {
    /// Architectures seen, as profiles name them (`SCMP_ARCH_X86_64`).
    pub arches: BTreeSet<String>,
    /// Syscalls seen, with how often (0 when read back from a profile).
    pub syscalls: BTreeMap<String, u64>,
    /// Syscalls allowed only with these argument values; the others in `syscalls` by name.
    pub args: BTreeMap<String, ArgValues>,
}

impl Recording {
    /// Adds `other`: the union. A syscall allowed by name in either stays allowed by name;
    /// the values of one argument add up, until there are too many to list.
    pub fn merge(&mut self, other: Recording) {
        self.arches.extend(other.arches);
        for (name, count) in other.syscalls {
            let theirs = other.args.get(&name);
            match self.syscalls.get_mut(&name) {
                None => {
                    self.syscalls.insert(name.clone(), count);
                    if let Some(theirs) = theirs {
                        self.args.insert(name, theirs.clone());
                    }
                }
                Some(ours) => {
                    *ours += count;
                    let union = match (self.args.get(&name), theirs) {
                        (Some(a), Some(b)) if a.index == b.index => {
                            let values: BTreeSet<u64> =
                                a.values.union(&b.values).copied().collect();
                            (values.len() <= MAX_ARG_VALUES).then_some(ArgValues {
                                index: a.index,
                                values,
                            })
                        }
                        _ => None,
                    };
                    match union {
                        Some(union) => self.args.insert(name, union),
                        None => self.args.remove(&name),
                    };
                }
            }
        }
    }
}

/// A container's recording while some of its listeners still run.
struct Open {
    listeners: usize,
    recording: Recording,
}

/// Where finished recordings go: files under a directory (the agent's `--record-dir`), or
/// kept for the caller (`switchboard record`).
pub struct Recordings {
    dir: Option<PathBuf>,
    args: bool,
    errno: u32,
    open: Mutex<HashMap<String, Open>>,
    finished: Mutex<Vec<Recording>>,
}

impl Recordings {
    /// Recordings written under `dir` (kept in memory without one), denying the rest with `errno`.
    pub fn new(dir: Option<PathBuf>, args: bool, errno: u32) -> Arc<Recordings> {
        Arc::new(Recordings {
            dir,
            args,
            errno,
            open: Mutex::new(HashMap::new()),
            finished: Mutex::new(Vec::new()),
        })
    }

    /// A recorder for a new listener of `container`, if its profile is a recording one.
    pub(crate) fn start(&self, container: &Container) -> Option<Box<Recorder>> {
        if !container.record.as_ref().is_some_and(|r| r.recording) {
            return None;
        }
        self.open
            .locked()
            .entry(container.container_id.clone())
            .or_insert_with(|| Open {
                listeners: 0,
                recording: Recording::default(),
            })
            .listeners += 1;
        Some(Box::new(Recorder::new(self.args)))
    }

    /// Adds a gone listener's calls; the container's last one writes its profile.
    pub(crate) fn finish(&self, container: &Container, recorder: &Recorder) {
        let recording = recorder.recording();
        let done = {
            let mut open = self.open.locked();
            let Some(entry) = open.get_mut(&container.container_id) else {
                return;
            };
            entry.recording.merge(recording);
            entry.listeners -= 1;
            if entry.listeners > 0 {
                return;
            }
            open.remove(&container.container_id)
                .map(|o| o.recording)
                .unwrap_or_default()
        };
        let Some(dir) = &self.dir else {
            self.finished.locked().push(done);
            return;
        };
        let path = path_for(dir, container);
        match profile_out::write_merged(&path, done, self.errno) {
            Ok(merged) => tracing::info!(
                container = %container.container_id,
                path = %path.display(),
                syscalls = merged.syscalls.len(),
                "recorded profile written"
            ),
            Err(e) => tracing::error!(
                container = %container.container_id,
                path = %path.display(),
                error = format!("{e:#}"),
                "cannot write the recorded profile"
            ),
        }
    }

    /// The recordings finished so far that no directory took.
    pub fn take_finished(&self) -> Vec<Recording> {
        std::mem::take(&mut *self.finished.locked())
    }
}

/// `DIR/<namespace>/<pod>/<container>.json` for a Kubernetes container, else
/// `DIR/<container id>.json`. The names come from annotations, so each becomes one plain
/// path component.
pub fn path_for(dir: &Path, container: &Container) -> PathBuf {
    let component = |name: &str| -> String {
        let cleaned: String = name
            .chars()
            .map(|c| if c == '/' || c.is_control() { '_' } else { c })
            .collect();
        match cleaned.as_str() {
            "" | "." | ".." => format!("_{cleaned}"),
            _ => cleaned,
        }
    };
    let kubernetes = [&container.namespace, &container.pod, &container.container];
    if kubernetes.iter().all(|n| !n.is_empty()) {
        dir.join(component(&container.namespace))
            .join(component(&container.pod))
            .join(format!("{}.json", component(&container.container)))
    } else {
        dir.join(format!("{}.json", component(&container.container_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(names: &[&str], args: &[(&str, u32, &[u64])]) -> Recording {
        let mut r = Recording::default();
        r.arches.insert("SCMP_ARCH_X86_64".into());
        for name in names {
            r.syscalls.insert((*name).into(), 1);
        }
        for (name, index, values) in args {
            r.syscalls.insert((*name).into(), 1);
            r.args.insert(
                (*name).into(),
                ArgValues {
                    index: *index,
                    values: values.iter().copied().collect(),
                },
            );
        }
        r
    }

    #[test]
    fn merge_is_the_union_and_a_name_beats_values() {
        let mut a = recording(&["read"], &[("personality", 0, &[0]), ("socket", 0, &[1])]);
        a.merge(recording(&["mkdir", "socket"], &[("personality", 0, &[8])]));
        assert_eq!(
            a.syscalls.keys().collect::<Vec<_>>(),
            ["mkdir", "personality", "read", "socket"]
        );
        assert_eq!(a.syscalls["read"], 1);
        assert_eq!(a.args["personality"].values, [0, 8].into());
        assert!(!a.args.contains_key("socket"));
        let many: Vec<u64> = (0..=16).collect();
        a.merge(recording(&[], &[("personality", 0, &many)]));
        assert!(!a.args.contains_key("personality"));
    }

    #[test]
    fn the_recorder_counts_by_name_and_keeps_few_values() {
        let mut recorder = Recorder::new(true);
        let at = |name: &str| syscalls::numbers(name).first().copied();
        for value in [0u64, 0, 8] {
            recorder.see(at("personality"), &[value, 0, 0, 0, 0, 0]);
        }
        for value in 0..40u64 {
            recorder.see(at("ioctl"), &[1, value, 0, 0, 0, 0]);
        }
        recorder.see(at("getppid"), &[0; 6]);
        let r = recorder.recording();
        assert_eq!(r.syscalls["personality"], 3);
        assert_eq!(r.args["personality"].values, [0, 8].into());
        assert!(!r.args.contains_key("ioctl"));
        assert_eq!(r.syscalls["getppid"], 1);
        assert!(!r.args.contains_key("getppid"));
        assert_eq!(r.arches.len(), 1);
        assert!(Recorder::new(false).recording().syscalls.is_empty());
    }

    #[test]
    fn paths_stay_under_the_directory() {
        let dir = Path::new("/rec");
        let k8s = Container {
            container_id: "abc".into(),
            namespace: "..".into(),
            pod: "p/../../etc".into(),
            container: "c".into(),
            ..Container::default()
        };
        assert_eq!(
            path_for(dir, &k8s),
            Path::new("/rec/_../p_.._.._etc/c.json")
        );
        let plain = Container {
            container_id: "abc".into(),
            ..Container::default()
        };
        assert_eq!(path_for(dir, &plain), Path::new("/rec/abc.json"));
    }
}
