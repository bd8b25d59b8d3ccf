//! `secure_ds.dlp._tokens.find_tokens`, natively: vendor API keys and tokens.
//!
//! The Python function is the reference and this file follows it step by step: every
//! run of 20+ token characters that starts after a non-token character with one of
//! `HEAD_FIRST_CHARS` is dispatched on its first three characters to the vendor's
//! pattern (written out here; each is a literal prefix, bounded possessive runs and a
//! look-ahead) and checks. Every class in these patterns is ASCII, so no candidate
//! depends on Unicode rules; JWT candidates are handed back whole, because their
//! check decodes base64 JSON (Python's `json` decides what a header is).

use crate::text::{char_classes, entropy_at_least, run, Event, Text, TOKEN};

/// What stays defined in Python: `_context.HEAD_FIRST_CHARS` and `_tokens._SK_PREFIXES`.
pub struct Rules {
    pub head_first_chars: Vec<u8>,
    pub sk_prefixes: Vec<Vec<u8>>,
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
/// `[A-Za-z0-9_\-]`
fn url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// `(?!class)` at `i`
fn not_followed(raw: &[u8], i: usize, class: impl Fn(u8) -> bool) -> bool {
    raw.get(i).is_none_or(|&b| !class(b))
}

pub fn find(text: &Text, rules: &Rules) -> Vec<Event> {
    let raw: &[u8] = &text.raw;
    let mut head = [false; 256];
    for &c in &rules.head_first_chars {
        head[c as usize] = true;
    }
    let mut events = Vec::new();
    // `_HEAD_RUN` on the heads view (" b[ab]{19}") is a run of token characters,
    // 20 or longer, whose first character is a head's: count the run's length without
    // a branch per character, and look at its start when the count reaches 20
    let mut length = 0usize;
    for (i, &b) in raw.iter().enumerate() {
        let keep = usize::from(TOKEN[b as usize]).wrapping_neg(); // all ones or zero
        length = (length + 1) & keep;
        if length == 20 {
            let start = i + 1 - 20;
            if head[raw[start] as usize] {
                dispatch(raw, start, rules, &mut events);
            }
        }
    }
    events
}

// kept out of the loop over every character: inlined, it made that loop 2-3x slower
#[inline(never)]
fn dispatch(raw: &[u8], start: usize, rules: &Rules, events: &mut Vec<Event>) {
    let found = |kind, end, confidence| Event::Found {
        kind,
        start,
        end,
        confidence,
    };
    let event = match &raw[start..start + 3] {
        b"eyJ" => Some(Event::HandBack {
            start,
            end: start,
            tag: 0,
        }),
        b"AKI" | b"ASI" => return aws(raw, start, events),
        b"ghp" | b"gho" | b"ghu" | b"ghs" | b"ghr" | b"git" => {
            github(raw, start).map(|(end, c)| found("github_token", end, c))
        }
        b"xox" | b"xap" => slack(raw, start).map(|end| found("slack_token", end, 0.97)),
        b"sk-" => sk(raw, start, rules).map(|end| found("api_key", end, 0.92)),
        b"sk_" | b"rk_" => {
            vendor(raw, start, stripe(raw, start)).map(|end| found("api_key", end, 0.95))
        }
        b"AIz" => vendor(raw, start, google(raw, start)).map(|end| found("api_key", end, 0.9)),
        b"glp" => vendor(raw, start, gitlab(raw, start)).map(|end| found("api_key", end, 0.95)),
        b"SG." => vendor(raw, start, sendgrid(raw, start)).map(|end| found("api_key", end, 0.95)),
        b"npm" => vendor(raw, start, npm(raw, start)).map(|end| found("api_key", end, 0.9)),
        b"hf_" => huggingface(raw, start).map(|end| found("api_key", end, 0.85)),
        _ => None,
    };
    events.extend(event);
}

/// `A(?:KIA|SIA)[A-Z0-9]{16}(?![A-Za-z0-9])`, then a 40-character secret within 160
/// characters after it (`_AWS_SECRET_NEAR`).
fn aws(raw: &[u8], start: usize, events: &mut Vec<Event>) {
    let head = &raw[start..start + 4];
    if head != b"AKIA" && head != b"ASIA" {
        return;
    }
    let body = start + 4;
    if run(raw, body, 16, |b| {
        b.is_ascii_uppercase() || b.is_ascii_digit()
    }) != 16
        || !not_followed(raw, body + 16, alnum)
    {
        return;
    }
    let end = body + 16;
    let base32 = raw[body..end]
        .iter()
        .all(|&b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    events.push(Event::Found {
        kind: "aws_access_key",
        start,
        end,
        confidence: if base32 { 0.95 } else { 0.75 },
    });
    // search(text, end, min(len, end + 160)) for
    // (?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=]): the look-behind sees before
    // `end`, the look-ahead nothing at or after the search's end. So a match is a run of
    // exactly 40 such characters (cut at the search's end) not followed by "=": one
    // pass over the runs, the leftmost that fits.
    let limit = raw.len().min(end + 160);
    let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'/' || b == b'+';
    let mut p = end;
    while p < limit {
        let length = run(raw, p, limit - p, b64);
        if length == 0 {
            p += 1;
            continue;
        }
        let starts_run = !b64(raw[p - 1]);
        let tail = p + length;
        if starts_run && length == 40 && (tail == limit || raw[tail] != b'=') {
            if crate::secrets::aws_secret_shape(&raw[p..tail]) {
                events.push(Event::Found {
                    kind: "aws_secret_key",
                    start: p,
                    end: tail,
                    confidence: 0.85,
                });
            }
            return;
        }
        p = tail;
    }
}

/// `(?:gh[pousr]_[A-Za-z0-9]{36,251}+|github_pat_[A-Za-z0-9_]{50,255}+)(?![A-Za-z0-9_])`
fn github(raw: &[u8], start: usize) -> Option<(usize, f64)> {
    let word = |b: u8| alnum(b) || b == b'_';
    let classic = raw[start + 1..].starts_with(b"h")
        && b"pousr".contains(&raw[start + 2])
        && raw.get(start + 3) == Some(&b'_');
    if classic {
        let n = run(raw, start + 4, 251, alnum);
        if n >= 36 && not_followed(raw, start + 4 + n, word) {
            return github_check(raw, start, start + 4, start + 4 + n, false);
        }
    }
    if raw[start..].starts_with(b"github_pat_") {
        let n = run(raw, start + 11, 255, word);
        if n >= 50 && not_followed(raw, start + 11 + n, word) {
            return github_check(raw, start, start + 11, start + 11 + n, true);
        }
    }
    None
}

fn github_check(
    raw: &[u8],
    start: usize,
    body: usize,
    end: usize,
    fine_grained: bool,
) -> Option<(usize, f64)> {
    let value = &raw[body..end];
    if char_classes(value) >= 2 && entropy_at_least(value, 3.5) {
        Some((
            end,
            if fine_grained || end - start == 40 {
                0.97
            } else {
                0.9
            },
        ))
    } else {
        None
    }
}

/// `(?:xox[abposre]|xapp)-[0-9A-Za-z\-]{10,250}+`, four or more dash-separated parts
/// with a numeric second one, 30+ characters.
fn slack(raw: &[u8], start: usize) -> Option<usize> {
    let head_ok = (raw[start..].starts_with(b"xox") && b"abposre".contains(&raw[start + 3]))
        || raw[start..].starts_with(b"xapp");
    if !head_ok || raw.get(start + 4) != Some(&b'-') {
        return None;
    }
    let n = run(raw, start + 5, 250, |b| alnum(b) || b == b'-');
    if n < 10 {
        return None;
    }
    let end = start + 5 + n;
    let mut value = &raw[start..end];
    while let [rest @ .., b'-'] = value {
        value = rest;
    }
    let parts: Vec<&[u8]> = value.split(|&b| b == b'-').collect();
    let numeric = |p: &[u8]| !p.is_empty() && p.iter().all(u8::is_ascii_digit);
    (parts.len() >= 4 && numeric(parts[1]) && end - start >= 30).then_some(end)
}

/// `sk-[A-Za-z0-9_\-]{20,250}+`, a random body after any known sub-prefix.
fn sk(raw: &[u8], start: usize, rules: &Rules) -> Option<usize> {
    let n = run(raw, start + 3, 250, url_safe);
    if n < 20 {
        return None;
    }
    let end = start + 3 + n;
    let mut body = &raw[start + 3..end];
    if let Some(prefix) = rules.sk_prefixes.iter().find(|p| body.starts_with(p)) {
        body = &body[prefix.len()..];
    }
    random_body(body, 20, 2).then_some(end)
}

fn vendor(raw: &[u8], start: usize, end: Option<usize>) -> Option<usize> {
    let end = end?;
    random_body(&raw[start..end], 16, 0).then_some(end)
}

/// `[sr]k_(?:live|test)_[A-Za-z0-9]{20,247}+(?![A-Za-z0-9_])`
fn stripe(raw: &[u8], start: usize) -> Option<usize> {
    let rest = &raw[start + 3..];
    if !(rest.starts_with(b"live_") || rest.starts_with(b"test_")) {
        return None;
    }
    let n = run(raw, start + 8, 247, alnum);
    let end = start + 8 + n;
    (n >= 20 && not_followed(raw, end, |b| alnum(b) || b == b'_')).then_some(end)
}

/// A literal head, exactly `n` characters of `class`, and not followed by `after`.
fn fixed(
    raw: &[u8],
    start: usize,
    head: &[u8],
    n: usize,
    class: fn(u8) -> bool,
    after: fn(u8) -> bool,
) -> Option<usize> {
    if !raw[start..].starts_with(head) {
        return None;
    }
    let body = start + head.len();
    let end = body + n;
    (run(raw, body, n, class) == n && not_followed(raw, end, after)).then_some(end)
}

/// `AIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])`
fn google(raw: &[u8], start: usize) -> Option<usize> {
    fixed(raw, start, b"AIza", 35, url_safe, url_safe)
}

/// `glpat-[A-Za-z0-9_\-]{20}(?![A-Za-z0-9_\-])`
fn gitlab(raw: &[u8], start: usize) -> Option<usize> {
    fixed(raw, start, b"glpat-", 20, url_safe, url_safe)
}

/// `SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}(?![A-Za-z0-9_\-])`
fn sendgrid(raw: &[u8], start: usize) -> Option<usize> {
    let dot = fixed(raw, start, b"SG.", 22, url_safe, |_| false)?;
    fixed(raw, dot, b".", 43, url_safe, url_safe)
}

/// `npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])`
fn npm(raw: &[u8], start: usize) -> Option<usize> {
    fixed(raw, start, b"npm_", 36, alnum, alnum)
}

/// `hf_[A-Za-z]{34,40}+(?![A-Za-z0-9])`, mixed case and varied.
fn huggingface(raw: &[u8], start: usize) -> Option<usize> {
    let n = run(raw, start + 3, 40, |b| b.is_ascii_alphabetic());
    let end = start + 3 + n;
    if n < 34 || !not_followed(raw, end, alnum) {
        return None;
    }
    let body = &raw[start + 3..end];
    (char_classes(body) >= 2 && entropy_at_least(body, 3.5)).then_some(end)
}

/// `_tokens._random_body`
fn random_body(body: &[u8], min_len: usize, min_digits: usize) -> bool {
    if body.len() < min_len {
        return false;
    }
    let digits = body.iter().filter(|b| b.is_ascii_digit()).count();
    if digits < min_digits || digits == body.len() {
        return false;
    }
    // hyphenated words: sk-learn-...-module
    let parts: Vec<&[u8]> = body.split(|&b| b == b'-').collect();
    if parts.len() > 1 && parts.iter().all(|p| p.iter().all(u8::is_ascii_lowercase)) {
        return false;
    }
    let hex = body
        .iter()
        .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    entropy_at_least(body, if hex { 2.9 } else { 3.3 })
}
