//! A policy compiled for one container: per arch, a table indexed by syscall number.

use std::sync::Arc;

use crate::policy::{Action, ArgCondition, Policy, SelectorInput};
use crate::syscalls;

/// The answer for one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    /// Errno for deny and kill; 0 otherwise.
    pub errno: i32,
    /// The rule that matched; `None` for the policy default.
    pub rule: Option<Arc<str>>,
}

#[derive(Debug)]
struct Candidate {
    conditions: Box<[ArgCondition]>,
    verdict: Verdict,
}

/// The rules that apply to one container, ready for the notification path.
#[derive(Debug)]
pub struct DecisionTable {
    /// `by_arch[arch][nr]`: candidates in policy order; first match wins.
    by_arch: Vec<Box<[Box<[Candidate]>]>>,
    default: Verdict,
}

impl DecisionTable {
    /// Keeps the rules whose selectors match `who` and indexes them by syscall number.
    pub fn compile(policy: &Policy, who: SelectorInput<'_>) -> DecisionTable {
        let arch_count = syscalls::arches().len();
        let mut by_arch: Vec<Vec<Vec<Candidate>>> = (0..arch_count).map(|_| Vec::new()).collect();
        for rule in policy.rules.iter().filter(|r| r.selector.matches(who)) {
            let verdict = Verdict {
                action: rule.action,
                errno: if rule.action.lets_through() {
                    0
                } else {
                    rule.errno
                },
                rule: Some(rule.name.clone()),
            };
            for name in &rule.syscalls {
                for (arch, nr) in syscalls::numbers(name) {
                    let table = &mut by_arch[arch];
                    if table.len() <= nr {
                        table.resize_with(nr + 1, Vec::new);
                    }
                    table[nr].push(Candidate {
                        conditions: rule.args.clone().into_boxed_slice(),
                        verdict: verdict.clone(),
                    });
                }
            }
        }
        DecisionTable {
            by_arch: by_arch
                .into_iter()
                .map(|table| table.into_iter().map(Vec::into_boxed_slice).collect())
                .collect(),
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

    /// The verdict for syscall `nr` of arch-table `arch` with `args`.
    #[inline]
    pub fn decide(&self, location: Option<(usize, usize)>, args: &[u64; 6]) -> &Verdict {
        let candidates = location
            .and_then(|(arch, nr)| self.by_arch.get(arch)?.get(nr))
            .map(|c| &c[..])
            .unwrap_or(&[]);
        candidates
            .iter()
            .find(|c| c.conditions.iter().all(|cond| cond.holds(args)))
            .map(|c| &c.verdict)
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOBODY: SelectorInput<'static> = SelectorInput {
        namespace: "",
        pod: "",
        container: "",
        metadata: "",
    };

    fn table(text: &str, who: SelectorInput<'_>) -> DecisionTable {
        DecisionTable::compile(&Policy::parse(text, "t").unwrap(), who)
    }

    #[test]
    fn first_matching_rule_wins_and_args_fall_through() {
        let t = table(
            "default: allow\nrules:\n  - name: big\n    syscalls: [personality]\n    args: [{index: 0, op: gt, value: 100}]\n    action: deny\n    errno: EACCES\n  - name: any\n    syscalls: [personality, mkdir]\n    action: log\n",
            NOBODY,
        );
        let personality = syscalls::numbers("personality")[0];
        let big = t.decide(Some(personality), &[200, 0, 0, 0, 0, 0]);
        assert_eq!((big.action, big.errno), (Action::Deny, libc::EACCES));
        assert_eq!(big.rule.as_deref(), Some("big"));
        let small = t.decide(Some(personality), &[1, 0, 0, 0, 0, 0]);
        assert_eq!(small.action, Action::Log);
        let unknown = t.decide(Some((0, 1)), &[0; 6]);
        assert_eq!(
            (unknown.action, unknown.rule.clone()),
            (Action::Allow, None)
        );
        assert_eq!(t.decide(None, &[0; 6]).action, Action::Allow);
    }

    #[test]
    fn every_arch_gets_its_own_number() {
        let t = table(
            "rules:\n  - name: m\n    syscalls: [mkdir]\n    action: deny\n",
            NOBODY,
        );
        assert_eq!(t.decide(Some((0, 83)), &[0; 6]).action, Action::Deny);
        assert_eq!(t.decide(Some((1, 39)), &[0; 6]).action, Action::Deny);
        assert_eq!(t.decide(Some((1, 83)), &[0; 6]).action, Action::Log);
    }

    #[test]
    fn selectors_pick_rules_per_container() {
        let text = "rules:\n  - name: prod\n    match: {namespace: [prod-*], metadata: [team-a]}\n    syscalls: [mkdir]\n    action: deny\n";
        let prod = SelectorInput {
            namespace: "prod-1",
            metadata: "team-a",
            ..NOBODY
        };
        assert_eq!(
            table(text, prod).decide(Some((0, 83)), &[0; 6]).action,
            Action::Deny
        );
        assert_eq!(
            table(text, NOBODY).decide(Some((0, 83)), &[0; 6]).action,
            Action::Log
        );
    }
}
