//! The text being scanned, as the Python detectors see it.
//!
//! Python indexes a `str` by code point; the detectors search its Latin-1 view, one
//! byte per code point (anything above U+00FF becomes `?`), so byte offsets there are
//! character offsets. `Text` is that view. The native detectors decide only what
//! depends on ASCII alone: wherever a decision would read a non-ASCII character
//! (whose case, case folding or whitespace-ness Python decides by Unicode rules),
//! they hand the candidate back to Python instead (see `ascii_between`).

use std::borrow::Cow;

pub struct Text<'a> {
    /// the Latin-1 view: `raw[i]` is character `i` (or `?` above U+00FF)
    pub raw: Cow<'a, [u8]>,
    /// the positions of the characters that are not ASCII, in order
    nonascii: Vec<usize>,
}

impl<'a> Text<'a> {
    pub fn new(text: &'a str) -> Text<'a> {
        if text.is_ascii() {
            return Text {
                raw: Cow::Borrowed(text.as_bytes()),
                nonascii: Vec::new(),
            };
        }
        let bytes = text.as_bytes();
        let mut raw = Vec::with_capacity(bytes.len());
        let mut nonascii = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            // copy the ASCII run up to the next multi-byte sequence in one go
            let run = bytes[i..]
                .iter()
                .position(|b| !b.is_ascii())
                .unwrap_or(bytes.len() - i);
            raw.extend_from_slice(&bytes[i..i + run]);
            i += run;
            if i == bytes.len() {
                break;
            }
            let c = text[i..].chars().next().expect("a character starts here");
            nonascii.push(raw.len());
            raw.push(if (c as u32) <= 0xFF { c as u8 } else { b'?' });
            i += c.len_utf8();
        }
        Text {
            raw: Cow::Owned(raw),
            nonascii,
        }
    }

    /// The same view, owning its bytes (to be kept across calls).
    pub fn into_owned(self) -> Text<'static> {
        Text {
            raw: Cow::Owned(self.raw.into_owned()),
            nonascii: self.nonascii,
        }
    }

    /// Whether characters `lo..hi` are all ASCII.
    pub fn ascii_between(&self, lo: usize, hi: usize) -> bool {
        let first = self.nonascii.partition_point(|&p| p < lo);
        self.nonascii.get(first).is_none_or(|&p| p >= hi)
    }
}

/// ``bytes.lower()``: ASCII letters only, as Python lower-cases a ``bytes`` object.
pub fn ascii_lower(raw: &[u8]) -> Vec<u8> {
    raw.iter().map(u8::to_ascii_lowercase).collect()
}

/// Python's `str.isspace()` for an ASCII character (the `\s` of a `str` pattern).
pub fn is_str_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f)
}

/// The `\s` of a `bytes` pattern: ASCII whitespace only.
pub fn is_bytes_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `[A-Za-z0-9_.-]`, the token characters of the `heads` and `tokens` views.
pub fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// `is_token` as a table, for the loops that visit every character.
pub static TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-';
        b += 1;
    }
    table
};

/// `[A-Za-z0-9_]` (a regex `W`, `_WORD` in Python) as a table.
pub static WORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    table
};

/// `c * log2(c)` for c = 0..=4096, as `_validators._C_LOG_C` tabulates it.
fn c_log_c(c: usize) -> f64 {
    if c == 0 {
        0.0
    } else {
        c as f64 * (c as f64).log2()
    }
}

const TABLE_LEN: usize = 4097;

/// `_validators.shannon_entropy` for an ASCII value: the counts are summed in the
/// order each character first occurs, as iterating a `Counter` does, so the float
/// result is the same to the last bit.
fn shannon_entropy(value: &[u8]) -> f64 {
    let n = value.len();
    if n < 2 {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    let mut order: Vec<u8> = Vec::with_capacity(64);
    for &b in value {
        if counts[b as usize] == 0 {
            order.push(b);
        }
        counts[b as usize] += 1;
    }
    let mut total = 0.0f64;
    for b in order {
        total += c_log_c(counts[b as usize]);
    }
    (n as f64).log2() - total / n as f64
}

pub fn distinct(value: &[u8]) -> usize {
    let mut seen = [false; 256];
    let mut k = 0;
    for &b in value {
        if !seen[b as usize] {
            seen[b as usize] = true;
            k += 1;
        }
    }
    k
}

/// `_validators.entropy_at_least`, step for step (its bounds decide most values, and
/// where a bound answers, this must answer the same).
pub fn entropy_at_least(value: &[u8], bits: f64) -> bool {
    let n = value.len();
    let k = distinct(value);
    if k < 2 || (k as f64).log2() < bits {
        return false;
    }
    if n < TABLE_LEN && (n as f64).log2() - c_log_c(n - k + 1) / n as f64 >= bits {
        return true;
    }
    if (128..TABLE_LEN).contains(&n) {
        let half = n / 2;
        let (first, second) = value.split_at(half);
        let m = n - half;
        let lower = (half as f64 * (half as f64).log2() - c_log_c(half - distinct(first) + 1)
            + m as f64 * (m as f64).log2()
            - c_log_c(m - distinct(second) + 1))
            / n as f64;
        if lower >= bits + 1e-9 {
            return true;
        }
    }
    shannon_entropy(value) >= bits
}

/// `_validators.char_classes` for an ASCII value: lower, upper, digit, other.
pub fn char_classes(value: &[u8]) -> u32 {
    let lower = value.iter().any(u8::is_ascii_lowercase);
    let upper = value.iter().any(u8::is_ascii_uppercase);
    let digit = value.iter().any(u8::is_ascii_digit);
    let other = value.iter().any(|b| !b.is_ascii_alphanumeric());
    lower as u32 + upper as u32 + digit as u32 + other as u32
}

/// One outcome of a native detector, in the order Python produces its findings.
pub enum Event {
    /// decided here: a finding
    Found {
        kind: &'static str,
        start: usize,
        end: usize,
        confidence: f64,
    },
    /// a candidate handed back for the Python code to decide; `tag` says which
    /// keyword or pattern branch it came from (0 where there is one kind)
    HandBack { start: usize, end: usize, tag: i64 },
}

/// How many (at most `max`) bytes from `i` satisfy `accept`: a possessive repetition.
pub fn run(raw: &[u8], i: usize, max: usize, accept: impl Fn(u8) -> bool) -> usize {
    raw[i.min(raw.len())..]
        .iter()
        .take(max)
        .take_while(|&&b| accept(b))
        .count()
}

/// How many (at most `max`) bytes before `i` satisfy `accept`.
pub fn run_back(raw: &[u8], i: usize, max: usize, accept: impl Fn(u8) -> bool) -> usize {
    raw[..i]
        .iter()
        .rev()
        .take(max)
        .take_while(|&&b| accept(b))
        .count()
}
