//! Record lines another writer appended, taken in natively as `_log.AuditLog._catch_up`
//! and `_apply_record` take them in: the line must be exactly what `_entry.split_line`
//! accepts, and chain (its index is the next one, its `prev` the newest leaf hash, its
//! `hash` the leaf hash of its own bytes). Anything else (a checkpoint line, a line
//! that does not parse or chain, a torn last line) is left to Python, which takes in
//! checkpoints and fails the log closed on the rest; this code only ever says yes to
//! lines Python would accept, and the tests hold it to that on mutated lines.

use sha2::{Digest, Sha256};

const MARK: &[u8] = b"\"integrity\":{";
const CHECKPOINT: &[u8] = b"{\"checkpoint\":";

/// The leaf hashes of the records in `data` (whole lines, ending in a newline), chained
/// after record `index - 1` (leaf hash `prev`), with the chain after them; None when
/// Python must take them in.
pub fn take_in(data: &[u8], mut index: u64, prev: &[u8; 32]) -> Option<(Vec<u8>, u64, [u8; 32])> {
    let body = data.strip_suffix(b"\n")?;
    let mut prev = *prev;
    let mut hashes = Vec::new();
    for line in body.split(|&b| b == b'\n') {
        let hash = chain_line(line, index, &prev)?;
        hashes.extend_from_slice(&hash);
        index += 1;
        prev = hash;
    }
    Some((hashes, index, prev))
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn literal(&mut self, text: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(text)?;
        Some(())
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn until_quote(&mut self) -> Option<&'a [u8]> {
        let n = memchr::memchr(b'"', self.0)?;
        self.take(n)
    }
}

fn lower_hex(text: &[u8]) -> bool {
    text.iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// `(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?`
fn base64_text(text: &[u8]) -> bool {
    if text.len() % 4 != 0 {
        return false;
    }
    let padding = text.iter().rev().take_while(|&&b| b == b'=').count();
    padding <= 2
        && text[..text.len() - padding]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// `0|[1-9][0-9]{0,17}`
fn index_text(text: &[u8]) -> Option<u64> {
    let valid = match text {
        [b'0'] => true,
        [first, rest @ ..] => {
            (b'1'..=b'9').contains(first) && rest.len() <= 17 && rest.iter().all(u8::is_ascii_digit)
        }
        [] => false,
    };
    if !valid {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn hex32(text: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let nibble = |c: u8| {
            if c.is_ascii_digit() {
                c - b'0'
            } else {
                c - b'a' + 10
            }
        };
        out[i] = nibble(pair[0]) << 4 | nibble(pair[1]);
    }
    out
}

/// The leaf hash of one record line that chains after `prev` as record `index`.
fn chain_line(line: &[u8], index: u64, prev: &[u8; 32]) -> Option<[u8; 32]> {
    if line.starts_with(CHECKPOINT) {
        return None;
    }
    // split_line: the last integrity member, a top-level member at the end
    let at = memchr::memmem::rfind(line, MARK)?;
    let end = match (at, line.get(at.wrapping_sub(1))) {
        (0, _) => return None,
        (_, Some(b',')) => at - 1,
        (1, Some(b'{')) => 0,
        _ => return None,
    };
    let mut c = Cursor(&line[at..]);
    c.literal(b"\"integrity\":{\"alg\":\"")?;
    let alg = c.until_quote()?;
    if alg != b"ed25519" && alg != b"ecdsa-p256" {
        return None;
    }
    c.literal(b"\",\"hash\":\"")?;
    let hash_hex = c.take(64)?;
    c.literal(b"\",\"index\":")?;
    let digits = {
        let n = c.0.iter().take_while(|b| b.is_ascii_digit()).count();
        c.take(n)?
    };
    c.literal(b",\"key\":\"")?;
    let key = c.take(16)?;
    c.literal(b"\",\"prev\":\"")?;
    let prev_hex = c.take(64)?;
    c.literal(b"\",\"sig\":\"")?;
    let sig = c.until_quote()?;
    c.literal(b"\"}}")?;
    if !c.0.is_empty()
        || !lower_hex(hash_hex)
        || !lower_hex(key)
        || !lower_hex(prev_hex)
        || !base64_text(sig)
    {
        return None;
    }
    // _apply_record: it chains
    if index_text(digits)? != index || hex32(prev_hex) != *prev {
        return None;
    }
    let mut sha = Sha256::new();
    sha.update(b"\x00{\"alg\":\"");
    sha.update(alg);
    sha.update(b"\",\"index\":");
    sha.update(digits);
    sha.update(b",\"key\":\"");
    sha.update(key);
    sha.update(b"\",\"prev\":\"");
    sha.update(prev_hex);
    sha.update(b"\",\"record\":");
    if end > 0 {
        sha.update(&line[..end]);
        sha.update(b"}}");
    } else {
        sha.update(b"{}}");
    }
    let hash: [u8; 32] = sha.finalize().into();
    (hex32(hash_hex) == hash).then_some(hash)
}
