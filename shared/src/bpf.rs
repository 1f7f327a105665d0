//! An exact, allocation-free interpreter of seccomp's classic BPF, for evaluating a filter on a notification's `seccomp_data`.
//!
//! It follows the kernel's semantics for the instructions `seccomp_check_filter`
//! accepts (32-bit A and X, 16 scratch words, forward jumps only, `BPF_LD|BPF_W|BPF_ABS`
//! reading `struct seccomp_data` in host byte order). Whatever the kernel would refuse
//! to load, and running off the program's end, yields `SECCOMP_RET_KILL_PROCESS`: a
//! program this module cannot vouch for answers the strictest way.

/// `struct seccomp_data` as a filter sees it.
pub type SeccompData = libc::seccomp_data;

/// Size of `struct seccomp_data`, which `BPF_LEN` loads.
const DATA_LEN: u32 = 64;
/// Offset of the first field a filter can only read to decide on more than (arch, nr).
const IP_OFFSET: u32 = 8;
/// `BPF_MEMWORDS`.
const MEM_WORDS: usize = 16;
/// `BPF_MAXINSNS`.
pub(crate) const MAX_INSNS: usize = 4096;

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0x0000_0000;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_ACTION_FULL`.
pub const RET_ACTION: u32 = 0xffff_0000;
/// `SECCOMP_RET_DATA`.
pub const RET_DATA: u32 = 0x0000_ffff;

// Instruction classes and fields (linux/filter.h, linux/bpf_common.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const K: u16 = 0x00;
const X: u16 = 0x08;
const A: u16 = 0x10;
const ADD: u16 = 0x00;
const SUB: u16 = 0x10;
const MUL: u16 = 0x20;
const DIV: u16 = 0x30;
const OR: u16 = 0x40;
const AND: u16 = 0x50;
const LSH: u16 = 0x60;
const RSH: u16 = 0x70;
const NEG: u16 = 0x80;
const XOR: u16 = 0xa0;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const JSET: u16 = 0x40;
const TAX: u16 = 0x00;
const TXA: u16 = 0x80;

/// One `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl Insn {
    pub const fn new(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }

    /// `BPF_LD|BPF_W|BPF_ABS k`.
    pub const fn load(offset: u32) -> Insn {
        Insn::new(LD | W | ABS, 0, 0, offset)
    }

    /// `BPF_RET|BPF_K k`.
    pub const fn ret(value: u32) -> Insn {
        Insn::new(RET | K, 0, 0, value)
    }

    /// The value a `BPF_RET|BPF_K` returns; None for every other instruction.
    pub fn returns(&self) -> Option<u32> {
        (self.code == RET | K).then_some(self.k)
    }

    /// `BPF_JMP|BPF_JA k`.
    pub const fn jump(skip: u32) -> Insn {
        Insn::new(JMP | JA, 0, 0, skip)
    }

    /// `BPF_JMP|BPF_JEQ|BPF_K`.
    pub const fn jeq(k: u32, jt: u8, jf: u8) -> Insn {
        Insn::new(JMP | JEQ | K, jt, jf, k)
    }

    /// `BPF_JMP|BPF_JGT|BPF_K`.
    pub const fn jgt(k: u32, jt: u8, jf: u8) -> Insn {
        Insn::new(JMP | JGT | K, jt, jf, k)
    }

    /// `BPF_JMP|BPF_JSET|BPF_K`.
    pub const fn jset(k: u32, jt: u8, jf: u8) -> Insn {
        Insn::new(JMP | JSET | K, jt, jf, k)
    }
}

/// Reads a program as `seccomp_export_bpf` writes it: `struct sock_filter`s in host byte order.
pub fn parse(bytes: &[u8]) -> Option<Vec<Insn>> {
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| Insn {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// The 32-bit word at `offset` of `data`, as a native-endian load sees it.
#[inline]
fn word(data: &SeccompData, offset: u32) -> Option<u32> {
    if !offset.is_multiple_of(4) || offset >= DATA_LEN {
        return None;
    }
    Some(match offset {
        0 => data.nr.cast_unsigned(),
        4 => data.arch,
        _ => {
            let field = if offset < 16 {
                data.instruction_pointer
            } else {
                data.args[(offset as usize - 16) / 8]
            };
            let low_half_first = cfg!(target_endian = "little");
            let half = if offset.is_multiple_of(8) == low_half_first {
                field
            } else {
                field >> 32
            };
            #[allow(
                clippy::cast_possible_truncation,
                reason = "a BPF load reads one 32-bit half"
            )]
            let half = half as u32;
            half
        }
    })
}

/// Where a run stands: the next instruction and the registers (scratch memory is not
/// part of it: a run is paused only before anything was stored there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pc: u16,
    a: u32,
    x: u32,
}

impl State {
    /// The start of a program.
    pub const START: State = State { pc: 0, a: 0, x: 0 };
}

/// What a run on a syscall's (arch, nr) alone found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// The program answers this without looking at anything else.
    Done(u32),
    /// The program reads the instruction pointer or an argument here; resuming from
    /// this state with the real data gives the exact answer.
    Resume(State),
}

/// Runs `program` on `data`; returns the filter's `SECCOMP_RET_*` value.
#[inline]
pub fn run(program: &[Insn], data: &SeccompData) -> u32 {
    resume(program, data, State::START)
}

/// Runs `program` from `state` (see [`prepare`]) on `data`.
#[inline]
pub fn resume(program: &[Insn], data: &SeccompData, state: State) -> u32 {
    match execute(program, data, state, false) {
        Some(Stop::Ret(ret)) => ret,
        _ => RET_KILL_PROCESS,
    }
}

/// Runs `program` on the (arch, nr) of `data` up to the first read of anything else.
/// Everything before that read depends on (arch, nr) alone, so the run can stop
/// there and later resume for each call.
pub fn prepare(program: &[Insn], data: &SeccompData) -> Prepared {
    match execute(program, data, State::START, true) {
        Some(Stop::Ret(ret)) => Prepared::Done(ret),
        Some(Stop::Paused(state)) => Prepared::Resume(state),
        None => Prepared::Done(RET_KILL_PROCESS),
    }
}

enum Stop {
    Ret(u32),
    Paused(State),
}

#[inline]
fn execute(program: &[Insn], data: &SeccompData, state: State, pause: bool) -> Option<Stop> {
    if program.is_empty() || program.len() > MAX_INSNS {
        return None;
    }
    let mut a = state.a;
    let mut x = state.x;
    let mut mem = [0u32; MEM_WORDS];
    let mut stored = false;
    let mut pc = usize::from(state.pc);
    loop {
        let insn = *program.get(pc)?;
        pc += 1;
        if insn.code > 0xff {
            return None;
        }
        let k = insn.k;
        match insn.code {
            c if c == LD | W | ABS => {
                if pause && k >= IP_OFFSET {
                    // MAX_INSNS fits in a u16; with scratch memory in use, start over.
                    let at = u16::try_from(pc - 1).ok()?;
                    return Some(Stop::Paused(if stored {
                        State::START
                    } else {
                        State { pc: at, a, x }
                    }));
                }
                a = word(data, k)?;
            }
            c if c == LD | W | LEN => a = DATA_LEN,
            c if c == LDX | W | LEN => x = DATA_LEN,
            c if c == LD | IMM => a = k,
            c if c == LDX | IMM => x = k,
            c if c == LD | MEM => a = *mem.get(k as usize)?,
            c if c == LDX | MEM => x = *mem.get(k as usize)?,
            c if c == ST => {
                *mem.get_mut(k as usize)? = a;
                stored = true;
            }
            c if c == STX => {
                *mem.get_mut(k as usize)? = x;
                stored = true;
            }
            c if c == MISC | TAX => x = a,
            c if c == MISC | TXA => a = x,
            c if c == RET | K => return Some(Stop::Ret(k)),
            c if c == RET | A => return Some(Stop::Ret(a)),
            c if c == ALU | NEG => a = a.wrapping_neg(),
            c if c & 0x07 == ALU => {
                let src = match c & 0x08 {
                    X => x,
                    _ => k,
                };
                a = match c & 0xf0 {
                    ADD => a.wrapping_add(src),
                    SUB => a.wrapping_sub(src),
                    MUL => a.wrapping_mul(src),
                    // The kernel refuses a constant 0 divisor; a 0 in X ends the run with 0.
                    DIV if src == 0 && c & 0x08 == X => return Some(Stop::Ret(0)),
                    DIV if src == 0 => return None,
                    DIV => a / src,
                    AND => a & src,
                    OR => a | src,
                    XOR => a ^ src,
                    LSH | RSH if c & 0x08 == K && src >= 32 => return None,
                    LSH => a.wrapping_shl(src),
                    RSH => a.wrapping_shr(src),
                    _ => return None,
                };
            }
            c if c == JMP | JA => {
                pc = pc.checked_add(k as usize)?;
            }
            c if c & 0x07 == JMP => {
                let src = match c & 0x08 {
                    X => x,
                    _ => k,
                };
                let taken = match c & 0xf0 {
                    JEQ => a == src,
                    JGT => a > src,
                    JGE => a >= src,
                    JSET => a & src != 0,
                    _ => return None,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(nr: i32, arch: u32, args: [u64; 6]) -> SeccompData {
        SeccompData {
            nr,
            arch,
            instruction_pointer: 0x1122_3344_5566_7788,
            args,
        }
    }

    fn i(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn::new(code, jt, jf, k)
    }

    #[test]
    fn loads_every_field_in_host_order() {
        let d = data(
            -3,
            0xc000_003e,
            [0xaaaa_bbbb_0000_0001, 2, 3, 4, 5, 0xffff_ffff_0000_0006],
        );
        let at = |offset| run(&[Insn::load(offset), i(RET | A, 0, 0, 0)], &d);
        assert_eq!(at(0), (-3i32).cast_unsigned());
        assert_eq!(at(4), 0xc000_003e);
        let (low, high) = if cfg!(target_endian = "little") {
            (0, 4)
        } else {
            (4, 0)
        };
        assert_eq!(at(8 + low), 0x5566_7788);
        assert_eq!(at(8 + high), 0x1122_3344);
        assert_eq!(at(16 + low), 1);
        assert_eq!(at(16 + high), 0xaaaa_bbbb);
        assert_eq!(at(56 + low), 6);
        assert_eq!(at(56 + high), 0xffff_ffff);
        // Out of the struct, or unaligned: the kernel refuses such a program.
        assert_eq!(at(64), RET_KILL_PROCESS);
        assert_eq!(at(2), RET_KILL_PROCESS);
        let len = [i(LD | W | LEN, 0, 0, 0), i(RET | A, 0, 0, 0)];
        assert_eq!(run(&len, &d), 64);
        let lenx = [
            i(LDX | W | LEN, 0, 0, 0),
            i(MISC | TXA, 0, 0, 0),
            i(RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&lenx, &d), 64);
    }

    #[test]
    fn a_run_pauses_where_it_needs_more_than_arch_and_nr() {
        let d = data(1, 2, [0; 6]);
        let arch_nr = [Insn::load(4), Insn::load(0), Insn::ret(RET_ALLOW)];
        assert_eq!(prepare(&arch_nr, &d), Prepared::Done(RET_ALLOW));
        let ip = [Insn::load(8), Insn::ret(RET_ALLOW)];
        assert_eq!(prepare(&ip, &d), Prepared::Resume(State::START));
        // nr 1 goes to the argument check; resuming there reads the real argument.
        let arg = [
            Insn::load(0),
            i(LDX | IMM, 0, 0, 5),
            Insn::jeq(1, 0, 3),
            Insn::load(16),
            Insn::jeq(7, 0, 1),
            i(RET | X, 0, 0, 0),
            Insn::ret(RET_ALLOW),
        ];
        let Prepared::Resume(state) = prepare(&arg, &d) else {
            panic!("the argument check needs the argument");
        };
        assert_eq!(state, State { pc: 3, a: 1, x: 5 });
        assert_eq!(
            resume(&arg, &data(1, 2, [7, 0, 0, 0, 0, 0]), state),
            RET_KILL_PROCESS,
            "RET|X is not seccomp's"
        );
        assert_eq!(
            resume(&arg, &data(1, 2, [8, 0, 0, 0, 0, 0]), state),
            RET_ALLOW
        );
        assert_eq!(
            prepare(&arg, &data(2, 2, [7; 6])),
            Prepared::Done(RET_ALLOW)
        );
        // With scratch memory in use, a resume starts over.
        let stored = [
            Insn::load(0),
            i(ST, 0, 0, 0),
            Insn::load(16),
            i(LD | MEM, 0, 0, 0),
            i(RET | A, 0, 0, 0),
        ];
        assert_eq!(prepare(&stored, &d), Prepared::Resume(State::START));
        assert_eq!(resume(&stored, &d, State::START), 1);
    }

    #[test]
    fn alu_is_32_bit_and_wraps() {
        let d = data(0, 0, [0; 6]);
        let alu = |op: u16, a: u32, k: u32| {
            run(
                &[
                    i(LD | IMM, 0, 0, a),
                    i(ALU | op | K, 0, 0, k),
                    i(RET | A, 0, 0, 0),
                ],
                &d,
            )
        };
        let alu_x = |op: u16, a: u32, x: u32| {
            run(
                &[
                    i(LD | IMM, 0, 0, a),
                    i(LDX | IMM, 0, 0, x),
                    i(ALU | op | X, 0, 0, 0),
                    i(RET | A, 0, 0, 0),
                ],
                &d,
            )
        };
        for (op, a, src, want) in [
            (ADD, u32::MAX, 2, 1),
            (SUB, 1, 2, u32::MAX),
            (MUL, 0x8000_0000, 2, 0),
            (DIV, 7, 2, 3),
            (AND, 0xf0f0, 0xff00, 0xf000),
            (OR, 0xf0f0, 0x0f00, 0xfff0),
            (XOR, 0xff, 0x0f, 0xf0),
            (LSH, 1, 31, 0x8000_0000),
            (RSH, 0x8000_0000, 31, 1),
        ] {
            assert_eq!(alu(op, a, src), want, "{op:#x} K");
            assert_eq!(alu_x(op, a, src), want, "{op:#x} X");
        }
        let neg = [
            i(LD | IMM, 0, 0, 1),
            i(ALU | NEG, 0, 0, 0),
            i(RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&neg, &d), u32::MAX);
        // Division by a zero X ends the filter with 0 (SECCOMP_RET_KILL_THREAD), as in the kernel.
        assert_eq!(alu_x(DIV, 1, 0), RET_KILL_THREAD);
        // What the kernel refuses to load is the strictest answer.
        assert_eq!(alu(DIV, 1, 0), RET_KILL_PROCESS);
        assert_eq!(alu(LSH, 1, 32), RET_KILL_PROCESS);
        assert_eq!(alu(0xb0, 1, 1), RET_KILL_PROCESS);
    }

    #[test]
    fn scratch_memory_and_register_moves() {
        let d = data(0, 0, [0; 6]);
        let program = [
            i(LD | IMM, 0, 0, 7),
            i(ST, 0, 0, 15),
            i(LDX | IMM, 0, 0, 9),
            i(STX, 0, 0, 0),
            i(LD | MEM, 0, 0, 0),
            i(LDX | MEM, 0, 0, 15),
            i(ALU | SUB | X, 0, 0, 0),
            i(MISC | TAX, 0, 0, 0),
            i(LD | IMM, 0, 0, 0),
            i(MISC | TXA, 0, 0, 0),
            i(RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&program, &d), 2);
        assert_eq!(
            run(&[i(ST, 0, 0, 16), Insn::ret(RET_ALLOW)], &d),
            RET_KILL_PROCESS
        );
        assert_eq!(
            run(&[i(LD | MEM, 0, 0, 16), Insn::ret(RET_ALLOW)], &d),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn jumps_with_k_and_x() {
        let d = data(5, 0, [0; 6]);
        let cond = |op: u16, k: u32| {
            run(
                &[
                    Insn::load(0),
                    i(JMP | op | K, 1, 0, k),
                    Insn::ret(1),
                    Insn::ret(2),
                ],
                &d,
            )
        };
        let cond_x = |op: u16, x: u32| {
            run(
                &[
                    Insn::load(0),
                    i(LDX | IMM, 0, 0, x),
                    i(JMP | op | X, 1, 0, 0),
                    Insn::ret(1),
                    Insn::ret(2),
                ],
                &d,
            )
        };
        assert_eq!((cond(JEQ, 5), cond(JEQ, 4)), (2, 1));
        assert_eq!((cond(JGT, 4), cond(JGT, 5)), (2, 1));
        assert_eq!((cond(JGE, 5), cond(JGE, 6)), (2, 1));
        assert_eq!((cond(JSET, 4), cond(JSET, 2)), (2, 1));
        assert_eq!((cond_x(JEQ, 5), cond_x(JEQ, 4)), (2, 1));
        assert_eq!((cond_x(JGT, 4), cond_x(JGT, 5)), (2, 1));
        assert_eq!((cond_x(JGE, 5), cond_x(JGE, 6)), (2, 1));
        assert_eq!((cond_x(JSET, 1), cond_x(JSET, 2)), (2, 1));
        // Unsigned comparisons.
        let neg = data(-1, 0, [0; 6]);
        let gt = [
            Insn::load(0),
            Insn::jgt(5, 0, 1),
            Insn::ret(1),
            Insn::ret(2),
        ];
        assert_eq!(run(&gt, &neg), 1);
        let ja = [Insn::jump(1), Insn::ret(1), Insn::ret(2)];
        assert_eq!(run(&ja, &d), 2);
    }

    #[test]
    fn invalid_programs_kill() {
        let d = data(0, 0, [0; 6]);
        assert_eq!(run(&[], &d), RET_KILL_PROCESS);
        assert_eq!(
            run(&[Insn::load(0)], &d),
            RET_KILL_PROCESS,
            "no RET at the end"
        );
        assert_eq!(run(&[Insn::jump(5), Insn::ret(0)], &d), RET_KILL_PROCESS);
        assert_eq!(
            run(&[Insn::jeq(0, 3, 0), Insn::ret(RET_ALLOW)], &d),
            RET_KILL_PROCESS
        );
        assert_eq!(run(&[i(0x15 | 0x100, 0, 0, 0)], &d), RET_KILL_PROCESS);
        // BPF_LD|BPF_H|BPF_ABS: seccomp only takes word loads.
        assert_eq!(
            run(&[i(LD | 0x08 | ABS, 0, 0, 0), Insn::ret(0)], &d),
            RET_KILL_PROCESS
        );
        let long = vec![Insn::ret(RET_ALLOW); MAX_INSNS + 1];
        assert_eq!(run(&long, &d), RET_KILL_PROCESS);
    }

    #[test]
    fn parses_sock_filters_in_host_order() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(LD | W | ABS).to_ne_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&4u32.to_ne_bytes());
        bytes.extend_from_slice(&(JMP | JEQ | K).to_ne_bytes());
        bytes.extend_from_slice(&[1, 2]);
        bytes.extend_from_slice(&0xc000_003eu32.to_ne_bytes());
        assert_eq!(
            parse(&bytes).unwrap(),
            [Insn::load(4), Insn::jeq(0xc000_003e, 1, 2)]
        );
        assert!(parse(&[0; 7]).is_none());
    }
}
