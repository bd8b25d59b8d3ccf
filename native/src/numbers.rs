//! `secure_ds.dlp._detectors.find_numbers`, natively: cards, SSNs, national phone
//! formats and IPv4 addresses, in one pass.
//!
//! The Python function is the reference and this file follows it step by step:
//! the skeleton view and its pattern find candidates, the real pattern decides
//! where the skeleton cannot, then the same validation. Both patterns are the same
//! body over two views (`View`), written out here as the backtracking order a regex
//! engine would try (greedy repetitions longest first, alternatives in order), so the
//! first end that passes the final look-ahead is the one `re` returns. The word lists
//! and `_VERSION_BEFORE` come from the Python module.
//!
//! A candidate whose validation would read a context window that is not ASCII is
//! handed back, and Python decides it.

use memchr::memmem;
use regex::Regex;

use crate::text::{Event, Text};

pub struct Rules {
    pub phone_words: Vec<Vec<u8>>,
    pub ssn_words: Vec<Vec<u8>>,
    pub card_words: Vec<Vec<u8>>,
    pub id_words: Vec<Vec<u8>>,
    pub version_before: Regex,
}

/// The branch of the pattern that matched (its `lastgroup`), with what the skeleton
/// shortcut needs to know about separators.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    Card { separated: bool },
    Ssn,
    Nanp { dash_or_dot: bool },
    Ipv4,
    Ctx,
    Nat0,
}

impl Branch {
    /// Its place in `_detectors._BRANCHES`, the tag of a candidate handed back.
    pub fn index(self) -> i64 {
        match self {
            Branch::Card { .. } => 0,
            Branch::Ssn => 1,
            Branch::Nanp { .. } => 2,
            Branch::Ipv4 => 3,
            Branch::Ctx => 4,
            Branch::Nat0 => 5,
        }
    }
}

/// The text (`real`) or the skeleton view, with the character classes the pattern
/// uses filled in for it (see `_NUMERIC` and `_NUMERIC_SKELETON`).
struct View<'a> {
    b: &'a [u8],
    skeleton: bool,
}

impl View<'_> {
    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }
    fn is(&self, i: usize, set: &[u8]) -> bool {
        i < self.b.len() && set.contains(&self.b[i])
    }
    fn digit(&self, i: usize) -> bool {
        let c = self.at(i);
        if self.skeleton {
            c == b'1'
        } else {
            c.is_ascii_digit()
        }
    }
    /// `[1-9]`
    fn nonzero(&self, i: usize) -> bool {
        let c = self.at(i);
        if self.skeleton {
            c == b'1'
        } else {
            (b'1'..=b'9').contains(&c)
        }
    }
    /// `(?<=0)`
    fn zero(&self, i: usize) -> bool {
        self.at(i) == if self.skeleton { b'1' } else { b'0' }
    }
    /// `W`
    fn word(&self, i: usize) -> bool {
        let c = self.at(i);
        if self.skeleton {
            matches!(c, b'1' | b'a' | b'A')
        } else {
            crate::text::WORD[c as usize]
        }
    }
    fn digits(&self, i: usize, n: usize) -> bool {
        (i..i + n).all(|k| self.digit(k))
    }
    /// How many digits (at most `max`) start at `i`.
    fn run(&self, i: usize, max: usize) -> usize {
        (0..max).take_while(|&k| self.digit(i + k)).count()
    }
    /// `(?!W|[.\-]\d)` at `e`
    fn ends(&self, e: usize) -> bool {
        !(self.word(e) || (self.is(e, b".-") && self.digit(e + 1)))
    }
}

/// The pattern body from `p` (right after the first digit): branch and match end.
fn body(v: &View, p: usize) -> Option<(Branch, usize)> {
    let card = |separated| Branch::Card { separated };
    // card: \d{3}(cs)\d{4}(cs)\d{4}(cs)\d{4}(?:(cs)\d{1,3})?
    if v.digits(p, 3) && v.is(p + 3, b" -") {
        let cs = v.at(p + 3);
        if v.digits(p + 4, 4)
            && v.at(p + 8) == cs
            && v.digits(p + 9, 4)
            && v.at(p + 13) == cs
            && v.digits(p + 14, 4)
        {
            let e0 = p + 18;
            if v.at(e0) == cs {
                for extra in (1..=v.run(e0 + 1, 3)).rev() {
                    if v.ends(e0 + 1 + extra) {
                        return Some((card(true), e0 + 1 + extra));
                    }
                }
            }
            if v.ends(e0) {
                return Some((card(true), e0));
            }
        }
    }
    //     | \d{3}(xs)\d{6}(xs)\d{4,5}
    if v.digits(p, 3) && v.is(p + 3, b" -") {
        let xs = v.at(p + 3);
        if v.digits(p + 4, 6) && v.at(p + 10) == xs {
            let last = v.run(p + 11, 5);
            for n in (4..=last).rev() {
                if v.ends(p + 11 + n) {
                    return Some((card(true), p + 11 + n));
                }
            }
        }
    }
    //     | \d{12,18}
    for n in (12..=v.run(p, 18)).rev() {
        if v.ends(p + n) {
            return Some((card(false), p + n));
        }
    }
    // ssn: \d{2}-\d{2}-\d{4}
    if v.digits(p, 2)
        && v.at(p + 2) == b'-'
        && v.digits(p + 3, 2)
        && v.at(p + 5) == b'-'
        && v.digits(p + 6, 4)
        && v.ends(p + 10)
    {
        return Some((Branch::Ssn, p + 10));
    }
    // nanp: \d{2}(ns)\d{3}(ns)\d{4} with ns in [-.]
    if v.digits(p, 2) && v.is(p + 2, b"-.") {
        let ns = v.at(p + 2);
        if v.digits(p + 3, 3) && v.at(p + 6) == ns && v.digits(p + 7, 4) && v.ends(p + 11) {
            return Some((Branch::Nanp { dash_or_dot: true }, p + 11));
        }
    }
    //     | (?<=1)(n1)\d{3}(n1)\d{3}(n1)\d{4} with n1 in [-. ]
    if v.at(p.wrapping_sub(1)) == b'1' && v.is(p, b"-. ") {
        let n1 = v.at(p);
        if v.digits(p + 1, 3)
            && v.at(p + 4) == n1
            && v.digits(p + 5, 3)
            && v.at(p + 8) == n1
            && v.digits(p + 9, 4)
            && v.ends(p + 13)
        {
            return Some((Branch::Nanp { dash_or_dot: false }, p + 13));
        }
    }
    // ipv4: \d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}
    for a in (0..=v.run(p, 2)).rev() {
        let q = p + a;
        if v.at(q) != b'.' {
            continue;
        }
        for b in (1..=v.run(q + 1, 3)).rev() {
            let r = q + 1 + b;
            if v.at(r) != b'.' {
                continue;
            }
            for c in (1..=v.run(r + 1, 3)).rev() {
                let s = r + 1 + c;
                if v.at(s) != b'.' {
                    continue;
                }
                for d in (1..=v.run(s + 1, 3)).rev() {
                    if v.ends(s + 1 + d) {
                        return Some((Branch::Ipv4, s + 1 + d));
                    }
                }
            }
        }
    }
    // ctx: \d{2} \d{3} \d{4} | \d{2} \d{2} \d{4} | \d{8}\d?
    if v.digits(p, 2) && v.at(p + 2) == b' ' {
        if v.digits(p + 3, 3) && v.at(p + 6) == b' ' && v.digits(p + 7, 4) && v.ends(p + 11) {
            return Some((Branch::Ctx, p + 11));
        }
        if v.digits(p + 3, 2) && v.at(p + 5) == b' ' && v.digits(p + 6, 4) && v.ends(p + 10) {
            return Some((Branch::Ctx, p + 10));
        }
    }
    if v.digits(p, 8) {
        if v.digit(p + 8) && v.ends(p + 9) {
            return Some((Branch::Ctx, p + 9));
        }
        if v.ends(p + 8) {
            return Some((Branch::Ctx, p + 8));
        }
    }
    // nat0: (?<=0)[1-9]\d{0,3}(?:[ /\-]\d{2,8}){1,4}
    if p > 0 && v.zero(p - 1) && v.nonzero(p) {
        for a in (0..=v.run(p + 1, 3)).rev() {
            if let Some(e) = nat0_groups(v, p + 1 + a, 0) {
                return Some((Branch::Nat0, e));
            }
        }
    }
    None
}

/// `(?:[ /\-]\d{2,8}){1,4}` then the look-ahead, from `pos` with `k` groups taken:
/// one more group first (greedy), longest digits first, then stopping here.
fn nat0_groups(v: &View, pos: usize, k: usize) -> Option<usize> {
    if k < 4 && v.is(pos, b" /-") {
        for n in (2..=v.run(pos + 1, 8)).rev() {
            if let Some(e) = nat0_groups(v, pos + 1 + n, k + 1) {
                return Some(e);
            }
        }
    }
    if k >= 1 && v.ends(pos) {
        Some(pos)
    } else {
        None
    }
}

/// The skeleton pattern's look-ahead after `" 1"` (at `t`): the first characters some
/// format needs, so that short numbers fail at once.
fn skeleton_prefix(v: &View, t: usize) -> bool {
    let ones = |i: usize, n: usize| (i..i + n).all(|k| v.at(k) == b'1');
    // \.1{1,3}\.
    let dotted = |i: usize| {
        v.at(i) == b'.' && {
            let run = (0..4).take_while(|&k| v.at(i + 1 + k) == b'1').count();
            (1..=3).contains(&run) && v.at(i + 1 + run) == b'.'
        }
    };
    let after_two = |i: usize| {
        ones(i, 5)
            || dotted(i)
            || (v.is(i, b"-. /") && v.at(i + 1) == b'1')
            || (v.at(i) == b'1' && v.is(i + 1, b" -/") && ones(i + 2, 3))
            || (ones(i, 2) && v.is(i + 2, b" -/") && ones(i + 3, 2))
    };
    (v.at(t) == b'1'
        && ((v.at(t + 1) == b'1' && after_two(t + 2))
            || dotted(t + 1)
            || (v.at(t + 1) == b' '
                && ones(t + 2, 2)
                && v.at(t + 4) == b' '
                && ones(t + 5, 2)
                && v.at(t + 7) == b' '
                && ones(t + 8, 2))))
        || dotted(t)
        || (v.is(t, b"-. ") && ones(t + 1, 3) && v.is(t + 4, b"-. "))
}

/// `Context.skeleton`: a space, then the text with digits as `1`, `[a-z_]` as `a`,
/// `[A-Z]` as `A`, `.,+-` kept and everything else a space.
fn skeleton_of(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 1);
    out.push(b' ');
    out.extend(raw.iter().map(|&c| match c {
        b'0'..=b'9' => b'1',
        b'a'..=b'z' | b'_' => b'a',
        b'A'..=b'Z' => b'A',
        b'.' | b',' | b'+' | b'-' => c,
        _ => b' ',
    }));
    out
}

pub fn find(text: &Text, rules: &Rules) -> Vec<Event> {
    let raw: &[u8] = &text.raw;
    let skeleton = skeleton_of(raw);
    let sk = View {
        b: &skeleton,
        skeleton: true,
    };
    let real = View {
        b: raw,
        skeleton: false,
    };
    let finder = memmem::Finder::new(b" 1");
    let mut events = Vec::new();
    let mut resume = 0;
    let mut pos = 0;
    while let Some(found) = finder.find(&skeleton[pos..]) {
        let s = pos + found;
        // the skeleton's finditer: a match resumes the search at its end
        let Some((branch, sk_end)) = (if skeleton_prefix(&sk, s + 2) {
            body(&sk, s + 2)
        } else {
            None
        }) else {
            pos = s + 1;
            continue;
        };
        pos = sk_end;
        let start = s; // skeleton[i + 1] describes text[i]
        if start < resume {
            continue;
        }
        if branch == Branch::Nat0 && raw[start] != b'0' {
            continue;
        }
        // where the skeleton matched through digits, "-" and "." only, the text
        // matches the same alternative with the same span
        let (branch, end) = match branch {
            Branch::Ipv4
            | Branch::Ssn
            | Branch::Card { separated: false }
            | Branch::Nanp { dash_or_dot: true } => (branch, sk_end - 1),
            _ => match body(&real, start + 1) {
                Some(found) => found,
                None => continue,
            },
        };
        resume = end;
        if let Some(event) = validate(text, rules, branch, start, end) {
            events.push(event);
        }
    }
    events
}

/// The lower-cased `width` characters before `pos` (`Context.before`), or None if
/// one is not ASCII (Python then decides).
fn before(text: &Text, pos: usize, width: usize) -> Option<Vec<u8>> {
    let lo = pos.saturating_sub(width);
    text.ascii_between(lo, pos)
        .then(|| text.raw[lo..pos].to_ascii_lowercase())
}

fn has_any(words: &[Vec<u8>], window: &[u8]) -> bool {
    words.iter().any(|w| memmem::find(window, w).is_some())
}

fn validate(text: &Text, rules: &Rules, branch: Branch, start: usize, end: usize) -> Option<Event> {
    let raw: &[u8] = &text.raw;
    let value = &raw[start..end];
    let found = |kind, confidence| {
        Some(Event::Found {
            kind,
            start,
            end,
            confidence,
        })
    };
    let back = hand_back(branch, start, end);
    let digits: Vec<u8> = value.iter().copied().filter(u8::is_ascii_digit).collect();
    match branch {
        Branch::Card { .. } => {
            if !card_brand(&digits) || !luhn_valid(&digits) {
                return None;
            }
            if digits.len() != value.len() {
                return found("credit_card", 0.97);
            }
            // no separators: could be any long identifier, so look at the words before it
            let Some(window) = before(text, start, 32) else {
                return back;
            };
            let card_word = has_any(&rules.card_words, &window);
            if !card_word && has_any(&rules.id_words, &window) {
                return None;
            }
            found("credit_card", if card_word { 0.95 } else { 0.85 })
        }
        Branch::Ssn => ssn(text, rules, branch, start, end, &digits, true),
        Branch::Nanp { .. } => {
            let digits = if digits.len() == 11 {
                &digits[1..]
            } else {
                &digits[..]
            };
            if !nanp_valid(digits) {
                return None;
            }
            if value.contains(&b' ') {
                let Some(window) = before(text, start, 40) else {
                    return back;
                };
                if !has_any(&rules.phone_words, &window) {
                    return None;
                }
            }
            found("phone", 0.85)
        }
        Branch::Ipv4 => {
            if !ipv4_reportable(value) {
                return None;
            }
            let Some(window) = before(text, start, 24) else {
                return back;
            };
            let hint = ["ver", "re", "build", "agent"]
                .iter()
                .any(|w| memmem::find(&window, w.as_bytes()).is_some());
            if hint
                && rules
                    .version_before
                    .is_match(std::str::from_utf8(&window).ok()?)
            {
                return None;
            }
            found("ip_address", 0.9)
        }
        Branch::Ctx => {
            // formats too common in other data to report without a context word
            let spaced = value.len() >= 7 && value[3] == b' ' && value[6] == b' ';
            if digits.len() == 9 && (value.len() == 9 || spaced) {
                return ssn(text, rules, branch, start, end, &digits, false);
            }
            if digits.len() == 10 && nanp_valid(&digits) {
                let Some(window) = before(text, start, 40) else {
                    return back;
                };
                if has_any(&rules.phone_words, &window) {
                    return found("phone", 0.8);
                }
            }
            None
        }
        Branch::Nat0 => national_phone(text, rules, branch, start, end),
    }
}

/// A candidate for Python to decide (its context window is not ASCII).
fn hand_back(branch: Branch, start: usize, end: usize) -> Option<Event> {
    Some(Event::HandBack {
        start,
        end,
        tag: branch.index(),
    })
}

fn ssn(
    text: &Text,
    rules: &Rules,
    branch: Branch,
    start: usize,
    end: usize,
    digits: &[u8],
    dashed: bool,
) -> Option<Event> {
    if digits.len() != 9 || !ssn_valid(digits) {
        return None;
    }
    let Some(window) = before(text, start, 40) else {
        return hand_back(branch, start, end);
    };
    let context = has_any(&rules.ssn_words, &window);
    if !dashed && !context {
        return None;
    }
    Some(Event::Found {
        kind: "us_ssn",
        start,
        end,
        confidence: if context { 0.95 } else { 0.85 },
    })
}

/// UK (0xx xxxx xxxx, 07xxx xxxxxx), French (0x xx xx xx xx), German (0xxx xxxxxxx).
fn national_phone(
    text: &Text,
    rules: &Rules,
    branch: Branch,
    start: usize,
    end: usize,
) -> Option<Event> {
    let raw: &[u8] = &text.raw;
    let value = &raw[start..end];
    let is_sep = |b: &u8| matches!(b, b' ' | b'/' | b'-');
    let groups: Vec<&[u8]> = value.split(is_sep).collect();
    let later: Vec<u8> = value[groups[0].len() + 1..]
        .iter()
        .copied()
        .filter(is_sep)
        .collect();
    if later.iter().any(|&b| b != later[0]) {
        return None;
    }
    let sizes: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let total: usize = sizes.iter().sum();
    let fr = sizes == [2, 2, 2, 2, 2];
    let uk = total == 11
        && (3..=5).contains(&sizes[0])
        && (sizes.len() == 2 || sizes.len() == 3)
        && sizes[1..].iter().all(|&s| s >= 3);
    let de = sizes.len() == 2
        && (3..=5).contains(&sizes[0])
        && (10..=12).contains(&total)
        && sizes[1] >= 5;
    if !(fr || uk || de) {
        return None;
    }
    // a run of byte values in a hex dump: " ab" after, or "ab " before
    let hex = |i: usize| raw.get(i).is_some_and(u8::is_ascii_hexdigit);
    let alnum = |i: usize| raw.get(i).is_some_and(u8::is_ascii_alphanumeric);
    if raw.get(end) == Some(&b' ') && hex(end + 1) && hex(end + 2) && !alnum(end + 3) {
        return None;
    }
    if start >= 3
        && raw[start - 1] == b' '
        && hex(start - 3)
        && hex(start - 2)
        && (start == 3 || !alnum(start - 4))
    {
        return None;
    }
    let Some(window) = before(text, start, 40) else {
        return hand_back(branch, start, end);
    };
    let context = has_any(&rules.phone_words, &window);
    Some(Event::Found {
        kind: "phone",
        start,
        end,
        confidence: if context { 0.9 } else { 0.75 },
    })
}

// ---------------------------------------------------------- validators ---

fn number(digits: &[u8]) -> u32 {
    digits.iter().fold(0, |n, d| n * 10 + (d - b'0') as u32)
}

/// `_validators.card_brand(digits) is not None`
fn card_brand(d: &[u8]) -> bool {
    let n = d.len();
    if !(13..=19).contains(&n) || !(b'2'..=b'6').contains(&d[0]) {
        return false;
    }
    let (p2, p3, p4, p6) = (
        number(&d[..2]),
        number(&d[..3]),
        number(&d[..4]),
        number(&d[..6]),
    );
    if d[0] == b'4' {
        return matches!(n, 13 | 16 | 19);
    }
    if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) {
        return n == 16;
    }
    if p2 == 34 || p2 == 37 {
        return n == 15;
    }
    if p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) || (622126..=622925).contains(&p6) {
        return n >= 16;
    }
    if (3528..=3589).contains(&p4) {
        return n >= 16;
    }
    if (300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39) || p4 == 3095 {
        return n >= 14;
    }
    if p2 == 62 {
        return n >= 16;
    }
    if matches!(
        p4,
        5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761 | 6762 | 6763
    ) {
        return n >= 16;
    }
    false
}

fn luhn_valid(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &c) in d.iter().rev().enumerate() {
        let v = (c - b'0') as u32;
        sum += if i % 2 == 1 {
            if v * 2 > 9 {
                v * 2 - 9
            } else {
                v * 2
            }
        } else {
            v
        };
    }
    sum.is_multiple_of(10)
}

fn ssn_valid(d: &[u8]) -> bool {
    let (area, group, serial) = (&d[..3], &d[3..5], &d[5..9]);
    if area == b"000" || area == b"666" || area[0] == b'9' || group == b"00" || serial == b"0000" {
        return false;
    }
    !matches!(d, b"078051120" | b"219099999" | b"457555462" | b"123456789")
}

/// `nanp_valid(digits[:3], digits[3:6])`
fn nanp_valid(d: &[u8]) -> bool {
    (b'2'..=b'9').contains(&d[0])
        && (b'2'..=b'9').contains(&d[3])
        && &d[1..3] != b"11"
        && &d[4..6] != b"11"
}

/// `_validators.ipv4_reportable`
fn ipv4_reportable(value: &[u8]) -> bool {
    let octets: Vec<&[u8]> = value.split(|&b| b == b'.').collect();
    if octets.len() != 4 {
        return false;
    }
    let mut whole = 0u32;
    for o in &octets {
        if o.is_empty()
            || o.len() > 3
            || !o.iter().all(u8::is_ascii_digit)
            || (o.len() > 1 && o[0] == b'0')
        {
            return false;
        }
        let n = number(o);
        if n > 255 {
            return false;
        }
        whole = whole << 8 | n;
    }
    let first = octets[0];
    if first == b"0" || first == b"127" {
        return false;
    }
    if first != b"255" {
        return true;
    }
    if whole == u32::MAX {
        return false;
    }
    let inverted = !whole;
    inverted & inverted.wrapping_add(1) != 0 // contiguous ones: a netmask
}
