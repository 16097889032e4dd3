//! Symbolic file modes (`COPY --chmod=u=rwX,go=rX`), applied to each copied
//! file's own mode exactly as BuildKit does.
//!
//! BuildKit uses `github.com/tonistiigi/dchapes-mode`, a Go translation of BSD
//! `setmode(3)`, with a umask of 0. This is a port of the same algorithm (its
//! command list, not chmod(1)'s prose), so corner cases such as `=` with no
//! permissions, `X` on directories and `g=u` copies agree bit for bit.

const IS_UID: u16 = 0o4000;
const IS_GID: u16 = 0o2000;
const IS_TXT: u16 = 0o1000;
const IRWXU: u16 = 0o700;
const IRUSER: u16 = 0o400;
const IWUSER: u16 = 0o200;
const IXUSER: u16 = 0o100;
const IRWXG: u16 = 0o070;
const IRGROUP: u16 = 0o040;
const IWGROUP: u16 = 0o020;
const IXGROUP: u16 = 0o010;
const IRWXO: u16 = 0o007;
const IROTHER: u16 = 0o004;
const IWOTHER: u16 = 0o002;
const IXOTHER: u16 = 0o001;
const STANDARD_BITS: u16 = IS_UID | IS_GID | IRWXU | IRWXG | IRWXO;

const CMD2_CLEAR: u8 = 1;
const CMD2_SET: u8 = 2;
const CMD2_GBITS: u8 = 4;
const CMD2_OBITS: u8 = 8;
const CMD2_UBITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BitCmd {
    cmd: u8,
    cmd2: u8,
    bits: u16,
}

/// A parsed symbolic (or octal) mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeSet {
    cmds: Vec<BitCmd>,
}

/// A mode string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid file mode {0:?}")]
pub struct ModeError(pub String);

impl ModeSet {
    /// Parses `s` with a umask of 0, as BuildKit does.
    pub fn parse(s: &str) -> Result<ModeSet, ModeError> {
        let err = || ModeError(s.to_owned());
        let mut set = ModeSet { cmds: Vec::new() };
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(err());
        }
        if b[0].is_ascii_digit() {
            let v = u16::from_str_radix(s, 8).map_err(|_| err())?;
            if v & !(STANDARD_BITS | IS_TXT) != 0 {
                return Err(err());
            }
            set.add(b'=', STANDARD_BITS | IS_TXT, v, 0);
            return Ok(set);
        }
        let mask: u16 = !0;
        let mut i = 0;
        let mut equal_op_done = false;
        loop {
            let mut who: u16 = 0;
            loop {
                match b.get(i) {
                    None => return Err(err()),
                    Some(b'a') => who |= STANDARD_BITS,
                    Some(b'u') => who |= IS_UID | IRWXU,
                    Some(b'g') => who |= IS_GID | IRWXG,
                    Some(b'o') => who |= IRWXO,
                    Some(_) => break,
                }
                i += 1;
            }
            // getop:
            'getop: loop {
                let op = *b.get(i).ok_or_else(err)?;
                i += 1;
                match op {
                    b'+' | b'-' => {}
                    b'=' => equal_op_done = false,
                    _ => return Err(err()),
                }
                // `equal_op_done` is only read for `=`; initialise it for the others.
                if op != b'=' {
                    equal_op_done = false;
                }
                who &= !IS_TXT;
                let mut perm: u16 = 0;
                let mut perm_x: u16 = 0;
                loop {
                    let c = b.get(i).copied().unwrap_or(0);
                    match c {
                        b'r' => perm |= IRUSER | IRGROUP | IROTHER,
                        b's' => {
                            if who == 0 || who & !IRWXO != 0 {
                                perm |= IS_UID | IS_GID;
                            }
                        }
                        b't' => {
                            if who == 0 || who & !IRWXO != 0 {
                                who |= IS_TXT;
                                perm |= IS_TXT;
                            }
                        }
                        b'w' => perm |= IWUSER | IWGROUP | IWOTHER,
                        b'X' => {
                            if op != b'-' {
                                perm_x = IXUSER | IXGROUP | IXOTHER;
                            } else {
                                perm |= IXUSER | IXGROUP | IXOTHER;
                            }
                        }
                        b'x' => perm |= IXUSER | IXGROUP | IXOTHER,
                        b'u' | b'g' | b'o' => {
                            if perm != 0 {
                                set.add(op, who, perm, mask);
                                perm = 0;
                            }
                            if op == b'=' {
                                equal_op_done = true;
                            }
                            if perm_x != 0 {
                                set.add(b'X', who, perm_x, mask);
                                perm_x = 0;
                            }
                            set.add(c, who, u16::from(op), mask);
                        }
                        _ => {
                            if perm != 0 || (op == b'=' && !equal_op_done) {
                                set.add(op, who, perm, mask);
                            }
                            if perm_x != 0 {
                                set.add(b'X', who, perm_x, mask);
                            }
                            break;
                        }
                    }
                    i += 1;
                }
                match b.get(i) {
                    None => return Ok(set),
                    Some(b',') => {
                        i += 1;
                        break 'getop;
                    }
                    Some(_) => continue 'getop,
                }
            }
        }
    }

    fn add(&mut self, op: u8, who: u16, oparg: u16, mask: u16) {
        let mut c = BitCmd {
            cmd: 0,
            cmd2: 0,
            bits: 0,
        };
        let mut op = op;
        if op == b'=' {
            c.cmd = b'-';
            c.bits = if who != 0 { who } else { STANDARD_BITS };
            self.cmds.push(c);
            op = b'+';
        }
        match op {
            b'+' | b'-' | b'X' => {
                c.cmd = op;
                c.bits = if who != 0 { who & oparg } else { mask & oparg };
            }
            b'u' | b'g' | b'o' => {
                c.cmd = op;
                if who != 0 {
                    if who & IRUSER != 0 {
                        c.cmd2 |= CMD2_UBITS;
                    }
                    if who & IRGROUP != 0 {
                        c.cmd2 |= CMD2_GBITS;
                    }
                    if who & IROTHER != 0 {
                        c.cmd2 |= CMD2_OBITS;
                    }
                    c.bits = !0;
                } else {
                    c.cmd2 = CMD2_UBITS | CMD2_GBITS | CMD2_OBITS;
                    c.bits = mask;
                }
                match oparg {
                    x if x == u16::from(b'+') => c.cmd2 |= CMD2_SET,
                    x if x == u16::from(b'-') => c.cmd2 |= CMD2_CLEAR,
                    x if x == u16::from(b'=') => c.cmd2 |= CMD2_SET | CMD2_CLEAR,
                    _ => {}
                }
            }
            _ => return,
        }
        self.cmds.push(c);
    }

    /// The new permission bits (incl. setuid/setgid/sticky) for a file whose
    /// current mode is `mode` (`st_mode`, file type bits included). The file
    /// type bits of `mode` are kept.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        // Only the low 12 bits take part; the mask keeps the cast lossless.
        let omode = (mode & 0o7777) as u16;
        let mut newmode = omode;
        for c in &self.cmds {
            let common = |newmode: &mut u16, value: u16| {
                if c.cmd2 & CMD2_CLEAR != 0 {
                    let clrval = if c.cmd2 & CMD2_SET != 0 { IRWXO } else { value };
                    if c.cmd2 & CMD2_UBITS != 0 {
                        *newmode &= !((clrval << 6) & c.bits);
                    }
                    if c.cmd2 & CMD2_GBITS != 0 {
                        *newmode &= !((clrval << 3) & c.bits);
                    }
                    if c.cmd2 & CMD2_OBITS != 0 {
                        *newmode &= !(clrval & c.bits);
                    }
                }
                if c.cmd2 & CMD2_SET != 0 {
                    if c.cmd2 & CMD2_UBITS != 0 {
                        *newmode |= (value << 6) & c.bits;
                    }
                    if c.cmd2 & CMD2_GBITS != 0 {
                        *newmode |= (value << 3) & c.bits;
                    }
                    if c.cmd2 & CMD2_OBITS != 0 {
                        *newmode |= value & c.bits;
                    }
                }
            };
            match c.cmd {
                b'u' => {
                    let v = (newmode & IRWXU) >> 6;
                    common(&mut newmode, v);
                }
                b'g' => {
                    let v = (newmode & IRWXG) >> 3;
                    common(&mut newmode, v);
                }
                b'o' => {
                    let v = newmode & IRWXO;
                    common(&mut newmode, v);
                }
                b'+' => newmode |= c.bits,
                b'-' => newmode &= !c.bits,
                b'X' if omode & (IXUSER | IXGROUP | IXOTHER) != 0 || is_dir => {
                    newmode |= c.bits;
                }
                _ => {}
            }
        }
        (mode & !0o7777) | u32::from(newmode & 0o7777)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(s: &str, mode: u32, dir: bool) -> u32 {
        ModeSet::parse(s).unwrap().apply(mode, dir) & 0o7777
    }

    #[test]
    fn symbolic() {
        assert_eq!(ap("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(ap("u=rwX,go=rX", 0o700, false), 0o755);
        assert_eq!(ap("u=rwX,go=rX", 0o600, true), 0o755);
        assert_eq!(ap("+x", 0o644, false), 0o755);
        assert_eq!(ap("a-w", 0o666, false), 0o444);
        assert_eq!(ap("g=u", 0o640, false), 0o660);
        assert_eq!(ap("o=", 0o777, false), 0o770);
        assert_eq!(ap("u+s", 0o755, false), 0o4755);
        assert_eq!(ap("+t", 0o755, true), 0o1755);
        assert_eq!(ap("go-rwx", 0o777, false), 0o700);
        assert_eq!(ap("u=rw,g=r,o=", 0o777, false), 0o640);
        assert_eq!(ap("755", 0o600, false), 0o755);
        assert_eq!(ap("=r", 0o777, false), 0o444);
        // file type bits survive
        assert_eq!(
            ModeSet::parse("a=r").unwrap().apply(0o100777, false),
            0o100444
        );
    }

    #[test]
    fn errors() {
        for bad in ["", "u", "u*x", "rwx", "8", "u=r,", "77777"] {
            assert!(ModeSet::parse(bad).is_err(), "{bad}");
        }
    }
}
