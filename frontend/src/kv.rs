//! `key=value` option lists: one CSV record (Go's `encoding/csv`, as BuildKit
//! and buildx read `--mount`, `-o`, `--cache-to` values) of `key[=value]`
//! fields.

/// The fields of `s` as `(key, value)`; a field without `=` has no value.
/// The value is everything after the first `=` (`a=b=c` is `a`, `b=c`).
pub fn pairs(s: &str) -> Result<Vec<(String, Option<String>)>, String> {
    Ok(csv_fields(s)?
        .into_iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (f, None),
        })
        .collect())
}

/// Splits one CSV record (Go's `encoding/csv` rules: `"` quotes a field, `""` is
/// a quote inside one, a bare `"` elsewhere is an error).
pub fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') => {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            field.push('"');
                        } else {
                            break;
                        }
                    }
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv() {
        assert_eq!(csv_fields("a,b=c").unwrap(), ["a", "b=c"]);
        assert_eq!(csv_fields("\"a,b\",c").unwrap(), ["a,b", "c"]);
        assert_eq!(csv_fields("\"a\"\"b\"").unwrap(), ["a\"b"]);
        assert_eq!(csv_fields("").unwrap(), [""]);
        assert!(csv_fields("a\"b").is_err());
        assert!(csv_fields("\"ab").is_err());
        assert!(csv_fields("\"a\"b").is_err());
    }

    #[test]
    fn key_values() {
        let p = pairs("type=cache,ro,\"target=/a,b\",x=y=z").unwrap();
        assert_eq!(
            p,
            [
                ("type".to_owned(), Some("cache".to_owned())),
                ("ro".to_owned(), None),
                ("target".to_owned(), Some("/a,b".to_owned())),
                ("x".to_owned(), Some("y=z".to_owned())),
            ]
        );
        assert!(pairs("a\"b").is_err());
    }
}
