//! The device allow-list of a RUN step on cgroup v2: v2 has no `devices`
//! controller; the kernel asks an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the group instead (what runc's
//! `devicefilter` generates for the same rules). The program is generated
//! here from [`DEVICE_RULES`], loaded and attached with
//! `bpf(2)` (`sys::attach_device_program`).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::OnceLock;

/// runc's default device rules (`specconv.AllowedDevices`, which BuildKit's
/// steps get): any node may be made (`m`), but only these may be opened:
/// null, zero, full, random, urandom, tty, the ptmx multiplexer and the
/// pseudo-terminals. A node for a host disk can be made and not read.
pub(crate) const DEVICE_RULES: [&str; 10] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:8 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:5 rwm",
    "c 1:9 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// One rule: type (`b`, `c`, `a`), major and minor (`None`: any), and the
/// access it allows (`BPF_DEVCG_ACC_*` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    kind: Option<u32>,
    major: Option<u32>,
    minor: Option<u32>,
    access: u32,
}

const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;

/// Parses a rule in the v1 `devices.allow` syntax (`c 1:3 rwm`, `b *:* m`).
fn parse(rule: &str) -> Option<Rule> {
    let mut w = rule.split_whitespace();
    let kind = match w.next()? {
        "a" => None,
        "b" => Some(DEV_BLOCK),
        "c" => Some(DEV_CHAR),
        _ => return None,
    };
    let (maj, min) = w.next()?.split_once(':')?;
    let num = |s: &str| -> Option<Option<u32>> {
        if s == "*" {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    };
    let mut access = 0;
    for c in w.next()?.chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return None,
        };
    }
    Some(Rule {
        kind,
        major: num(maj)?,
        minor: num(min)?,
        access,
    })
}

/// eBPF opcodes (linux/bpf.h, linux/bpf_common.h).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND64_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH64_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    // dst_reg in the low nibble, src_reg in the high one (little endian).
    b[1] = (dst & 0xf) | ((src & 0xf) << 4);
    b[2..4].copy_from_slice(&off.to_ne_bytes());
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    b
}

/// The program for `rules` (v1 syntax): allow (return 1) when a rule covers
/// the request's type, major, minor and every access bit asked for; deny
/// (return 0) otherwise. `struct bpf_cgroup_dev_ctx` is `{access_type =
/// access << 16 | type, major, minor}` (u32 each).
pub(crate) fn program(rules: &[&str]) -> Result<Vec<u8>, String> {
    let rules: Vec<Rule> = rules
        .iter()
        .map(|r| parse(r).ok_or_else(|| format!("bad device rule {r:?}")))
        .collect::<Result<_, _>>()?;
    let mut p: Vec<[u8; 8]> = vec![
        insn(LDX_W, 2, 1, 0, 0),        // r2 = access_type
        insn(AND64_K, 2, 0, 0, 0xffff), // r2 = type
        insn(LDX_W, 3, 1, 0, 0),        // r3 = access_type
        insn(RSH64_K, 3, 0, 0, 16),     // r3 = access
        insn(LDX_W, 4, 1, 4, 0),        // r4 = major
        insn(LDX_W, 5, 1, 8, 0),        // r5 = minor
    ];
    for r in rules {
        let mut block: Vec<(u8, u8, u8, i32)> = Vec::new(); // (code, dst, src, imm); jumps to next
        if let Some(k) = r.kind {
            block.push((JNE_K, 2, 0, k as i32));
        }
        if r.access != ACC_MKNOD | ACC_READ | ACC_WRITE {
            block.push((MOV64_X, 1, 3, 0)); // r1 = access
            block.push((AND64_K, 1, 0, r.access as i32)); // r1 &= allowed
            block.push((JNE_X, 1, 3, 0)); // asked for more than allowed
        }
        if let Some(m) = r.major {
            block.push((JNE_K, 4, 0, m as i32));
        }
        if let Some(m) = r.minor {
            block.push((JNE_K, 5, 0, m as i32));
        }
        // Then: r0 = 1; exit.
        let len = block.len() + 2;
        for (i, (code, dst, src, imm)) in block.into_iter().enumerate() {
            let off = if code == JNE_K || code == JNE_X {
                // To the first instruction after this rule's block.
                (len - i - 1) as i16
            } else {
                0
            };
            p.push(insn(code, dst, src, off, imm));
        }
        p.push(insn(MOV64_K, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    Ok(p.concat())
}

/// Attaches the device program of [`DEVICE_RULES`] to the v2
/// group `dir`. The program is generated and loaded (verified) once per
/// process; each step's group gets an attachment.
pub(crate) fn attach_v2(dir: &Path) -> Result<(), String> {
    static PROG: OnceLock<Result<OwnedFd, String>> = OnceLock::new();
    let prog = PROG
        .get_or_init(|| {
            let insns = program(&DEVICE_RULES)?;
            crate::sys::load_device_program(&insns)
                .map_err(|e| format!("loading the device program (eBPF, cgroup v2): {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)?;
    let group = std::fs::File::open(dir).map_err(|e| format!("opening {}: {e}", dir.display()))?;
    crate::sys::attach_device_program(prog, &group).map_err(|e| {
        format!(
            "attaching the device program (eBPF, cgroup v2) to {}: {e}",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        assert_eq!(
            parse("c 1:3 rwm"),
            Some(Rule {
                kind: Some(DEV_CHAR),
                major: Some(1),
                minor: Some(3),
                access: 7
            })
        );
        assert_eq!(
            parse("b *:* m"),
            Some(Rule {
                kind: Some(DEV_BLOCK),
                major: None,
                minor: None,
                access: ACC_MKNOD
            })
        );
        assert_eq!(parse("x 1:2 r"), None);
        assert_eq!(parse("c 1:2 q"), None);
    }

    /// Runs the program the way the kernel would, on one request.
    fn eval(prog: &[u8], kind: u32, major: u32, minor: u32, access: u32) -> u64 {
        let ctx = [access << 16 | kind, major, minor];
        let mut reg = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = &prog[pc * 8..pc * 8 + 8];
            let (code, dst, src) = (i[0], (i[1] & 0xf) as usize, (i[1] >> 4) as usize);
            let off = i16::from_ne_bytes([i[2], i[3]]);
            let imm = i32::from_ne_bytes([i[4], i[5], i[6], i[7]]) as i64 as u64;
            pc += 1;
            match code {
                LDX_W => reg[dst] = u64::from(ctx[off as usize / 4]),
                AND64_K => reg[dst] &= imm,
                RSH64_K => reg[dst] >>= imm,
                MOV64_X => reg[dst] = reg[src],
                MOV64_K => reg[dst] = imm,
                JNE_K if reg[dst] != imm => pc = (pc as i64 + i64::from(off)) as usize,
                JNE_X if reg[dst] != reg[src] => pc = (pc as i64 + i64::from(off)) as usize,
                JNE_K | JNE_X => {}
                EXIT => return reg[0],
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn runc_rules_as_a_program() {
        let p = program(&DEVICE_RULES).unwrap();
        // Any node may be made, only the allowed ones opened.
        assert_eq!(eval(&p, DEV_BLOCK, 7, 0, ACC_MKNOD), 1);
        assert_eq!(eval(&p, DEV_BLOCK, 7, 0, ACC_READ), 0);
        assert_eq!(eval(&p, DEV_BLOCK, 8, 0, ACC_READ | ACC_WRITE), 0);
        assert_eq!(eval(&p, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE), 1);
        assert_eq!(eval(&p, DEV_CHAR, 1, 9, ACC_READ), 1);
        assert_eq!(eval(&p, DEV_CHAR, 136, 4, ACC_READ | ACC_WRITE), 1);
        assert_eq!(eval(&p, DEV_CHAR, 5, 2, ACC_READ), 1);
        assert_eq!(eval(&p, DEV_CHAR, 1, 1, ACC_READ), 0); // /dev/mem
        assert_eq!(eval(&p, DEV_CHAR, 10, 200, ACC_READ), 0); // tun
        assert_eq!(eval(&p, DEV_CHAR, 4, 1, ACC_WRITE), 0); // a host tty
    }
}
