//! `secure_ds.dlp._secrets.find_secrets`, natively: key names and URL passwords.
//!
//! The Python module is the reference: this file follows `_KEYWORDS`/`_TAIL`
//! (hand-written here, because they need look-arounds and possessive repetitions the
//! `regex` crate does not have) and `_assignment` step for step, and the tests run
//! both over the DLP corpus and fuzzed text and require the same findings. The word
//! lists (`_NAME_BLOCK` ...) and the placeholder pattern come from the Python module
//! at start-up, so they exist once.
//!
//! A candidate whose decision would read a non-ASCII character is handed back, and
//! Python decides it.

use memchr::memmem;
use regex::Regex;

use crate::text::{
    ascii_lower, char_classes, distinct, entropy_at_least, is_bytes_space, is_str_space, is_token,
    run, Event, Text,
};

/// The keywords in `_KEYWORDS` order (findings come out in Python's order).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Pass,
    Pwd,
    Secret,
    Token,
    Key,
    Credential,
    Authorization,
    Bearer,
}

const KEYWORDS: [(&[u8], Keyword); 8] = [
    (b"pass", Keyword::Pass),
    (b"pwd", Keyword::Pwd),
    (b"secret", Keyword::Secret),
    (b"token", Keyword::Token),
    (b"key", Keyword::Key),
    (b"credential", Keyword::Credential),
    (b"authorization", Keyword::Authorization),
    (b"bearer", Keyword::Bearer),
];

const AUTH_SCHEMES: [&[u8]; 5] = [b"bearer", b"basic", b"token", b"digest", b"bot"];
const NOT_URLS: [&[u8]; 5] = [b"http://", b"https://", b"/", b"./", b"file:"];
const HINT_WORDS: [&[u8]; 6] = [
    b"example",
    b"placeholder",
    b"dummy",
    b"sample",
    b"redacted",
    b"changeme",
];

/// The patterns and lists that stay defined in `_secrets.py`.
pub struct Rules {
    pub name_block: Regex,
    pub name_block_short: Regex,
    pub key_qualifiers: Regex,
    /// `_PLACEHOLDER`, anchored at both ends (Python calls `fullmatch`)
    pub placeholder: Regex,
    pub glued_prefixes: Vec<Vec<u8>>,
}

pub fn find(text: &Text, rules: &Rules) -> Vec<Event> {
    let raw: &[u8] = &text.raw;
    let low = ascii_lower(raw);
    let mut events = Vec::new();
    for (index, (word, keyword)) in KEYWORDS.iter().enumerate() {
        let finder = memmem::Finder::new(word);
        let mut pos = 0;
        while let Some(found) = finder.find(&low[pos..]) {
            let start = pos + found;
            match match_keyword(&low, start, *keyword) {
                Some((rest_end, end)) => {
                    let mut read = Reads {
                        lo: start.saturating_sub(8),
                        hi: start,
                    };
                    let outcome =
                        assignment(raw, &low, rules, *keyword, start, rest_end, end, &mut read);
                    if !text.ascii_between(read.lo, read.hi) {
                        // the keyword's index: Python matches its pattern again
                        events.push(Event::HandBack {
                            start,
                            end: start,
                            tag: index as i64,
                        });
                    } else if let Some(event) = outcome {
                        events.push(event);
                    }
                    pos = end;
                }
                None => pos = start + 1,
            }
        }
    }
    url_credentials(text, rules, &mut events);
    events
}

/// The tag of a URL-credential candidate handed back (after the keywords' indexes).
const URL_TAG: i64 = KEYWORDS.len() as i64;

/// `_url_credentials`: `://user:password@` with a password worth reporting.
/// `_URL_CREDENTIAL` is `://(?P<user>[A-Za-z0-9._%~!$&*+=\-]{0,64}+):(?P<pw>[^\s:/@"'<>]{1,128}+)@`;
/// neither group can hold `/`, so the next `://` is searched from the next character
/// whether this one matched or not (as `literal_hits` does).
fn url_credentials(text: &Text, rules: &Rules, events: &mut Vec<Event>) {
    let raw: &[u8] = &text.raw;
    let user_char = |b: u8| b.is_ascii_alphanumeric() || b"._%~!$&*+=-".contains(&b);
    let pw_char = |b: u8| !(is_str_space(b) || b":/@\"'<>".contains(&b));
    for at in memmem::find_iter(raw, b"://") {
        let user = at + 3 + run(raw, at + 3, 64, user_char);
        if raw.get(user) != Some(&b':') {
            continue;
        }
        let pw_start = user + 1;
        let pw_end = pw_start + run(raw, pw_start, 128, pw_char);
        // a non-ASCII character may be Unicode whitespace, which ends the password
        if !text.ascii_between(pw_start, pw_end + 1) {
            events.push(Event::HandBack {
                start: at,
                end: at,
                tag: URL_TAG,
            });
            continue;
        }
        if pw_end == pw_start || raw.get(pw_end) != Some(&b'@') {
            continue;
        }
        let Ok(value) = std::str::from_utf8(&raw[pw_start..pw_end]) else {
            continue; // not reached: the range is ASCII
        };
        if !rules.placeholder.is_match(value) && password_value(value.as_bytes()) {
            events.push(Event::Found {
                kind: "secret",
                start: pw_start,
                end: pw_end,
                confidence: 0.8,
            });
        }
    }
}

// ------------------------------------------------------------ key names ---

/// The keyword pattern at `i` (which starts with the keyword): the end of the
/// `rest` group and of the whole match.
fn match_keyword(low: &[u8], i: usize, keyword: Keyword) -> Option<(usize, usize)> {
    let at = |k: usize| low.get(k).copied();
    let not_letter = |k: usize| !matches!(at(k), Some(b'a'..=b'z'));
    match keyword {
        Keyword::Pass => {
            // pass(?:word|wd|phrase|code)?(?![a-z]), tried in the alternation's order
            let j = i + 4;
            for alt in [&b"word"[..], b"wd", b"phrase", b"code", b""] {
                if low[j..].starts_with(alt) && not_letter(j + alt.len()) {
                    if let Some(found) = tail(low, j + alt.len()) {
                        return Some(found);
                    }
                }
            }
            None
        }
        Keyword::Pwd => {
            if not_letter(i + 3) {
                tail(low, i + 3)
            } else {
                None
            }
        }
        Keyword::Token => {
            // token(?!iz|s(?![a-z]))
            let j = i + 5;
            let iz = low[j..].starts_with(b"iz");
            let plural = at(j) == Some(b's') && not_letter(j + 1);
            if iz || plural {
                None
            } else {
                tail(low, j)
            }
        }
        Keyword::Credential => {
            // credentials?: with the "s" first, then without
            let j = i + 10;
            if at(j) == Some(b's') {
                if let Some(found) = tail(low, j + 1) {
                    return Some(found);
                }
            }
            tail(low, j)
        }
        Keyword::Bearer => {
            // bearer(?P<rest>)(?P<op>[ \t]{1,3}+)
            let j = i + 6;
            let spaces = run(low, j, 3, |b| b == b' ' || b == b'\t');
            if spaces >= 1 {
                Some((j, j + spaces))
            } else {
                None
            }
        }
        Keyword::Secret => tail(low, i + 6),
        Keyword::Key => tail(low, i + 3),
        Keyword::Authorization => tail(low, i + 13),
    }
}

/// `_TAIL`: the rest of the identifier, closing quotes, the operator, spaces, and the
/// look-ahead for a value of six or more characters.
fn tail(low: &[u8], j: usize) -> Option<(usize, usize)> {
    let rest_end = j + run(low, j, 40, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
    });
    let mut k = rest_end
        + run(low, rest_end, 3, |b| {
            matches!(b, b'\\' | b'"' | b'\'' | b']')
        });
    k += run(low, k, 3, |b| b == b' ' || b == b'\t');
    let rest = &low[k.min(low.len())..];
    // (?P<op>=>|:=|=|:|is[ \t]), each tried with what follows before the next
    for op in [&b"=>"[..], b":=", b"=", b":", b"is ", b"is\t"] {
        if !rest.starts_with(op) {
            continue;
        }
        let p = k + op.len();
        let q = p + run(low, p, 3, |b| b == b' ' || b == b'\t');
        if value_ahead(low, q) {
            return Some((rest_end, q));
        }
    }
    None
}

/// `(?=["'`]?[^\s"'`]{6})` at `q`.
fn value_ahead(low: &[u8], q: usize) -> bool {
    let plain = |b: u8| !(is_bytes_space(b) || matches!(b, b'"' | b'\'' | b'`'));
    let six = |from: usize| from + 6 <= low.len() && low[from..from + 6].iter().all(|&b| plain(b));
    match low.get(q) {
        Some(b'"' | b'\'' | b'`') => six(q + 1),
        Some(_) => six(q),
        None => false,
    }
}

// ---------------------------------------------------------- assignment ---

/// The characters a decision read: if any is not ASCII, Python decides instead.
struct Reads {
    lo: usize,
    hi: usize,
}

impl Reads {
    fn upto(&mut self, end: usize) {
        self.hi = self.hi.max(end);
    }
}

/// `_VALUE.match(text, p)`: (group 1-4, value start, value end).
fn value_at(raw: &[u8], p: usize, read: &mut Reads) -> Option<(u8, usize, usize)> {
    let first = *raw.get(p)?;
    read.upto(p + 1);
    let quoted = match first {
        b'"' => Some(1),
        b'\'' => Some(2),
        b'`' => Some(3),
        _ => None,
    };
    if let Some(group) = quoted {
        let len = run(raw, p + 1, 256, |b| b != first && b != b'\n');
        let close = p + 1 + len;
        read.upto(close + 1);
        if len >= 1 && raw.get(close) == Some(&first) {
            return Some((group, p + 1, close));
        }
        return None; // the other alternatives cannot start with a quote
    }
    let len = run(raw, p, 256, |b| {
        !(is_str_space(b) || matches!(b, b'"' | b'\'' | b'`' | b',' | b';'))
    });
    read.upto(p + len + 1);
    if len >= 1 {
        Some((4, p, p + len))
    } else {
        None
    }
}

#[allow(clippy::too_many_arguments)]
fn assignment(
    raw: &[u8],
    low: &[u8],
    rules: &Rules,
    keyword: Keyword,
    kw_start: usize,
    rest_end: usize,
    end: usize,
    read: &mut Reads,
) -> Option<Event> {
    // a keyword glued to the end of a lower-case word (bypass, compass) is not one
    if kw_start > 0 && raw[kw_start - 1].is_ascii_lowercase() && raw[kw_start].is_ascii_lowercase()
    {
        let window = &low[kw_start.saturating_sub(8)..kw_start];
        if !rules.glued_prefixes.iter().any(|p| window.ends_with(p)) {
            return None;
        }
    }
    // a character before the keyword that is not ASCII may be a lower-case letter
    // for Python: `read.lo` covers it, and the caller hands it back
    let floor = kw_start.saturating_sub(40);
    let ident_start = (floor + 1..=kw_start)
        .rev()
        .find(|&j| !is_token(raw[j - 1]))
        .unwrap_or(floor);
    let ident = std::str::from_utf8(&low[ident_start..rest_end]).ok()?;
    if rules.name_block.is_match(ident)
        || rules.name_block_short.is_match(ident)
        || (keyword == Keyword::Key && !rules.key_qualifiers.is_match(ident))
    {
        return None;
    }
    let (group, mut v_start, mut v_end) = value_at(raw, end, read)?;
    let bare = group == 4;
    if bare && matches!(raw[v_end - 1], b'.' | b')' | b']' | b'}' | b'>') {
        while v_end > v_start && matches!(raw[v_end - 1], b'.' | b')' | b']' | b'}' | b'>') {
            v_end -= 1;
        }
        if v_end == v_start {
            return None;
        }
    }
    // "Authorization: Bearer abc": the credential is what follows the scheme
    let value = &raw[v_start..v_end];
    if matches!(value[0], b'b' | b'B' | b'd' | b'D' | b't' | b'T') && keyword != Keyword::Bearer {
        let head = ascii_lower(&value[..value.len().min(6)]);
        if AUTH_SCHEMES.iter().any(|s| head.starts_with(s)) {
            let space = value.iter().position(|&b| b == b' ');
            let first = ascii_lower(&value[..space.unwrap_or(value.len())]);
            if AUTH_SCHEMES.contains(&first.as_slice()) {
                if bare {
                    // the scheme alone was the bare value; the token follows
                    read.upto(v_end + 1);
                    if raw.get(v_end) != Some(&b' ') {
                        return None;
                    }
                    let (next_group, s, e) = value_at(raw, v_end + 1, read)?;
                    if next_group != 4 {
                        return None;
                    }
                    (v_start, v_end) = (s, e);
                } else if let Some(at) = space {
                    v_start += at + 1;
                }
                if v_start == v_end {
                    return None;
                }
            }
        }
    }
    let value = std::str::from_utf8(&raw[v_start..v_end]).ok()?;
    let bytes = value.as_bytes();
    if bare && (bytes.iter().any(|b| matches!(b, b'(' | b'[' | b'{')) || code_reference(bytes)) {
        return None; // code: os.environ["X"], get_secret(), settings.TOKEN
    }
    if placeholder(value, rules) {
        return None;
    }
    let found = |kind, confidence| {
        Some(Event::Found {
            kind,
            start: v_start,
            end: v_end,
            confidence,
        })
    };
    let ident = ident.as_bytes();
    let aws_name = memmem::find(ident, b"aws").is_some()
        || memmem::find(ident, b"secretaccess").is_some()
        || memmem::find(ident, b"secret_access").is_some()
        || memmem::find(ident, b"secret-access").is_some();
    if bytes.len() == 40 && aws_name && aws_secret_shape(bytes) {
        return found("aws_secret_key", 0.9);
    }
    if matches!(keyword, Keyword::Pass | Keyword::Pwd | Keyword::Credential)
        && password_value(bytes)
    {
        return found("secret", 0.7);
    }
    if high_entropy_value(bytes) {
        return found("secret", 0.75);
    }
    None
}

/// `_CODE_REFERENCE.fullmatch`: dotted identifiers, or letters and `_` only.
fn code_reference(value: &[u8]) -> bool {
    let ident_start = |b: u8| b.is_ascii_alphabetic() || b == b'_';
    if value.iter().all(|&b| ident_start(b)) {
        return !value.is_empty();
    }
    let parts: Vec<&[u8]> = value.split(|&b| b == b'.').collect();
    parts.len() >= 2
        && parts.iter().all(|part| {
            !part.is_empty()
                && ident_start(part[0])
                && part[1..]
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// `_secrets._placeholder` for an ASCII value.
fn placeholder(value: &str, rules: &Rules) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() > 24 && !long_hint(bytes) {
        if !bytes.iter().any(|b| matches!(b, b'x' | b'X' | b'*')) {
            return false;
        }
        if bytes.iter().any(u8::is_ascii_digit) {
            return false;
        }
    }
    rules.placeholder.is_match(value)
}

fn long_hint(value: &[u8]) -> bool {
    if value
        .iter()
        .any(|b| matches!(b, b'$' | b'%' | b'{' | b'<' | b'['))
    {
        return true;
    }
    let low = ascii_lower(value);
    HINT_WORDS.iter().any(|w| memmem::find(&low, w).is_some())
}

/// `_secrets.aws_secret_shape` for an ASCII value.
pub fn aws_secret_shape(value: &[u8]) -> bool {
    value.len() == 40
        && value.iter().any(u8::is_ascii_uppercase)
        && value.iter().any(u8::is_ascii_lowercase)
        && value
            .iter()
            .any(|&b| b.is_ascii_digit() || b == b'/' || b == b'+')
        && entropy_at_least(value, 4.0)
}

fn password_value(value: &[u8]) -> bool {
    if !(6..=128).contains(&value.len()) || value.contains(&b' ') {
        return false;
    }
    if distinct(value) < 4 {
        return false;
    }
    char_classes(value) >= 2 || value.len() >= 12
}

fn high_entropy_value(value: &[u8]) -> bool {
    if !(16..=512).contains(&value.len()) || value.contains(&b' ') {
        return false;
    }
    if NOT_URLS.iter().any(|p| value.starts_with(p)) {
        return false;
    }
    let digits = value.iter().filter(|b| b.is_ascii_digit()).count();
    if digits < 2 || digits == value.len() {
        return false;
    }
    entropy_at_least(value, 3.0)
}
