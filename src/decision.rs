//! A policy compiled for one container: per arch, a table indexed by syscall number.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::container::Container;
use crate::policy::{Action, ArgCondition, Policy};
use crate::record::{OriginalProfile, Outcome};
use crate::syscalls;

/// The rule name events show when the original profile, not the policy, decided.
pub const ORIGINAL_PROFILE_RULE: &str = "original-profile";

/// The answer for one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// What the original profile did, where the OCI hook recorded it: answers are never
    /// more permissive than this.
    ceiling: Option<Ceiling>,
}

#[derive(Debug)]
struct Ceiling {
    /// Candidates of the original profile's rules, ending in its default.
    by_arch: ByArch,
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
                conditions: Box::new([]),
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
        .find(|c| c.conditions.iter().all(|cond| cond.holds(args)))
        .map(|c| &c.verdict)
}

impl Ceiling {
    fn compile(original: &OriginalProfile, container: &Container) -> Ceiling {
        let verdict = |outcome: Outcome| match outcome {
            Outcome::Allow => Verdict {
                action: Action::Allow,
                errno: 0,
                rule: None,
            },
            Outcome::Errno { errno } => Verdict {
                action: Action::Deny,
                errno,
                rule: Some(ORIGINAL_PROFILE_RULE),
            },
            Outcome::Kill => Verdict {
                action: Action::Kill,
                errno: libc::EPERM,
                rule: Some(ORIGINAL_PROFILE_RULE),
            },
        };
        let mut by_arch = empty_by_arch();
        for (name, rules) in &original.syscalls {
            let cap_conditioned = rules
                .iter()
                .any(|r| !r.caps.is_empty() || !r.not_caps.is_empty());
            if cap_conditioned && container.capabilities_unknown {
                // Which of these rules exist depends on capabilities nobody could read; the
                // answer is one of the rules' or the default's, so the strictest of them is
                // never looser than the original filter, whatever the capabilities were.
                let strictest = rules
                    .iter()
                    .map(|r| verdict(r.outcome))
                    .chain([verdict(original.default)])
                    .max_by_key(|v| v.action)
                    .expect("the chain holds the default");
                push(&mut by_arch, name, || Candidate {
                    conditions: Box::new([]),
                    verdict: strictest.clone(),
                });
                continue;
            }
            let applicable = rules.iter().filter(|r| {
                r.caps.iter().all(|c| container.has_capability(c))
                    && !r.not_caps.iter().any(|c| container.has_capability(c))
            });
            for rule in applicable {
                // A condition this build cannot evaluate makes the rule never match,
                // which leaves the stricter default in charge.
                let conditions: Option<Box<[ArgCondition]>> =
                    rule.args.iter().map(|a| a.condition()).collect();
                if let Some(conditions) = conditions {
                    push(&mut by_arch, name, || Candidate {
                        conditions: conditions.clone(),
                        verdict: verdict(rule.outcome),
                    });
                }
            }
            push(&mut by_arch, name, || Candidate {
                conditions: Box::new([]),
                verdict: verdict(original.default),
            });
        }
        fold_multiplexed(&mut by_arch, None);
        Ceiling {
            by_arch: index(by_arch),
        }
    }
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
                    conditions: rule.args.clone().into_boxed_slice(),
                    verdict: verdict.clone(),
                });
            }
        }
        fold_multiplexed(&mut by_arch, Some(&default));
        DecisionTable {
            by_arch: index(by_arch),
            ceiling: container
                .original
                .as_deref()
                .map(|original| Ceiling::compile(original, container)),
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
    /// with `args`.
    #[inline]
    pub fn decide(&self, location: Option<(usize, usize)>, args: &[u64; 6]) -> &Verdict {
        let verdict = first_match(&self.by_arch, location, args).unwrap_or(&self.default);
        match &self.ceiling {
            Some(ceiling) => match first_match(&ceiling.by_arch, location, args) {
                Some(original) if original.action > verdict.action => original,
                _ => verdict,
            },
            None => verdict,
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

    #[test]
    fn first_matching_rule_wins_and_args_fall_through() {
        let t = table(
            "default: allow\nrules:\n  - name: big\n    syscalls: [personality]\n    args: [{index: 0, op: gt, value: 100}]\n    action: deny\n    errno: EACCES\n  - name: any\n    syscalls: [personality, mkdir]\n    action: log\n",
            nobody(),
        );
        let personality = syscalls::numbers("personality")[0];
        let big = t.decide(Some(personality), &[200, 0, 0, 0, 0, 0]);
        assert_eq!((big.action, big.errno), (Action::Deny, libc::EACCES));
        assert_eq!(big.rule, Some("big"));
        let small = t.decide(Some(personality), &[1, 0, 0, 0, 0, 0]);
        assert_eq!(small.action, Action::Log);
        let unknown = t.decide(Some((0, 1)), &[0; 6]);
        assert_eq!((unknown.action, unknown.rule), (Action::Allow, None));
        assert_eq!(t.decide(None, &[0; 6]).action, Action::Allow);
    }

    #[test]
    fn every_arch_gets_its_own_number() {
        let t = table(
            "rules:\n  - name: m\n    syscalls: [mkdir]\n    action: deny\n",
            nobody(),
        );
        assert_eq!(t.decide(Some((0, 83)), &[0; 6]).action, Action::Deny);
        assert_eq!(t.decide(Some((1, 39)), &[0; 6]).action, Action::Deny);
        assert_eq!(t.decide(Some((1, 83)), &[0; 6]).action, Action::Log);
    }

    #[test]
    fn multiplexed_calls_fail_closed_over_every_rule_that_could_answer() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let x86 = libseccomp_sys::SCMP_ARCH_X86;
        // (action, errno, rule) of i386 syscall `nr` with `args`, located as the agent does.
        let answer = |t: &DecisionTable, nr: i32, args: [u64; 6]| {
            let v = t.decide(syscalls::locate(x86, nr, args[0]), &args);
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
            table(text, prod).decide(Some((0, 83)), &[0; 6]).action,
            Action::Deny
        );
        assert_eq!(
            table(text, nobody()).decide(Some((0, 83)), &[0; 6]).action,
            Action::Log
        );
    }

    #[test]
    fn the_original_profile_is_a_ceiling() {
        let original: OriginalProfile = serde_json::from_str(
            r#"{"default": {"action": "errno", "errno": 1},
                "syscalls": {
                  "mkdir": [{"outcome": {"action": "errno", "errno": 13}}],
                  "personality": [{"args": [{"index": 0, "op": "eq", "value": 8}], "outcome": {"action": "allow"}}],
                  "rmdir": [{"outcome": {"action": "allow"}}],
                  "unshare": [{"caps": ["CAP_SYS_ADMIN"], "outcome": {"action": "allow"}}]
                }}"#,
        )
        .unwrap();
        let text = "default: log\nrules:\n  - name: no-rmdir\n    syscalls: [rmdir]\n    action: deny\n    errno: EPERM\n";
        let plain = Container {
            original: Some(Arc::new(original)),
            ..nobody()
        };
        let admin = Container {
            capabilities: vec!["CAP_SYS_ADMIN".into()],
            ..plain.clone()
        };
        let t = table(text, plain);
        let at = |name: &str| Some(syscalls::numbers(name)[0]);
        let mkdir = t.decide(at("mkdir"), &[0; 6]);
        assert_eq!((mkdir.action, mkdir.errno), (Action::Deny, libc::EACCES));
        assert_eq!(mkdir.rule, Some(ORIGINAL_PROFILE_RULE));
        let rmdir = t.decide(at("rmdir"), &[0; 6]);
        assert_eq!((rmdir.action, rmdir.rule), (Action::Deny, Some("no-rmdir")));
        assert_eq!(
            t.decide(at("personality"), &[8, 0, 0, 0, 0, 0]).action,
            Action::Log
        );
        assert_eq!(
            t.decide(at("personality"), &[9, 0, 0, 0, 0, 0]).errno,
            libc::EPERM
        );
        assert_eq!(t.decide(at("unshare"), &[0; 6]).action, Action::Deny);
        assert_eq!(t.decide(at("uname"), &[0; 6]).action, Action::Log);
        assert_eq!(
            table(text, admin.clone())
                .decide(at("unshare"), &[0; 6])
                .action,
            Action::Log
        );
        let unknown = Container {
            capabilities_unknown: true,
            ..admin
        };
        let t = table(text, unknown);
        let unshare = t.decide(at("unshare"), &[0; 6]);
        assert_eq!((unshare.action, unshare.errno), (Action::Deny, libc::EPERM));
        assert_eq!(
            t.decide(at("personality"), &[8, 0, 0, 0, 0, 0]).action,
            Action::Log
        );
    }

    #[test]
    fn unknown_capabilities_give_the_strictest_recorded_answer() {
        // An excludes-rule that allows when CAP_SYS_ADMIN is absent, before a rule that
        // kills: counting the unknown capability as absent would let the call through.
        let original: OriginalProfile = serde_json::from_str(
            r#"{"default": {"action": "allow"},
                "syscalls": {
                  "unshare": [{"not_caps": ["CAP_SYS_ADMIN"], "outcome": {"action": "allow"}},
                              {"outcome": {"action": "kill"}}]
                }}"#,
        )
        .unwrap();
        let who = Container {
            original: Some(Arc::new(original)),
            capabilities_unknown: true,
            ..nobody()
        };
        let t = table("default: log\n", who);
        let unshare = Some(syscalls::numbers("unshare")[0]);
        assert_eq!(t.decide(unshare, &[0; 6]).action, Action::Kill);
    }
}
