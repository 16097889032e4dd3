//! "Did you mean …?" for misspelled instructions, flags and stage names.

/// The candidate closest to `word` by edit distance, if it is close enough to be
/// a likely typo (distance below 3, case-insensitive).
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let word = word.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = levenshtein(&word, &c.to_lowercase());
        if d == 0 {
            continue;
        }
        if d < 3 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words() {
        assert_eq!(did_you_mean("mout", ["mount", "network"]), Some("mount"));
        assert_eq!(did_you_mean("RUNN", ["run", "copy"]), Some("run"));
        assert_eq!(did_you_mean("zzzzzz", ["run", "copy"]), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
