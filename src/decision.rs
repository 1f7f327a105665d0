//! A policy compiled for one container: per arch, a table indexed by syscall number.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::bpf::{self, Insn, SeccompData};
use crate::container::Container;
use crate::lock::Locked;
use crate::policy::{Action, ArgCondition, ArgOp, Policy};
use crate::record::OriginalProfile;
use crate::syscalls;

/// The rule name events show when the original profile, not the policy, decided.
pub(crate) const ORIGINAL_PROFILE_RULE: &str = "original-profile";

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
    conditions: Conditions,
    verdict: Verdict,
}

/// A candidate's argument conditions. One condition, the usual case, is kept inline, so a
/// walk over a syscall's candidates reads one contiguous array instead of following a
/// pointer per rule into memory the trapped task's run has evicted from the cache.
#[derive(Debug)]
enum Conditions {
    None,
    One(ArgCondition),
    Many(Box<[ArgCondition]>),
}

impl Conditions {
    fn new(conditions: &[ArgCondition]) -> Conditions {
        match conditions {
            [] => Conditions::None,
            [one] => Conditions::One(*one),
            many => Conditions::Many(many.into()),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Conditions::None)
    }

    #[inline]
    fn hold(&self, args: &[u64; 6]) -> bool {
        match self {
            Conditions::None => true,
            Conditions::One(condition) => condition.holds(args),
            Conditions::Many(conditions) => conditions.iter().all(|c| c.holds(args)),
        }
    }
}

/// A `'static` copy of a rule name; each distinct name is stored once for the life of the process.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.locked();
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into());
    names.insert(leaked);
    leaked
}

/// A syscall's candidates as the notification path walks them, in policy order.
#[derive(Debug)]
enum Step {
    /// One candidate, its conditions checked in place.
    Check(Candidate),
    /// A run of candidates whose only condition is `args[i] == value`.
    Equal(EqualRun),
}

/// Runs shorter than this are checked rule by rule: a search per argument costs more.
const EQUAL_RUN_MIN: usize = 4;

/// A run of rules that each single out one value of one argument (the shape of a policy
/// that lists values to stop), found by a binary search per argument instead of a
/// comparison per rule; first match wins as in the run's order.
#[derive(Debug)]
struct EqualRun {
    /// Per argument index: (value, position in `verdicts`), sorted by value; a value named
    /// twice keeps its first position.
    by_arg: [Box<[(u64, u32)]>; 6],
    verdicts: Box<[Verdict]>,
}

impl EqualRun {
    fn new(run: Vec<Candidate>) -> EqualRun {
        let mut by_arg: [Vec<(u64, u32)>; 6] = Default::default();
        let mut verdicts = Vec::with_capacity(run.len());
        for (position, candidate) in run.into_iter().enumerate() {
            if let Conditions::One(condition) = candidate.conditions {
                let position = u32::try_from(position).unwrap_or(u32::MAX);
                by_arg[condition.index].push((condition.value, position));
            }
            verdicts.push(candidate.verdict);
        }
        EqualRun {
            by_arg: by_arg.map(|mut values| {
                values.sort_unstable();
                values.dedup_by_key(|(value, _)| *value);
                values.into_boxed_slice()
            }),
            verdicts: verdicts.into_boxed_slice(),
        }
    }

    #[inline]
    fn first_match(&self, args: &[u64; 6]) -> Option<&Verdict> {
        let mut first = u32::MAX;
        for (values, arg) in self.by_arg.iter().zip(args) {
            // Most calls match none of the values: one outside their range needs no search.
            let (Some(low), Some(high)) = (values.first(), values.last()) else {
                continue;
            };
            if *arg < low.0 || *arg > high.0 {
                continue;
            }
            if let Ok(found) = values.binary_search_by_key(arg, |(value, _)| *value) {
                first = first.min(values[found].1);
            }
        }
        self.verdicts.get(usize::try_from(first).ok()?)
    }
}

impl Candidate {
    /// True when the candidate's one condition is an argument equal to a value.
    fn is_equality(&self) -> bool {
        matches!(self.conditions, Conditions::One(c) if c.op == ArgOp::Eq)
    }
}

/// Steps per arch, indexed by syscall number.
type ByArch = Vec<Box<[Box<[Step]>]>>;

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
pub(crate) fn verdict_of(ret: u32) -> Verdict {
    let (action, errno) = match ret & bpf::RET_ACTION {
        // NOTIFY: the listener the hook replaced (with --force) no longer answers; the policy does.
        bpf::RET_ALLOW | bpf::RET_LOG | bpf::RET_USER_NOTIF => (Action::Allow, 0),
        // The kernel caps the errno at MAX_ERRNO.
        bpf::RET_ERRNO => (Action::Deny, (ret & bpf::RET_DATA).min(4095).cast_signed()),
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
            // A socketcall/ipc sub-call slot is no syscall number: its real `seccomp_data` is
            // the multiplexer's, so the whole program runs on it.
            if nr >= syscalls::MAX_NR {
                continue;
            }
            let data = SeccompData {
                nr: i32::try_from(nr).expect("below MAX_NR") | info.nr_bit,
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

    /// The ceiling for a container whose bounding set is `capabilities`, or unknown
    /// (`None`: the bundle could not be read, or the peer is not trusted to name it).
    pub fn for_container(record: &OriginalProfile, capabilities: Option<&[String]>) -> Ceiling {
        match capabilities {
            Some(capabilities) => {
                Ceiling::from_record(record, |c| capabilities.iter().any(|have| have == c))
            }
            None => {
                let mut ceiling = Ceiling::from_record(record, |_| false);
                ceiling.fail_closed_on_capabilities(record);
                ceiling
            }
        }
    }

    /// Gives every syscall a capability-conditioned rule names the strictest answer any of
    /// its rules or the default could give: whatever the capabilities were, the original
    /// filter answered one of those, so the ceiling is never looser than it.
    fn fail_closed_on_capabilities(&mut self, record: &OriginalProfile) {
        let conditioned: BTreeSet<&str> = record
            .rules
            .iter()
            .filter(|r| !r.caps.is_empty() || !r.not_caps.is_empty())
            .flat_map(|r| r.names.iter().map(String::as_str))
            .collect();
        let default = verdict_of(record.default_action.ret(record.default_errno_ret));
        for name in conditioned {
            let strictest = record
                .rules
                .iter()
                .filter(|r| r.names.iter().any(|n| n == name))
                .map(|r| verdict_of(r.action.ret(r.errno_ret)))
                .fold(
                    default,
                    |worst, v| {
                        if v.action > worst.action {
                            v
                        } else {
                            worst
                        }
                    },
                );
            let at = u16::try_from(self.answers.len()).unwrap_or(RUN_FILTER);
            let mut answers = self.answers.to_vec();
            answers.push(Answer::Fixed(strictest));
            self.answers = answers.into_boxed_slice();
            for (arch, slot) in syscalls::numbers(name) {
                let Some(table) = self.by_arch.get_mut(arch) else {
                    continue;
                };
                let mut grown = table.to_vec();
                if grown.len() <= slot {
                    grown.resize(slot + 1, RUN_FILTER);
                }
                grown[slot] = at;
                *table = grown.into_boxed_slice();
            }
        }
    }

    /// What the original filter answers for `data`.
    #[inline]
    pub fn verdict(&self, data: &SeccompData) -> Verdict {
        let answer = syscalls::locate(data.arch, data.nr, data.args[0])
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
        .map(|table| table.into_iter().map(steps).collect())
        .collect()
}

/// A syscall's candidates with each long enough run of equality rules folded into one step.
fn steps(candidates: Vec<Candidate>) -> Box<[Step]> {
    let mut steps = Vec::new();
    let mut run = Vec::new();
    let flush = |run: &mut Vec<Candidate>, steps: &mut Vec<Step>| {
        if run.len() >= EQUAL_RUN_MIN {
            steps.push(Step::Equal(EqualRun::new(std::mem::take(run))));
        } else {
            steps.extend(run.drain(..).map(Step::Check));
        }
    };
    for candidate in candidates {
        if candidate.is_equality() {
            run.push(candidate);
        } else {
            flush(&mut run, &mut steps);
            steps.push(Step::Check(candidate));
        }
    }
    flush(&mut run, &mut steps);
    steps.into_boxed_slice()
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

/// The stricter of two verdicts (by action); the first on a tie.
fn stricter<'a>(a: Option<&'a Verdict>, b: Option<&'a Verdict>) -> Option<&'a Verdict> {
    match (a, b) {
        (Some(a), Some(b)) if b.action > a.action => Some(b),
        (None, b) => b,
        (a, _) => a,
    }
}

/// The strictest verdict `candidates` could give without evaluating their conditions:
/// any conditional one may match, the first unconditional one ends the walk, and
/// without one `default` may answer. `None` when there are no candidates.
fn strictest_possible<'a>(
    candidates: &'a [Candidate],
    default: Option<&'a Verdict>,
) -> Option<&'a Verdict> {
    let mut worst = None;
    for candidate in candidates {
        worst = stricter(worst, Some(&candidate.verdict));
        if candidate.conditions.is_empty() {
            return worst;
        }
    }
    worst.and_then(|worst| stricter(Some(worst), default))
}

/// Gives each sub-call slot of a multiplexer (`socketcall`, `ipc`) one unconditional
/// candidate: the strictest answer any rule for that syscall, or for the multiplexer
/// itself, could give. The sub-call's real arguments are in the caller's memory, and
/// reading them there races the caller (TOCTOU): conditions cannot be evaluated, so
/// the answer fails closed. Done here so the notification path stays a table lookup.
fn fold_multiplexed(by_arch: &mut [Vec<Vec<Candidate>>], default: Option<&Verdict>) {
    for (arch, table) in by_arch.iter_mut().enumerate() {
        for slot in syscalls::multiplexed_slots(arch) {
            let candidates = |slot: Option<usize>| {
                slot.and_then(|s| table.get(s))
                    .map_or(&[][..], Vec::as_slice)
            };
            let verdict = stricter(
                strictest_possible(candidates(Some(slot)), default),
                strictest_possible(candidates(syscalls::multiplexer_of(arch, slot)), default),
            )
            .cloned();
            let Some(verdict) = verdict else {
                continue;
            };
            if table.len() <= slot {
                table.resize_with(slot + 1, Vec::new);
            }
            table[slot] = vec![Candidate {
                conditions: Conditions::None,
                verdict,
            }];
        }
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
        .find_map(|step| match step {
            Step::Check(c) => c.conditions.hold(args).then_some(&c.verdict),
            Step::Equal(run) => run.first_match(args),
        })
}

impl DecisionTable {
    /// Keeps the rules whose selectors match `container` and indexes them by syscall number.
    pub fn compile(policy: &Policy, container: &Container) -> DecisionTable {
        let who = container.selector_input();
        let default = Verdict {
            action: policy.default,
            errno: if policy.default.lets_through() {
                0
            } else {
                libc::EPERM
            },
            rule: None,
        };
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
                    conditions: Conditions::new(&rule.args),
                    verdict,
                });
            }
        }
        fold_multiplexed(&mut by_arch, Some(&default));
        DecisionTable {
            by_arch: index(by_arch),
            ceiling: container.original.clone(),
            default,
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

    /// The verdict for a syscall at `location` (arch table, slot from `syscalls::locate`)
    /// with `data`, never more permissive than the original profile's filter.
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
            nr: i32::try_from(location.1).unwrap() | arch.nr_bit,
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
    fn runs_of_equality_rules_answer_as_the_rules_in_order() {
        // A small LCG: the same policies and calls on every run.
        let mut seed = 0x5eed_u64;
        let mut next = |below: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % below
        };
        let personality = syscalls::numbers("personality")[0];
        for _ in 0..50 {
            let mut text = String::from("default: allow\nrules:\n");
            for r in 0..(2 + next(30)) {
                let (index, value) = (next(6), next(5));
                let args = match next(10) {
                    0 => format!("[{{index: {index}, op: gt, value: {value}}}]"),
                    1 => String::from("[]"),
                    2 => format!("[{{index: {index}, op: eq, value: {value}}}, {{index: {}, op: eq, value: {}}}]", next(6), next(5)),
                    _ => format!("[{{index: {index}, op: eq, value: {value}}}]"),
                };
                let action = ["deny", "log", "kill"][usize::try_from(next(3)).unwrap()];
                text.push_str(&format!("  - name: r{r}\n    syscalls: [personality]\n    args: {args}\n    action: {action}\n"));
            }
            let policy = Policy::parse(&text, "t").unwrap();
            let t = DecisionTable::compile(&policy, &nobody());
            for _ in 0..200 {
                let args: [u64; 6] = std::array::from_fn(|_| next(6));
                let expected = policy
                    .rules
                    .iter()
                    .find(|r| r.args.iter().all(|c| c.holds(&args)))
                    .map(|r| &*r.name);
                assert_eq!(
                    decide(&t, Some(personality), args).rule,
                    expected,
                    "{text}{args:?}"
                );
            }
        }
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
    fn multiplexed_calls_fail_closed_over_every_rule_that_could_answer() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let x86 = libseccomp_sys::SCMP_ARCH_X86;
        // (action, errno, rule) of i386 syscall `nr` with `args`, located as the agent does.
        let answer = |t: &DecisionTable, nr: i32, args: [u64; 6]| {
            let data = SeccompData {
                nr,
                arch: x86,
                instruction_pointer: 0,
                args,
            };
            let v = t.decide(syscalls::locate(x86, nr, args[0]), &data);
            (v.action, v.errno, v.rule)
        };
        let deny = |errno, rule| (Action::Deny, errno, rule);
        // Conditional deny, then an unconditional log: via socketcall both could answer.
        let t = table(
            "default: allow\nrules:\n  - name: no-packet\n    syscalls: [socket]\n    args: [{index: 0, op: eq, value: 17}]\n    action: deny\n    errno: EACCES\n  - name: watch-socket\n    syscalls: [socket]\n    action: log\n  - name: shm\n    syscalls: [shmget]\n    args: [{index: 0, op: eq, value: 5}]\n    action: log\n",
            nobody(),
        );
        let no_packet = deny(libc::EACCES, Some("no-packet"));
        assert_eq!(answer(&t, 359, [17, 3, 0, 0, 0, 0]), no_packet);
        assert_eq!(answer(&t, 359, [2, 1, 0, 0, 0, 0]).0, Action::Log);
        assert_eq!(answer(&t, 102, [1, 0x1000, 0, 0, 0, 0]), no_packet);
        // Only conditional rules: the default could answer too, but log is stricter.
        let shm = answer(&t, 117, [23, 0, 0, 0, 0, 0]);
        assert_eq!(shm, (Action::Log, 0, Some("shm")));
        // Sub-calls no rule names keep the default; so does an unknown sub-call.
        for sub in [3, 99] {
            assert_eq!(answer(&t, 102, [sub, 0, 0, 0, 0, 0]).0, Action::Allow);
        }

        // An unconditional allow ends the walk before a later kill; a conditional
        // allow under a deny default leaves the default possible.
        let t = table(
            "default: deny\nrules:\n  - name: ok\n    syscalls: [socket]\n    action: allow\n  - name: never\n    syscalls: [socket]\n    action: kill\n  - name: some-shm\n    syscalls: [shmget]\n    args: [{index: 2, op: eq, value: 0}]\n    action: allow\n",
            nobody(),
        );
        assert_eq!(answer(&t, 102, [1, 0, 0, 0, 0, 0]).0, Action::Allow);
        assert_eq!(
            answer(&t, 117, [23, 0, 0, 0, 0, 0]),
            deny(libc::EPERM, None)
        );

        // A rule on the multiplexer itself applies to every sub-call.
        let t = table(
            "default: allow\nrules:\n  - name: no-socketcall\n    syscalls: [socketcall]\n    action: deny\n",
            nobody(),
        );
        let no_socketcall = deny(libc::EPERM, Some("no-socketcall"));
        assert_eq!(answer(&t, 102, [1, 0, 0, 0, 0, 0]), no_socketcall);
        assert_eq!(answer(&t, 359, [1, 0, 0, 0, 0, 0]).0, Action::Allow);
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

    #[test]
    fn unknown_capabilities_give_the_strictest_recorded_answer() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        // An excludes-rule that allows when CAP_SYS_ADMIN is absent, and a kill otherwise:
        // counting the unknown capability as absent would let the call through.
        let record: OriginalProfile = serde_json::from_value(serde_json::json!({
            "version": 2, "defaultAction": "SCMP_ACT_ALLOW",
            "rules": [
                {"names": ["unshare"], "action": "SCMP_ACT_ALLOW", "notCaps": ["CAP_SYS_ADMIN"]},
                {"names": ["unshare"], "action": "SCMP_ACT_KILL_PROCESS", "caps": ["CAP_SYS_ADMIN"]},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ],
            "notify": ["unshare", "mkdir", "uname"]
        }))
        .unwrap();
        let who = Container {
            original: Some(Arc::new(Ceiling::for_container(&record, None))),
            ..nobody()
        };
        let t = table("default: log\n", who);
        let at = |name: &str| Some(syscalls::numbers(name)[0]);
        assert_eq!(decide(&t, at("unshare"), [0; 6]).action, Action::Kill);
        // Syscalls without capability conditions keep the filter's exact answer.
        let mkdir = decide(&t, at("mkdir"), [0; 6]);
        assert_eq!((mkdir.action, mkdir.errno), (Action::Deny, libc::EACCES));
        assert_eq!(decide(&t, at("uname"), [0; 6]).action, Action::Log);
        // Known capabilities answer exactly.
        let plain = Ceiling::for_container(&record, Some(&[]));
        let admin = Ceiling::for_container(&record, Some(&["CAP_SYS_ADMIN".to_string()]));
        let data = call(syscalls::numbers("unshare")[0], [0; 6]);
        assert_eq!(plain.verdict(&data).action, Action::Allow);
        assert_eq!(admin.verdict(&data).action, Action::Kill);
    }

    /// What each example's comments promise, call by call: (file, namespace, syscall, arg 0,
    /// action, errno). Every example must be listed, and none may have a rule that never applies.
    #[test]
    fn every_example_does_what_its_comments_say() {
        const EPERM: i32 = libc::EPERM;
        const EACCES: i32 = libc::EACCES;
        let promises: &[(&str, &str, &str, u64, Action, i32)] = &[
            ("default.yaml", "prod-eu", "mkdir", 0, Action::Log, 0),
            ("default.yaml", "", "mount", 0, Action::Log, 0),
            ("default.yaml", "", "getpid", 0, Action::Log, 0),
            ("deny-mkdir.yaml", "", "mkdir", 0, Action::Deny, EACCES),
            ("deny-mkdir.yaml", "", "mkdirat", 0, Action::Deny, EACCES),
            ("deny-mkdir.yaml", "", "rmdir", 0, Action::Log, 0),
            (
                "deny-escapes.yaml",
                "prod-eu",
                "mount",
                0,
                Action::Deny,
                EPERM,
            ),
            (
                "deny-escapes.yaml",
                "prod-eu",
                "setns",
                0,
                Action::Deny,
                EPERM,
            ),
            ("deny-escapes.yaml", "staging", "mount", 0, Action::Log, 0),
            (
                "deny-escapes.yaml",
                "prod-eu",
                "kexec_load",
                0,
                Action::Kill,
                EPERM,
            ),
            (
                "deny-escapes.yaml",
                "prod-eu",
                "reboot",
                0,
                Action::Kill,
                EPERM,
            ),
            (
                "deny-escapes.yaml",
                "staging",
                "kexec_load",
                0,
                Action::Kill,
                EPERM,
            ),
            (
                "arg-conditions.yaml",
                "",
                "unshare",
                0x1000_0000,
                Action::Deny,
                EPERM,
            ),
            (
                "arg-conditions.yaml",
                "",
                "unshare",
                0x0002_0000,
                Action::Allow,
                0,
            ),
            ("arg-conditions.yaml", "", "personality", 8, Action::Log, 0),
            (
                "arg-conditions.yaml",
                "",
                "personality",
                0xffff_ffff,
                Action::Allow,
                0,
            ),
            (
                "arg-conditions.yaml",
                "",
                "socket",
                17,
                Action::Deny,
                EACCES,
            ),
            ("arg-conditions.yaml", "", "socket", 2, Action::Allow, 0),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".yaml"))
            .collect();
        files.sort();
        for file in &files {
            assert!(
                promises.iter().any(|p| p.0 == file),
                "{file} has no promises in this test"
            );
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let report = Policy::check(&text, file);
            assert!(report.errors.is_empty(), "{file}: {:?}", report.errors);
            assert!(report.warnings.is_empty(), "{file}: {:?}", report.warnings);
        }
        for &(file, namespace, syscall, arg0, action, errno) in promises {
            let policy = Policy::load(&dir.join(file)).unwrap();
            let who = Container {
                namespace: namespace.to_string(),
                ..Container::default()
            };
            let t = DecisionTable::compile(&policy, &who);
            let location = syscalls::numbers(syscall)[0];
            let verdict = decide(&t, Some(location), [arg0, 0, 0, 0, 0, 0]);
            assert_eq!(
                (verdict.action, verdict.errno),
                (action, errno),
                "{file}: {syscall}({arg0:#x}) in namespace {namespace:?}"
            );
        }
    }
}
