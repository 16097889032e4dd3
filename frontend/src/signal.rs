//! STOPSIGNAL values, checked as moby's `signal.ParseSignal` checks them on Linux.

const SIGNALS: [&str; 31] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM",
];
const MORE_SIGNALS: [&str; 3] = ["WINCH", "XCPU", "XFSZ"];

/// Whether `raw` names a signal: a non-zero number, or a name with or without
/// `SIG`, case-insensitive (`SIGTERM`, `term`, `RTMIN+3`).
pub fn check(raw: &str) -> Result<(), String> {
    if let Ok(n) = raw.parse::<i64>() {
        if n == 0 {
            return Err(format!("invalid signal: {raw}"));
        }
        return Ok(());
    }
    let upper = raw.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let known = SIGNALS.contains(&name)
        || MORE_SIGNALS.contains(&name)
        || name == "RTMIN"
        || name == "RTMAX"
        || rt_offset(name, "RTMIN+").is_some_and(|n| (1..=15).contains(&n))
        || rt_offset(name, "RTMAX-").is_some_and(|n| (1..=14).contains(&n));
    if known {
        Ok(())
    } else {
        Err(format!("invalid signal: {raw}"))
    }
}

fn rt_offset(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn signals() {
        for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3", "RTMAX-1", "sigwinch"] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in ["0", "SIGFOO", "", "RTMIN+16"] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
