//! A policy compiled for one container: per arch, a table indexed by syscall number.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::bpf::{self, Insn, SeccompData};
use crate::container::Container;
use crate::policy::{Action, ArgCondition, Policy};
use crate::record::OriginalProfile;
use crate::syscalls;

/// The rule name events show when the original profile, not the policy, decided.
pub const ORIGINAL_PROFILE_RULE: &str = "original-profile";

/// The answer for one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    /// Errno for deny and kill; 0 otherwise.
    pub errno: i32,
    /// The rule that matched; `None` for the policy default. Interned, so events
    /// carry it without touching a reference count shared with the writer's CPU.
    pub rule: Option<&'static str>,
}

#[derive(Debug)]
struct Candidate {
    conditions: Box<[ArgCondition]>,
    verdict: Verdict,
}

/// A `'static` copy of a rule name; each distinct name is stored once for the life of the process.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into());
    names.insert(leaked);
    leaked
}

/// Candidates per arch, indexed by syscall number.
type ByArch = Vec<Box<[Box<[Candidate]>]>>;

/// The rules that apply to one container, ready for the notification path.
#[derive(Debug)]
pub struct DecisionTable {
    /// `by_arch[arch][nr]`: candidates in policy order; first match wins.
    by_arch: ByArch,
    default: Verdict,
    /// What the original profile's filter answers, where the OCI hook recorded it:
    /// answers are never more permissive than this.
    ceiling: Option<Arc<Ceiling>>,
}

/// Marks a syscall the ceiling has no precomputed answer for: the whole program runs.
const RUN_FILTER: u16 = u16::MAX;

/// The original profile's filter, as runc would have loaded it, compiled at intake.
#[derive(Debug, PartialEq, Eq)]
pub struct Ceiling {
    program: Box<[Insn]>,
    /// `by_arch[arch][nr]`: index into `answers` for the flagged syscalls; beyond a
    /// table's end, or [`RUN_FILTER`], the whole program runs.
    by_arch: Box<[Box<[u16]>]>,
    answers: Box<[Answer]>,
}

/// What the original filter does with one (arch, nr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Decided on (arch, nr) alone: most syscalls never run the program.
    Fixed(Verdict),
    /// Decided on the arguments: the program resumes where it first reads one, past
    /// its arch and syscall dispatch.
    Resume(bpf::State),
}

/// What the kernel does for a filter's `SECCOMP_RET_*` value, in the agent's terms.
pub fn verdict_of(ret: u32) -> Verdict {
    let (action, errno) = match ret & bpf::RET_ACTION {
        // NOTIFY: the listener the hook replaced (with --force) no longer answers; the policy does.
        bpf::RET_ALLOW | bpf::RET_LOG | bpf::RET_USER_NOTIF => (Action::Allow, 0),
        // The kernel caps the errno at MAX_ERRNO.
        bpf::RET_ERRNO => (Action::Deny, (ret & bpf::RET_DATA).min(4095) as i32),
        // Without a tracer the kernel fails a traced syscall with ENOSYS.
        bpf::RET_TRACE => (Action::Deny, libc::ENOSYS),
        // TRAP, KILL_THREAD, KILL_PROCESS and unknown actions: the caller dies.
        _ => (Action::Kill, libc::EPERM),
    };
    Verdict {
        action,
        errno,
        rule: Some(ORIGINAL_PROFILE_RULE),
    }
}

impl Ceiling {
    /// Precomputes, for the syscalls at `flagged` (arch table, number), the answer or
    /// where the program starts to look at the instruction pointer or the arguments.
    /// Any other notification runs the whole program.
    pub fn new(program: Vec<Insn>, flagged: impl IntoIterator<Item = (usize, usize)>) -> Ceiling {
        let arches = syscalls::arches();
        let mut by_arch: Vec<Vec<u16>> = arches.iter().map(|_| Vec::new()).collect();
        let mut answers: Vec<Answer> = Vec::new();
        for (arch, nr) in flagged {
            let (Some(info), Some(table)) = (arches.get(arch), by_arch.get_mut(arch)) else {
                continue;
            };
            let data = SeccompData {
                nr: nr as i32 | info.nr_bit,
                arch: info.audit,
                instruction_pointer: 0,
                args: [0; 6],
            };
            let answer = match bpf::prepare(&program, &data) {
                bpf::Prepared::Done(ret) => Answer::Fixed(verdict_of(ret)),
                bpf::Prepared::Resume(state) => Answer::Resume(state),
            };
            let at = answers
                .iter()
                .position(|a| *a == answer)
                .unwrap_or_else(|| {
                    answers.push(answer);
                    answers.len() - 1
                });
            if table.len() <= nr {
                table.resize(nr + 1, RUN_FILTER);
            }
            table[nr] = u16::try_from(at).unwrap_or(RUN_FILTER);
        }
        Ceiling {
            program: program.into_boxed_slice(),
            by_arch: by_arch.into_iter().map(Vec::into_boxed_slice).collect(),
            answers: answers.into_boxed_slice(),
        }
    }

    /// The ceiling for a container: its record's filter, given its capabilities. A record
    /// that cannot be compiled denies every call it is asked about (EPERM).
    pub fn from_record(record: &OriginalProfile, has_capability: impl Fn(&str) -> bool) -> Ceiling {
        // What notifies: the flagged syscalls, and on x86 the multiplexers of socket and IPC calls.
        let flagged = record
            .notify
            .iter()
            .map(String::as_str)
            .chain(["socketcall", "ipc"])
            .flat_map(syscalls::numbers);
        match record.program(has_capability) {
            Ok(program) => Ceiling::new(program, flagged),
            Err(e) => {
                tracing::error!(error = %e, "the original-profile record cannot be compiled; denying every flagged call");
                Ceiling::new(
                    vec![Insn::ret(bpf::RET_ERRNO | libc::EPERM as u32)],
                    flagged,
                )
            }
        }
    }

    /// What the original filter answers for `data`.
    #[inline]
    pub fn verdict(&self, data: &SeccompData) -> Verdict {
        let answer = syscalls::locate(data.arch, data.nr)
            .and_then(|(arch, nr)| self.by_arch.get(arch)?.get(nr))
            .and_then(|&at| self.answers.get(usize::from(at)));
        match answer {
            Some(Answer::Fixed(verdict)) => *verdict,
            Some(Answer::Resume(state)) => verdict_of(bpf::resume(&self.program, data, *state)),
            None => verdict_of(bpf::run(&self.program, data)),
        }
    }
}

fn index(by_arch: Vec<Vec<Vec<Candidate>>>) -> ByArch {
    by_arch
        .into_iter()
        .map(|table| table.into_iter().map(Vec::into_boxed_slice).collect())
        .collect()
}

fn push(by_arch: &mut [Vec<Vec<Candidate>>], name: &str, make: impl Fn() -> Candidate) {
    for (arch, nr) in syscalls::numbers(name) {
        let table = &mut by_arch[arch];
        if table.len() <= nr {
            table.resize_with(nr + 1, Vec::new);
        }
        table[nr].push(make());
    }
}

fn empty_by_arch() -> Vec<Vec<Vec<Candidate>>> {
    syscalls::arches().iter().map(|_| Vec::new()).collect()
}

#[inline]
fn first_match<'a>(
    by_arch: &'a ByArch,
    location: Option<(usize, usize)>,
    args: &[u64; 6],
) -> Option<&'a Verdict> {
    let (arch, nr) = location?;
    by_arch
        .get(arch)?
        .get(nr)?
        .iter()
        .find(|c| c.conditions.iter().all(|cond| cond.holds(args)))
        .map(|c| &c.verdict)
}

impl DecisionTable {
    /// Keeps the rules whose selectors match `container` and indexes them by syscall number.
    pub fn compile(policy: &Policy, container: &Container) -> DecisionTable {
        let who = container.selector_input();
        let mut by_arch = empty_by_arch();
        for rule in policy.rules.iter().filter(|r| r.selector.matches(who)) {
            let verdict = Verdict {
                action: rule.action,
                errno: if rule.action.lets_through() {
                    0
                } else {
                    rule.errno
                },
                rule: Some(intern(&rule.name)),
            };
            for name in &rule.syscalls {
                push(&mut by_arch, name, || Candidate {
                    conditions: rule.args.clone().into_boxed_slice(),
                    verdict,
                });
            }
        }
        DecisionTable {
            by_arch: index(by_arch),
            ceiling: container.original.clone(),
            default: Verdict {
                action: policy.default,
                errno: if policy.default.lets_through() {
                    0
                } else {
                    libc::EPERM
                },
                rule: None,
            },
        }
    }

    /// What a table compiled for `container` depends on besides the policy: the rules whose
    /// selectors match it. `None` when it has an original profile, which makes its table its own.
    pub fn share_key(policy: &Policy, container: &Container) -> Option<Vec<usize>> {
        if container.original.is_some() {
            return None;
        }
        let who = container.selector_input();
        Some(
            (0..policy.rules.len())
                .filter(|i| policy.rules[*i].selector.matches(who))
                .collect(),
        )
    }

    /// The verdict for a syscall at `location` (arch table, number) with `data`, never
    /// more permissive than the original profile's filter.
    #[inline]
    pub fn decide(&self, location: Option<(usize, usize)>, data: &SeccompData) -> Verdict {
        let verdict = *first_match(&self.by_arch, location, &data.args).unwrap_or(&self.default);
        match &self.ceiling {
            // Nothing is stricter than a kill: the original filter need not run.
            Some(ceiling) if verdict.action < Action::Kill => {
                let original = ceiling.verdict(data);
                if original.action > verdict.action {
                    original
                } else {
                    verdict
                }
            }
            _ => verdict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::OriginalProfile;
    use std::sync::Arc;

    fn nobody() -> Container {
        Container::default()
    }

    fn table(text: &str, who: Container) -> DecisionTable {
        DecisionTable::compile(&Policy::parse(text, "t").unwrap(), &who)
    }

    /// The seccomp_data of a call at `location` (arch table, number).
    fn call(location: (usize, usize), args: [u64; 6]) -> SeccompData {
        let arch = &syscalls::arches()[location.0];
        SeccompData {
            nr: location.1 as i32 | arch.nr_bit,
            arch: arch.audit,
            instruction_pointer: 0,
            args,
        }
    }

    fn decide(t: &DecisionTable, location: Option<(usize, usize)>, args: [u64; 6]) -> Verdict {
        let data = call(location.unwrap_or((0, 0)), args);
        t.decide(location, &data)
    }

    #[test]
    fn first_matching_rule_wins_and_args_fall_through() {
        let t = table(
            "default: allow\nrules:\n  - name: big\n    syscalls: [personality]\n    args: [{index: 0, op: gt, value: 100}]\n    action: deny\n    errno: EACCES\n  - name: any\n    syscalls: [personality, mkdir]\n    action: log\n",
            nobody(),
        );
        let personality = syscalls::numbers("personality")[0];
        let big = decide(&t, Some(personality), [200, 0, 0, 0, 0, 0]);
        assert_eq!((big.action, big.errno), (Action::Deny, libc::EACCES));
        assert_eq!(big.rule, Some("big"));
        let small = decide(&t, Some(personality), [1, 0, 0, 0, 0, 0]);
        assert_eq!(small.action, Action::Log);
        let unknown = decide(&t, Some((0, 1)), [0; 6]);
        assert_eq!((unknown.action, unknown.rule), (Action::Allow, None));
        assert_eq!(decide(&t, None, [0; 6]).action, Action::Allow);
    }

    #[test]
    fn every_arch_gets_its_own_number() {
        let t = table(
            "rules:\n  - name: m\n    syscalls: [mkdir]\n    action: deny\n",
            nobody(),
        );
        assert_eq!(decide(&t, Some((0, 83)), [0; 6]).action, Action::Deny);
        assert_eq!(decide(&t, Some((1, 39)), [0; 6]).action, Action::Deny);
        assert_eq!(decide(&t, Some((1, 83)), [0; 6]).action, Action::Log);
    }

    #[test]
    fn selectors_pick_rules_per_container() {
        let text = "rules:\n  - name: prod\n    match: {namespace: [prod-*], metadata: [team-a]}\n    syscalls: [mkdir]\n    action: deny\n";
        let prod = Container {
            namespace: "prod-1".into(),
            metadata: "team-a".into(),
            ..nobody()
        };
        assert_eq!(
            decide(&table(text, prod), Some((0, 83)), [0; 6]).action,
            Action::Deny
        );
        assert_eq!(
            decide(&table(text, nobody()), Some((0, 83)), [0; 6]).action,
            Action::Log
        );
    }

    fn with_record(record: serde_json::Value, caps: &[&str]) -> Container {
        let record: OriginalProfile = serde_json::from_value(record).unwrap();
        Container {
            original: Some(Arc::new(Ceiling::from_record(&record, |c| {
                caps.contains(&c)
            }))),
            ..nobody()
        }
    }

    #[test]
    fn the_original_profile_is_a_ceiling() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let record = serde_json::json!({
            "version": 2, "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "rules": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 8}]},
                {"names": ["rmdir", "uname"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["unshare"], "action": "SCMP_ACT_ALLOW", "caps": ["CAP_SYS_ADMIN"]}
            ],
            "notify": ["mkdir", "personality", "rmdir", "uname", "unshare"]
        });
        let text = "default: log\nrules:\n  - name: no-rmdir\n    syscalls: [rmdir]\n    action: deny\n    errno: EPERM\n";
        let t = table(text, with_record(record.clone(), &[]));
        let at = |name: &str| Some(syscalls::numbers(name)[0]);
        let mkdir = decide(&t, at("mkdir"), [0; 6]);
        assert_eq!((mkdir.action, mkdir.errno), (Action::Deny, libc::EACCES));
        assert_eq!(mkdir.rule, Some(ORIGINAL_PROFILE_RULE));
        let rmdir = decide(&t, at("rmdir"), [0; 6]);
        assert_eq!((rmdir.action, rmdir.rule), (Action::Deny, Some("no-rmdir")));
        assert_eq!(
            decide(&t, at("personality"), [8, 0, 0, 0, 0, 0]).action,
            Action::Log
        );
        assert_eq!(
            decide(&t, at("personality"), [9, 0, 0, 0, 0, 0]).errno,
            libc::EPERM
        );
        assert_eq!(decide(&t, at("unshare"), [0; 6]).action, Action::Deny);
        assert_eq!(decide(&t, at("uname"), [0; 6]).action, Action::Log);
        let admin = table(text, with_record(record, &["CAP_SYS_ADMIN"]));
        assert_eq!(decide(&admin, at("unshare"), [0; 6]).action, Action::Log);
    }

    #[test]
    fn overlapping_rules_answer_as_the_kernel_does() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        // Issue 11: LOG for personality when arg0 > 1, then EACCES when arg0 == 8. The
        // kernel answers personality(8) with EACCES.
        let record = serde_json::json!({
            "version": 2, "defaultAction": "SCMP_ACT_ALLOW",
            "rules": [
                {"names": ["personality"], "action": "SCMP_ACT_LOG", "args": [{"index": 0, "op": "SCMP_CMP_GT", "value": 1}]},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 8}]},
                {"names": ["getpriority"], "action": "SCMP_ACT_TRACE"},
                {"names": ["prctl"], "action": "SCMP_ACT_TRAP"}
            ]
        });
        let t = table("default: log\n", with_record(record, &[]));
        let at = |name: &str| Some(syscalls::numbers(name)[0]);
        let eight = decide(&t, at("personality"), [8, 0, 0, 0, 0, 0]);
        assert_eq!((eight.action, eight.errno), (Action::Deny, libc::EACCES));
        assert_eq!(
            decide(&t, at("personality"), [9, 0, 0, 0, 0, 0]).action,
            Action::Log
        );
        let traced = decide(&t, at("getpriority"), [0; 6]);
        assert_eq!((traced.action, traced.errno), (Action::Deny, libc::ENOSYS));
        let trapped = decide(&t, at("prctl"), [0; 6]);
        assert_eq!(
            (trapped.action, trapped.rule),
            (Action::Kill, Some(ORIGINAL_PROFILE_RULE))
        );
    }

    #[test]
    fn an_unbuildable_record_denies() {
        let t = table(
            "default: allow\n",
            with_record(
                serde_json::json!({"version": 2, "defaultAction": "SCMP_ACT_NOTIFY"}),
                &[],
            ),
        );
        let v = decide(&t, Some((0, 83)), [0; 6]);
        assert_eq!((v.action, v.errno), (Action::Deny, libc::EPERM));
    }

    #[test]
    fn filter_results_map_to_verdicts() {
        let v = |ret| {
            let v = verdict_of(ret);
            (v.action, v.errno)
        };
        assert_eq!(v(bpf::RET_ALLOW), (Action::Allow, 0));
        assert_eq!(v(bpf::RET_LOG), (Action::Allow, 0));
        assert_eq!(v(bpf::RET_USER_NOTIF | 5), (Action::Allow, 0));
        assert_eq!(v(bpf::RET_ERRNO | 13), (Action::Deny, 13));
        assert_eq!(v(bpf::RET_ERRNO | 0xffff), (Action::Deny, 4095));
        assert_eq!(v(bpf::RET_TRACE | 1), (Action::Deny, libc::ENOSYS));
        for kill in [
            bpf::RET_TRAP,
            bpf::RET_KILL_THREAD,
            bpf::RET_KILL_PROCESS,
            0x1234_0000,
        ] {
            assert_eq!(v(kill).0, Action::Kill, "{kill:#x}");
        }
    }
}
