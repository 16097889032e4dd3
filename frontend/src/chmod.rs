//! `COPY --chmod` values: octal bits or symbolic modes (`u=rwX,go=rX`).

use kiln_llb::op::Chmod;

use crate::quote::go_quote;

/// Parses a `--chmod` value as BuildKit does: octal up to 07777, otherwise a
/// symbolic mode in chmod(1) syntax.
pub fn parse(value: &str) -> Result<Chmod, String> {
    let non_octal = || {
        format!(
            "invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777"
        )
    };
    // A value that starts with a digit is a number (dchapes-mode's Parse):
    // anything but octal digits in it (`64a`, `8`) is BuildKit's
    // "should be octal" error, not a symbolic-mode error.
    if value.starts_with(|c: char| c.is_ascii_digit()) {
        if !value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(non_octal());
        }
        let n = u32::from_str_radix(value, 8).map_err(|_| non_octal())?;
        if n > 0o7777 {
            return Err(non_octal());
        }
        return Ok(Chmod::Octal(n));
    }
    check_symbolic(value)
        .map_err(|e| format!("invalid chmod parameter {}: {e}", go_quote(value)))?;
    Ok(Chmod::Symbolic(value.to_owned()))
}

/// `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`, comma-separated.
fn check_symbolic(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty mode");
    }
    for clause in s.split(',') {
        let rest = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        if rest.is_empty() {
            return Err("missing operator (+, - or =)");
        }
        let mut chars = rest.chars().peekable();
        while let Some(op) = chars.next() {
            if !matches!(op, '+' | '-' | '=') {
                return Err("expected +, - or =");
            }
            match chars.peek() {
                Some('u' | 'g' | 'o') => {
                    chars.next();
                }
                _ => {
                    while chars
                        .peek()
                        .is_some_and(|c| matches!(c, 'r' | 'w' | 'x' | 'X' | 's' | 't'))
                    {
                        chars.next();
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(parse("0644"), Ok(Chmod::Octal(0o644)));
        assert_eq!(parse("7777"), Ok(Chmod::Octal(0o7777)));
        assert!(parse("10000").is_err());
        assert!(parse("8").is_err());
        let octal = "it should be octal string and between 0 and 07777";
        assert!(parse("64a").unwrap_err().ends_with(octal));
        assert!(parse("0x1").unwrap_err().ends_with(octal));
        assert_eq!(
            parse("u=rwX,go=rX"),
            Ok(Chmod::Symbolic("u=rwX,go=rX".into()))
        );
        assert_eq!(parse("+x"), Ok(Chmod::Symbolic("+x".into())));
        assert_eq!(parse("a-w"), Ok(Chmod::Symbolic("a-w".into())));
        assert_eq!(parse("g=u"), Ok(Chmod::Symbolic("g=u".into())));
        assert!(parse("u").is_err());
        assert!(parse("u*x").is_err());
        assert!(parse("").is_err());
        assert!(parse("rwx").is_err());
    }
}
