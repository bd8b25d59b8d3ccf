//! The audit log's per-record work, natively: chain, leaf hash, Ed25519 signature and
//! the rendered line, for a batch of canonical record bodies.
//!
//! `secure_ds.audit._entry` (`leaf_data`, `leaf_hash_of`, `render_line`) and the
//! software Ed25519 signer (`cryptography`) are the reference; the lines written here
//! are byte for byte what they produce (Ed25519 is deterministic, RFC 8032), and the
//! tests compare both. The batch runs without the interpreter lock, so the threads
//! that canonicalise the next records run on the other core meanwhile.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use zeroize::Zeroize;
use sha2::{Digest, Sha256};

/// An Ed25519 private key (its 32-byte seed). ed25519-dalek zeroes the key's bytes
/// when it is dropped (`ZeroizeOnDrop`), and `from_seed` zeroes its own copy; the
/// caller's bytes (a Python `bytes` object) are not.
pub struct RecordKey {
    key: SigningKey,
}

impl RecordKey {
    pub fn from_seed(seed: &[u8]) -> Option<Self> {
        let mut seed: [u8; 32] = seed.try_into().ok()?;
        let key = SigningKey::from_bytes(&seed);
        seed.zeroize();
        Some(Self { key })
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// A record placed in the chain: its leaf data (what is signed) and leaf hash.
#[derive(Clone)]
pub struct Leaf {
    pub index: u64,
    pub prev: [u8; 32],
    pub data: Vec<u8>,
    pub hash: [u8; 32],
}

/// The leaf data `{"alg":A,"index":I,"key":K,"prev":P,"record":BODY}` of `body` as
/// record `index` chained to `prev`, and its leaf hash SHA-256(0x00 ‖ leaf data), as
/// `_entry.leaf_data` and `leaf_hash_of` make them.
pub fn leaf(alg: &str, key_id: &str, index: u64, prev: &[u8; 32], body: &[u8]) -> Leaf {
    let mut data = Vec::with_capacity(body.len() + 160);
    data.extend_from_slice(b"{\"alg\":\"");
    data.extend_from_slice(alg.as_bytes());
    data.extend_from_slice(b"\",\"index\":");
    data.extend_from_slice(index.to_string().as_bytes());
    data.extend_from_slice(b",\"key\":\"");
    data.extend_from_slice(key_id.as_bytes());
    data.extend_from_slice(b"\",\"prev\":\"");
    push_hex(&mut data, prev);
    data.extend_from_slice(b"\",\"record\":");
    data.extend_from_slice(body);
    data.push(b'}');
    let mut sha = Sha256::new();
    sha.update([0u8]);
    sha.update(&data);
    Leaf {
        index,
        prev: *prev,
        hash: sha.finalize().into(),
        data,
    }
}

/// Signs the leaf and appends the record's line to `out`, as `_entry.render_line`
/// writes it: the body without its closing brace, a comma unless the body is `{}`,
/// then `"integrity":{"alg","hash","index","key","prev","sig"}` and `}\n`.
pub fn sign_line(
    out: &mut Vec<u8>,
    key: &RecordKey,
    alg: &str,
    key_id: &str,
    leaf: &Leaf,
    body: &[u8],
) {
    let sig = key.sign(&leaf.data);
    out.extend_from_slice(&body[..body.len() - 1]);
    if body.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(b"\"integrity\":{\"alg\":\"");
    out.extend_from_slice(alg.as_bytes());
    out.extend_from_slice(b"\",\"hash\":\"");
    push_hex(out, &leaf.hash);
    out.extend_from_slice(b"\",\"index\":");
    out.extend_from_slice(leaf.index.to_string().as_bytes());
    out.extend_from_slice(b",\"key\":\"");
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(b"\",\"prev\":\"");
    push_hex(out, &leaf.prev);
    out.extend_from_slice(b"\",\"sig\":\"");
    out.extend_from_slice(STANDARD.encode(sig).as_bytes());
    out.extend_from_slice(b"\"}}\n");
}

/// What a batch produced: the lines, one after the other (each ending in a newline),
/// and the leaf hashes, 32 bytes per record, in order.
pub struct Batch {
    pub lines: Vec<u8>,
    pub hashes: Vec<u8>,
}

/// Chains, signs and renders `bodies` (canonical JSON objects) as records `index`,
/// `index + 1`, ..., the first one chained to `prev` (`leaf`, then `sign_line`).
pub fn commit(
    key: &RecordKey,
    alg: &str,
    key_id: &str,
    index: u64,
    prev: &[u8; 32],
    bodies: &[&[u8]],
) -> Batch {
    let mut lines = Vec::with_capacity(bodies.iter().map(|b| b.len() + 400).sum());
    let mut hashes = Vec::with_capacity(32 * bodies.len());
    let mut prev = *prev;
    for (offset, body) in bodies.iter().enumerate() {
        let leaf = leaf(alg, key_id, index + offset as u64, &prev, body);
        sign_line(&mut lines, key, alg, key_id, &leaf, body);
        hashes.extend_from_slice(&leaf.hash);
        prev = leaf.hash;
    }
    Batch { lines, hashes }
}

/// The records other writers appended since this one last wrote, taken in: their
/// leaf hashes, and the tree size and file size after them.
pub struct CaughtUp {
    pub hashes: Vec<u8>,
    pub index: u64,
    pub end: u64,
}

/// How `write_lines` ended.
pub enum Written {
    /// The lines are in the file (`bytes` of them). With `caught_up`, other writers had
    /// appended records first: they were taken in, and the batch chained again after
    /// them (`rechained`: its leaf hashes) before it was written.
    Done {
        bytes: usize,
        caught_up: Option<CaughtUp>,
        rechained: Option<Vec<u8>>,
    },
    /// The file changed in a way only Python takes in (a checkpoint line, a line that
    /// does not chain, a torn line, a file that shrank), or the batch must not be
    /// written as it is (`rechain` said so): nothing was written.
    Moved,
    /// A system call failed (errno); the file is as it was (a partial write is cut
    /// back under the lock).
    Failed(i32),
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Appends `lines` (records `index`, ... chained to `prev`) to the log `fd` (opened
/// with O_APPEND) under its `flock`. If the file no longer ends at `end`, the records
/// other writers appended are taken in (`foreign::take_in`, as `_log._catch_up` does)
/// and `rechain(index, prev)` makes the batch again after them, all under the lock; a
/// line only Python takes in means `Moved`. A write that fails part-way is truncated
/// back before the lock is released, so no other process ever reads half a line.
pub fn write_lines(
    fd: i32,
    end: u64,
    index: u64,
    prev: &[u8; 32],
    lines: &[u8],
    rechain: impl FnOnce(u64, &[u8; 32]) -> Option<Batch>,
) -> Written {
    let _lock = match FileLock::exclusive(fd) {
        Ok(lock) => lock,
        Err(e) => return Written::Failed(e),
    };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Written::Failed(errno());
    }
    let size = st.st_size as u64;
    if size == end {
        return match append_all(fd, end, lines) {
            Ok(()) => Written::Done {
                bytes: lines.len(),
                caught_up: None,
                rechained: None,
            },
            Err(e) => Written::Failed(e),
        };
    }
    if size < end {
        return Written::Moved; // it shrank: Python fails the log closed
    }
    let mut data = vec![0u8; (size - end) as usize];
    let mut read = 0;
    while read < data.len() {
        let n = unsafe {
            libc::pread(
                fd,
                data[read..].as_mut_ptr().cast(),
                data.len() - read,
                (end + read as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Written::Failed(e);
        }
        if n == 0 {
            return Written::Moved;
        }
        read += n as usize;
    }
    let Some((hashes, index, prev)) = crate::foreign::take_in(&data, index, prev) else {
        return Written::Moved;
    };
    let Some(batch) = rechain(index, &prev) else {
        return Written::Moved;
    };
    match append_all(fd, size, &batch.lines) {
        Ok(()) => Written::Done {
            bytes: batch.lines.len(),
            caught_up: Some(CaughtUp {
                hashes,
                index,
                end: size,
            }),
            rechained: Some(batch.hashes),
        },
        Err(e) => Written::Failed(e),
    }
}

/// The log's `flock`, held until dropped (however `write_lines` returns).
struct FileLock(i32);

impl FileLock {
    fn exclusive(fd: i32) -> Result<Self, i32> {
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(errno());
        }
        Ok(FileLock(fd))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}

/// `write(2)` until all of `lines` is in; on failure, cut the file back to `start`.
fn append_all(fd: i32, start: u64, lines: &[u8]) -> Result<(), i32> {
    let mut rest = lines;
    while !rest.is_empty() {
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            unsafe { libc::ftruncate(fd, start as libc::off_t) };
            return Err(e);
        }
        rest = &rest[n as usize..];
    }
    Ok(())
}
