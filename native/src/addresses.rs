//! `_detectors.find_emails`, `find_ibans` and `find_ipv6`, natively.
//!
//! The Python functions are the reference and this file follows them step by step
//! (their patterns written out as the possessive runs they are). Every class in these
//! patterns is ASCII; what is not decided here goes back to Python: an e-mail whose
//! `scheme://` check would read a non-ASCII character (Unicode whitespace), and every
//! IPv6 candidate (the `ipaddress` module decides what is an address).

use std::collections::HashMap;

use memchr::memchr_iter;

use crate::text::{is_str_space, run, run_back, Event, Text, WORD};

/// `[A-Za-z0-9_]`
fn word(b: u8) -> bool {
    WORD[b as usize]
}

// ----------------------------------------------------------------- email ---

pub struct EmailRules {
    /// `_NOT_TLDS`: file extensions that look like a domain's last label
    pub not_tlds: Vec<Vec<u8>>,
}

/// `_EMAIL_DOMAIN` at the `@` at `at`: the end of the domain group, or None.
/// `@([A-Za-z0-9\-]{1,63}+(?:\.[A-Za-z0-9\-]{1,63}+){1,8}+)`
fn email_domain(raw: &[u8], at: usize) -> Option<usize> {
    let label = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
    let first = run(raw, at + 1, 63, label);
    if first == 0 {
        return None;
    }
    let mut end = at + 1 + first;
    let mut labels = 0;
    while labels < 8 && raw.get(end) == Some(&b'.') {
        let n = run(raw, end + 1, 63, label);
        if n == 0 {
            break;
        }
        end += 1 + n;
        labels += 1;
    }
    (labels >= 1).then_some(end)
}

pub fn find_emails(text: &Text, rules: &EmailRules) -> Vec<Event> {
    let raw: &[u8] = &text.raw;
    let mut events = Vec::new();
    let mut pos = 0;
    for at in memchr_iter(b'@', raw) {
        if at < pos {
            continue; // finditer resumes after the previous match
        }
        let Some(end) = email_domain(raw, at) else {
            continue;
        };
        pos = end;
        match email_at(text, rules, at, end) {
            Check::Found(start) => events.push(Event::Found {
                kind: "email",
                start,
                end,
                confidence: 0.95,
            }),
            Check::Python => events.push(Event::HandBack {
                start: at,
                end: at,
                tag: 0,
            }),
            Check::No => {}
        }
    }
    events
}

enum Check {
    Found(usize),
    Python,
    No,
}

/// `find_emails`'s checks for the domain match `at..end`.
fn email_at(text: &Text, rules: &EmailRules, at: usize, end: usize) -> Check {
    let raw: &[u8] = &text.raw;
    let local_char =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-');
    let back = run_back(raw, at, 65, local_char);
    if back == 0 || back > 64 {
        return Check::No;
    }
    let mut start = at - back;
    while start < at && matches!(raw[start], b'.' | b'-' | b'+') {
        start += 1;
    }
    let local = &raw[start..at];
    if local.is_empty() || local[local.len() - 1] == b'.' || local.windows(2).any(|w| w == b"..") {
        return Check::No;
    }
    // user:password@host inside a URL is a credential, not an address
    let lo = start.saturating_sub(256);
    if let Some(scheme) = (lo..start.saturating_sub(2))
        .rev()
        .find(|&i| &raw[i..i + 3] == b"://")
    {
        if !text.ascii_between(scheme, start) {
            return Check::Python; // Unicode whitespace is Python's to judge
        }
        if !raw[scheme..start].iter().any(|&b| is_str_space(b)) {
            return Check::No;
        }
    }
    let domain = &raw[at + 1..end];
    let tld = &domain[domain.iter().rposition(|&b| b == b'.').map_or(0, |i| i + 1)..];
    if !((2..=24).contains(&tld.len())
        && (tld.iter().all(u8::is_ascii_alphabetic) || tld.starts_with(b"xn--")))
    {
        return Check::No;
    }
    let tld_lower = tld.to_ascii_lowercase();
    let bad_label = matches!(domain[0], b'.' | b'-')
        || matches!(domain[domain.len() - 1], b'.' | b'-')
        || domain
            .windows(2)
            .any(|w| w == b".." || w == b".-" || w == b"-.");
    if rules.not_tlds.contains(&tld_lower) || bad_label {
        return Check::No;
    }
    if raw.get(end) == Some(&b':') && !matches!(raw.get(end + 1), None | Some(b' ')) {
        return Check::No; // git@host:org/repo, user@host:/path
    }
    if raw.get(end).is_some_and(|&b| word(b)) {
        return Check::No;
    }
    Check::Found(start)
}

// ------------------------------------------------------------------ IBAN ---

pub struct IbanRules {
    /// `_IBAN_LENGTHS`: the registry's length per country code
    pub lengths: HashMap<[u8; 2], usize>,
}

/// `_IBAN` at `t`: `[A-Z](?<![A-Za-z0-9_][A-Z])[A-Z][0-9]{2}(?:\ ?[A-Z0-9]{4}){2,7}+(?:\ ?[A-Z0-9]{1,3})?`
#[inline(never)] // out of the loop over every character (see tokens::dispatch)
fn iban_match(raw: &[u8], t: usize) -> Option<usize> {
    let class = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let at = |i: usize| raw.get(i).copied().unwrap_or(0);
    if !(at(t).is_ascii_uppercase()
        && at(t + 1).is_ascii_uppercase()
        && at(t + 2).is_ascii_digit()
        && at(t + 3).is_ascii_digit())
    {
        return None;
    }
    if t > 0 && word(raw[t - 1]) {
        return None;
    }
    let mut end = t + 4;
    let mut groups = 0;
    while groups < 7 {
        let space = usize::from(at(end) == b' ');
        if run(raw, end + space, 4, class) != 4 {
            break;
        }
        end += space + 4;
        groups += 1;
    }
    if groups < 2 {
        return None;
    }
    let space = usize::from(at(end) == b' ');
    let tail = run(raw, end + space, 3, class);
    if tail >= 1 {
        end += space + tail;
    }
    Some(end)
}

pub fn find_ibans(text: &Text, rules: &IbanRules) -> Vec<Event> {
    let raw: &[u8] = &text.raw;
    let mut events = Vec::new();
    // `_IBAN_SKELETON`: "AA11" (two capitals, two digits) not after a letter, digit or
    // "_" (what the skeleton view maps to 1, a, A), so only where a word starts; and
    // finditer resumes after a match, which is inside that word (no other start there)
    // a capital that starts a word is rare, so the one branch on it is predictable
    let mut after_word = false;
    for (t, &first) in raw.iter().enumerate() {
        let starts = first.is_ascii_uppercase() & !after_word;
        after_word = WORD[first as usize];
        if !starts {
            continue;
        }
        let head = &raw[t..raw.len().min(t + 4)];
        if let [_, b, c, d] = head {
            if b.is_ascii_uppercase() && c.is_ascii_digit() && d.is_ascii_digit() {
                let found = iban_match(raw, t).and_then(|m_end| iban_exact(raw, rules, t, m_end));
                if let Some(end) = found {
                    events.push(Event::Found {
                        kind: "iban",
                        start: t,
                        end,
                        confidence: 0.97,
                    });
                }
            }
        }
    }
    events
}

/// The country's exact length from the match, the word boundary, and mod 97.
#[inline(never)] // out of the loop over every character (see tokens::dispatch)
fn iban_exact(raw: &[u8], rules: &IbanRules, start: usize, m_end: usize) -> Option<usize> {
    let length = *rules.lengths.get(&[raw[start], raw[start + 1]])?;
    // `_IBAN_OF_LENGTH[length]`: the first `length` characters that are not spaces
    let mut seen = 0;
    let mut end = start;
    for (i, &b) in raw[start..m_end].iter().enumerate() {
        if b != b' ' {
            seen += 1;
            if seen == length {
                end = start + i + 1;
                break;
            }
        }
    }
    if seen < length || raw.get(end).is_some_and(|&b| word(b)) {
        return None;
    }
    let compact: Vec<u8> = raw[start..end]
        .iter()
        .copied()
        .filter(|&b| b != b' ')
        .collect();
    iban_valid(&compact).then_some(end)
}

/// `_validators.iban_valid` for what `_IBAN` matched (upper case and digits): mod 97
/// of the rearranged number, letters as 10-35.
fn iban_valid(compact: &[u8]) -> bool {
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut rest = 0u32;
    for &b in rearranged {
        rest = if b.is_ascii_digit() {
            (rest * 10 + u32::from(b - b'0')) % 97
        } else {
            (rest * 100 + u32::from(b - b'A' + 10)) % 97
        };
    }
    rest == 1
}

// ------------------------------------------------------------------ IPv6 ---

/// `_V6_TRIGGER` at `p`: `::` or `:h:h:h:` (1-4 hex digits each); its end.
fn v6_trigger(raw: &[u8], p: usize) -> Option<usize> {
    if raw[p] != b':' {
        return None;
    }
    if raw.get(p + 1) == Some(&b':') {
        return Some(p + 2);
    }
    let mut q = p + 1;
    for _ in 0..3 {
        let n = run(raw, q, 5, |b| b.is_ascii_hexdigit());
        if !(1..=4).contains(&n) || raw.get(q + n) != Some(&b':') {
            return None;
        }
        q += n + 1;
    }
    Some(q)
}

pub fn find_ipv6(text: &Text) -> Vec<Event> {
    let raw: &[u8] = &text.raw;
    let hex_colon = |b: u8| b.is_ascii_hexdigit() || b == b':';
    let mut events = Vec::new();
    let mut pos = 0;
    while let Some(offset) = memchr::memchr(b':', &raw[pos.min(raw.len())..]) {
        let at = pos + offset;
        let Some(trigger_end) = v6_trigger(raw, at) else {
            pos = at + 1;
            continue;
        };
        let start = at - run_back(raw, at, 39, hex_colon);
        let mut end = at + run(raw, at, 45, |b| hex_colon(b) || b == b'.');
        pos = end.max(trigger_end);
        while end > start
            && matches!(raw[end - 1], b'.' | b':')
            && !raw[start..end].ends_with(b"::")
        {
            end -= 1;
        }
        if start > 0 && (word(raw[start - 1]) || matches!(raw[start - 1], b'.' | b':')) {
            continue;
        }
        if raw.get(end).is_some_and(|&b| word(b)) {
            continue;
        }
        let candidate = &raw[start..end];
        let double = candidate.windows(2).any(|w| w == b"::");
        if !double && candidate.split(|&b| b == b':').all(|g| g.len() == 2) {
            continue; // MAC-style octets
        }
        if candidate.iter().any(u8::is_ascii_digit) {
            events.push(Event::HandBack { start, end, tag: 0 }); // ipv6_reportable decides
        }
    }
    events
}
