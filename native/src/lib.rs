//! `secure_ds._native`: native fast paths for the DLP scanner and for the audit log
//! (canonical JSON checks, record signatures, the append path and group commit).
//!
//! Each function here has a Python reference (`secure_ds.dlp`, `secure_ds.audit`),
//! which stays the definition of what is found and written: the tests run both and
//! require identical findings and identical lines. secure-ds uses this module when it
//! is built (`pip install` compiles it when a Rust toolchain is present) and the Python
//! code otherwise.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList, PyString};
use regex::Regex;

mod addresses;
mod audit;
mod committer;
mod foreign;
mod jcs;
mod numbers;
mod secrets;
mod sync;
mod text;
mod tokens;
mod worker;

use text::Event;

/// The events as one flat list for Python, five items per event: kind (None for a
/// candidate handed back), start, end, confidence, tag (-1 for a finding), kinds
/// interned.
///
/// Not a list of tuples: a text dense with findings makes tens of thousands of rows,
/// and that many tuples (each tracked by Python's cycle collector) made the
/// collector's full passes grow the scan super-linearly (1 MB took 6x the time of
/// 250 KB). Ints, floats and interned strings are not tracked.
fn flat<'py>(py: Python<'py>, events: Vec<Event>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for event in events {
        let (start, end, confidence, tag) = match event {
            Event::Found {
                kind,
                start,
                end,
                confidence,
            } => {
                list.append(PyString::intern(py, kind))?;
                (start, end, confidence, -1)
            }
            Event::HandBack { start, end, tag } => {
                list.append(py.None())?;
                (start, end, 0.0, tag)
            }
        };
        list.append(start)?;
        list.append(end)?;
        list.append(confidence)?;
        list.append(tag)?;
    }
    Ok(list)
}

/// Runs a detector on the text without the interpreter lock, and hands its events
/// to Python.
fn detect<'py>(
    py: Python<'py>,
    text: &ScanText,
    find: impl FnOnce(&text::Text) -> Vec<Event> + Send,
) -> PyResult<Bound<'py, PyList>> {
    let text = &text.text;
    let events = py.detach(|| find(text));
    flat(py, events)
}

/// A text prepared once for every native detector of one scan: its Latin-1 view and
/// where its non-ASCII characters are. Refuses a `str` that is not valid Unicode (a
/// lone surrogate), which the Python detectors then scan.
#[pyclass(frozen, module = "secure_ds._native")]
struct ScanText {
    text: text::Text<'static>,
}

#[pymethods]
impl ScanText {
    #[new]
    fn new(py: Python<'_>, text: &str) -> Self {
        let text = py.detach(|| text::Text::new(text).into_owned());
        ScanText { text }
    }
}

fn compile(name: &str, pattern: &str) -> PyResult<Regex> {
    Regex::new(pattern).map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
}

/// `_secrets.find_secrets` (key names and URL passwords), with `_secrets`'s word lists.
#[pyclass(frozen, module = "secure_ds._native")]
struct SecretScanner {
    rules: secrets::Rules,
}

#[pymethods]
impl SecretScanner {
    #[new]
    fn new(
        name_block: &str,
        name_block_short: &str,
        key_qualifiers: &str,
        placeholder: &str,
        glued_prefixes: Vec<String>,
    ) -> PyResult<Self> {
        Ok(SecretScanner {
            rules: secrets::Rules {
                name_block: compile("name_block", name_block)?,
                name_block_short: compile("name_block_short", name_block_short)?,
                key_qualifiers: compile("key_qualifiers", key_qualifiers)?,
                placeholder: compile("placeholder", &format!("^(?:{placeholder})$"))?,
                glued_prefixes: words(glued_prefixes),
            },
        })
    }

    /// Findings and candidates handed back (tag: the keyword, or the URL tag), in the
    /// order Python produces them.
    fn scan<'py>(
        &self,
        py: Python<'py>,
        text: PyRef<'py, ScanText>,
    ) -> PyResult<Bound<'py, PyList>> {
        detect(py, &text, |text| secrets::find(text, &self.rules))
    }

    /// `_PLACEHOLDER.fullmatch` as compiled here (for the equivalence tests).
    fn placeholder(&self, value: &str) -> bool {
        self.rules.placeholder.is_match(value)
    }
}

fn words(list: Vec<String>) -> Vec<Vec<u8>> {
    list.into_iter().map(String::into_bytes).collect()
}

/// `_detectors.find_numbers`, with `_detectors`'s word lists.
#[pyclass(frozen, module = "secure_ds._native")]
struct NumberScanner {
    rules: numbers::Rules,
}

#[pymethods]
impl NumberScanner {
    #[new]
    fn new(
        phone_words: Vec<String>,
        ssn_words: Vec<String>,
        card_words: Vec<String>,
        id_words: Vec<String>,
        version_before: &str,
    ) -> PyResult<Self> {
        Ok(NumberScanner {
            rules: numbers::Rules {
                phone_words: words(phone_words),
                ssn_words: words(ssn_words),
                card_words: words(card_words),
                id_words: words(id_words),
                version_before: compile("version_before", version_before)?,
            },
        })
    }

    /// Findings and candidates handed back (tag: the pattern branch), in Python's order.
    fn scan<'py>(
        &self,
        py: Python<'py>,
        text: PyRef<'py, ScanText>,
    ) -> PyResult<Bound<'py, PyList>> {
        detect(py, &text, |text| numbers::find(text, &self.rules))
    }
}

/// `_tokens.find_tokens`: vendor keys and tokens (JWTs handed back to Python).
#[pyclass(frozen, module = "secure_ds._native")]
struct TokenScanner {
    rules: tokens::Rules,
}

#[pymethods]
impl TokenScanner {
    #[new]
    fn new(head_first_chars: String, sk_prefixes: Vec<String>) -> Self {
        TokenScanner {
            rules: tokens::Rules {
                head_first_chars: head_first_chars.into_bytes(),
                sk_prefixes: words(sk_prefixes),
            },
        }
    }

    /// Findings, and JWT candidates (kind None) for Python to check, in Python's order.
    fn scan<'py>(
        &self,
        py: Python<'py>,
        text: PyRef<'py, ScanText>,
    ) -> PyResult<Bound<'py, PyList>> {
        detect(py, &text, |text| tokens::find(text, &self.rules))
    }
}

/// `_detectors.find_emails`, with `_detectors._NOT_TLDS`.
#[pyclass(frozen, module = "secure_ds._native")]
struct EmailScanner {
    rules: addresses::EmailRules,
}

#[pymethods]
impl EmailScanner {
    #[new]
    fn new(not_tlds: Vec<String>) -> Self {
        EmailScanner {
            rules: addresses::EmailRules {
                not_tlds: words(not_tlds),
            },
        }
    }

    /// Findings, and (kind None) the `@` of candidates for Python to decide.
    fn scan<'py>(
        &self,
        py: Python<'py>,
        text: PyRef<'py, ScanText>,
    ) -> PyResult<Bound<'py, PyList>> {
        detect(py, &text, |text| addresses::find_emails(text, &self.rules))
    }
}

/// `_detectors.find_ibans`, with the registry's lengths.
#[pyclass(frozen, module = "secure_ds._native")]
struct IbanScanner {
    rules: addresses::IbanRules,
}

#[pymethods]
impl IbanScanner {
    #[new]
    fn new(lengths: HashMap<String, usize>) -> PyResult<Self> {
        let mut table = HashMap::new();
        for (country, length) in lengths {
            let code: [u8; 2] = country.as_bytes().try_into().map_err(|_| {
                PyValueError::new_err(format!("country code {country:?} is not two letters"))
            })?;
            table.insert(code, length);
        }
        Ok(IbanScanner {
            rules: addresses::IbanRules { lengths: table },
        })
    }

    fn scan<'py>(
        &self,
        py: Python<'py>,
        text: PyRef<'py, ScanText>,
    ) -> PyResult<Bound<'py, PyList>> {
        detect(py, &text, |text| addresses::find_ibans(text, &self.rules))
    }
}

/// `_detectors.find_ipv6` up to `ipv6_reportable`, which Python applies to each candidate.
#[pyclass(frozen, module = "secure_ds._native")]
struct Ipv6Scanner;

#[pymethods]
impl Ipv6Scanner {
    #[new]
    fn new() -> Self {
        Ipv6Scanner
    }

    /// Candidates (kind None) for `ipv6_reportable`, in order.
    fn scan<'py>(
        &self,
        py: Python<'py>,
        text: PyRef<'py, ScanText>,
    ) -> PyResult<Bound<'py, PyList>> {
        detect(py, &text, addresses::find_ipv6)
    }
}

/// `_jcs._has_non_finite`: a NaN or an infinity among the value's floats.
#[pyfunction]
fn has_non_finite(value: &Bound<'_, PyAny>) -> bool {
    jcs::has_non_finite(value)
}

/// `_jcs._orjson_and_ecmascript_agree`: orjson's bytes are already RFC 8785's.
#[pyfunction]
fn orjson_agrees(out: &[u8]) -> bool {
    jcs::orjson_agrees(out)
}

/// An Ed25519 key that signs audit records: `_signing.SoftwareSigner`'s key, whose
/// signatures these are byte for byte (Ed25519 is deterministic).
#[pyclass(frozen, module = "secure_ds._native")]
struct RecordSigner {
    key: Arc<audit::RecordKey>,
}

#[pymethods]
impl RecordSigner {
    /// From the key's 32-byte seed (RFC 8032 private key).
    #[new]
    fn new(seed: &[u8]) -> PyResult<Self> {
        let key = audit::RecordKey::from_seed(seed)
            .ok_or_else(|| PyValueError::new_err("an Ed25519 seed is 32 bytes"))?;
        Ok(RecordSigner { key: Arc::new(key) })
    }

    /// The raw 32-byte public key.
    fn public_key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.key.public_key())
    }

    fn sign<'py>(&self, py: Python<'py>, message: &[u8]) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.key.sign(message))
    }

    /// `_log.AuditLog._commit`'s loop over a batch: the lines of `bodies` as records
    /// `index`, `index + 1`, ... chained from `prev`, and their leaf hashes (32 bytes
    /// each, concatenated). Runs without the interpreter lock.
    fn commit<'py>(
        &self,
        py: Python<'py>,
        key_id: &str,
        index: u64,
        prev: &[u8],
        bodies: Vec<PyBackedBytes>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let prev = check_batch(key_id, prev, &bodies)?;
        let batch = py.detach(|| {
            let slices: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
            audit::commit(&self.key, "ed25519", key_id, index, &prev, &slices)
        });
        Ok((
            PyBytes::new(py, &batch.lines),
            PyBytes::new(py, &batch.hashes),
        ))
    }
}

/// The arguments' shape, checked before any byte is signed: the key id as records
/// carry it, a 32-byte leaf hash, canonical JSON objects.
fn check_batch(key_id: &str, prev: &[u8], bodies: &[PyBackedBytes]) -> PyResult<[u8; 32]> {
    if key_id.len() != 16
        || !key_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(PyValueError::new_err("a key id is 16 lowercase hex digits"));
    }
    for body in bodies {
        if body.len() < 2 || body[0] != b'{' || body[body.len() - 1] != b'}' {
            return Err(PyValueError::new_err(
                "a record body is a canonical JSON object",
            ));
        }
    }
    prev.try_into()
        .map_err(|_| PyValueError::new_err("prev is a 32-byte leaf hash"))
}

/// `_log.AuditLog`'s group commit (`fsync="always"`): a thread of its own fsyncs the
/// log back to back while written bytes are unsynced (`sync.rs`).
#[pyclass(frozen, module = "secure_ds._native")]
struct GroupSync {
    syncer: Arc<sync::Syncer>,
    thread: worker::Worker,
}

#[pymethods]
impl GroupSync {
    /// Starts the thread. `fd`: the log (owned by the caller, open until `close`);
    /// `side_fd`: the side file `<log>.synced`, and `probe_fd`: the log opened again
    /// (both owned from now on), with the log's device and inode numbers.
    #[new]
    #[pyo3(signature = (fd, side_fd, dev, ino, probe_fd=None))]
    fn new(
        fd: i32,
        side_fd: Option<i32>,
        dev: u64,
        ino: u64,
        probe_fd: Option<i32>,
    ) -> PyResult<Self> {
        let syncer = Arc::new(sync::Syncer::new(fd, side_fd, probe_fd, dev, ino));
        let runner = syncer.clone();
        let thread = worker::Worker::spawn("secure-ds-audit-fsync", move || runner.run())?;
        Ok(GroupSync { syncer, thread })
    }

    /// Returns once the log's bytes below `end` (written, whole lines) are fsynced;
    /// OSError when an fsync failed (this one or an earlier one). Waits without the
    /// interpreter lock.
    fn wait(&self, py: Python<'_>, end: u64) -> PyResult<()> {
        py.detach(|| self.syncer.wait(end)).map_err(os_error)
    }

    /// (fsyncs this process ran (others' covered the rest), seconds spent in them,
    /// seconds spent gathering records before them)
    fn stats(&self) -> (u64, f64, f64) {
        self.syncer.stats()
    }

    /// Stops and joins the thread (once what was written is synced) and closes the
    /// side file; a later `wait` beyond the synced bytes gets ECANCELED.
    fn close(&self, py: Python<'_>) {
        self.syncer.stop();
        self.thread.join(py);
        self.syncer.close_side();
    }
}

impl Drop for GroupSync {
    fn drop(&mut self) {
        self.syncer.stop(); // the thread ends on its own; close() also joins it
    }
}

/// `_log.AuditLog._catch_up` over record lines, natively (`foreign.rs`): the leaf
/// hashes of the records in `data` chained after record `index - 1` (leaf hash
/// `prev`), and the tree size and newest leaf hash after them; None when Python must
/// take them in. For the tests, which hold it to the Python code.
#[pyfunction]
fn take_in_records<'py>(
    py: Python<'py>,
    data: &[u8],
    index: u64,
    prev: &[u8],
) -> PyResult<Option<(Bound<'py, PyBytes>, u64, Bound<'py, PyBytes>)>> {
    let prev: [u8; 32] = prev
        .try_into()
        .map_err(|_| PyValueError::new_err("prev is a 32-byte leaf hash"))?;
    Ok(foreign::take_in(data, index, &prev)
        .map(|(hashes, index, prev)| (PyBytes::new(py, &hashes), index, PyBytes::new(py, &prev))))
}

/// `OSError(errno, strerror)`, as `os` functions raise it (the errno's subclass, and
/// `.errno`/`.strerror` set, which the log's error messages name).
fn os_error(errno: i32) -> PyErr {
    // strerror's text for the errno, as Python's os.strerror gives it
    let text = unsafe { std::ffi::CStr::from_ptr(libc::strerror(errno)) }
        .to_string_lossy()
        .into_owned();
    PyOSError::new_err((errno, text))
}

fn outcome(seq: u64, outcome: committer::Outcome) -> PyResult<Option<u64>> {
    match outcome {
        committer::Outcome::Done => Ok(None),
        committer::Outcome::HandBack => Ok(Some(seq)),
        committer::Outcome::Failed(committer::Failure::Os(e)) => Err(os_error(e)),
        committer::Outcome::Failed(committer::Failure::Python) | committer::Outcome::Closed => {
            Err(os_error(libc::ECANCELED))
        }
    }
}

/// `_log.AuditLog`'s append path with a software Ed25519 key: a committer thread
/// chains, signs and writes queued records without the interpreter lock, and hands
/// the rare batch back to Python (`committer.rs`).
#[pyclass(frozen, module = "secure_ds._native")]
struct Committer {
    inner: Arc<committer::Committer>,
    thread: worker::Worker,
}

#[pymethods]
impl Committer {
    /// Starts the thread, continuing the chain (`index`, `prev`, `end`: the tree size,
    /// the newest leaf hash and the file size this writer has read; `sealed`: the newest
    /// checkpoint's tree size). `fd` stays the caller's, open until `close`.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (fd, signer, key_id, checkpoint_every, index, prev, end, sealed, group))]
    fn new(
        fd: i32,
        signer: PyRef<'_, RecordSigner>,
        key_id: &str,
        checkpoint_every: u64,
        index: u64,
        prev: &[u8],
        end: u64,
        sealed: u64,
        group: Option<PyRef<'_, GroupSync>>,
    ) -> PyResult<Self> {
        let prev = check_batch(key_id, prev, &[])?;
        let inner = Arc::new(committer::Committer::new(
            fd,
            signer.key.clone(),
            key_id.to_owned(),
            checkpoint_every.max(1),
            committer::Chain {
                index,
                prev,
                end,
                sealed,
            },
            group.map(|g| g.syncer.clone()),
        ));
        let runner = inner.clone();
        let thread = worker::Worker::spawn("secure-ds-audit-commit", move || runner.run())?;
        Ok(Committer { inner, thread })
    }

    /// Queues `body` (a canonical JSON object) and waits, without the interpreter
    /// lock, until it is written (and synced, with a group): None. Or the record's
    /// number, when Python must commit the queue first (`pause(True)`, `_commit`,
    /// `resume`), then `wait` for it. OSError: the log failed or closed.
    fn append(&self, py: Python<'_>, body: &[u8]) -> PyResult<Option<u64>> {
        if body.len() < 2 || body[0] != b'{' || body[body.len() - 1] != b'}' {
            return Err(PyValueError::new_err(
                "a record body is a canonical JSON object",
            ));
        }
        let body = body.to_vec();
        let (seq, result) = py.detach(|| self.inner.append(body));
        outcome(seq, result)
    }

    /// `append`'s wait, again, after a hand-back.
    fn wait(&self, py: Python<'_>, seq: u64) -> PyResult<Option<u64>> {
        let result = py.detach(|| self.inner.wait(seq));
        outcome(seq, result)
    }

    /// Stops the committer between batches: (tree size, newest leaf hash, file size,
    /// leaf hashes written since the last pause, the queued bodies if `take`, the
    /// last of their numbers).
    #[allow(clippy::type_complexity)]
    fn pause<'py>(
        &self,
        py: Python<'py>,
        take: bool,
    ) -> (
        u64,
        Bound<'py, PyBytes>,
        u64,
        Bound<'py, PyBytes>,
        Vec<Bound<'py, PyBytes>>,
        Option<u64>,
    ) {
        let paused = py.detach(|| self.inner.pause(take));
        (
            paused.chain.index,
            PyBytes::new(py, &paused.chain.prev),
            paused.chain.end,
            PyBytes::new(py, &paused.new_hashes),
            paused.bodies.iter().map(|b| PyBytes::new(py, b)).collect(),
            paused.last_seq,
        )
    }

    /// Continues from the chain Python leaves; `written_through`: the last record of a
    /// taken queue (now in the file).
    #[pyo3(signature = (index, prev, end, sealed, written_through=None))]
    fn resume(
        &self,
        index: u64,
        prev: &[u8],
        end: u64,
        sealed: u64,
        written_through: Option<u64>,
    ) -> PyResult<()> {
        let prev: [u8; 32] = prev
            .try_into()
            .map_err(|_| PyValueError::new_err("prev is a 32-byte leaf hash"))?;
        self.inner.resume(
            committer::Chain {
                index,
                prev,
                end,
                sealed,
            },
            written_through,
        );
        Ok(())
    }

    /// Signs with `signer` (key id `key_id`) from now on, or hands every batch back
    /// (None); while paused.
    #[pyo3(signature = (signer, key_id))]
    fn set_signer(&self, signer: Option<PyRef<'_, RecordSigner>>, key_id: &str) -> PyResult<()> {
        check_batch(key_id, &[0; 32], &[])?;
        self.inner
            .set_key(signer.map(|s| (s.key.clone(), key_id.to_owned())));
        Ok(())
    }

    /// Python failed the log: every waiting and later append fails.
    fn fail(&self) {
        self.inner.fail();
    }

    /// Seconds since the oldest record written here that no checkpoint covers, or None.
    fn unsealed_age(&self) -> Option<f64> {
        self.inner.unsealed_age()
    }

    /// The tree size as far as this writer has written or read.
    fn size(&self) -> u64 {
        self.inner.size()
    }

    /// Stops and joins the thread; appends not yet written fail.
    fn close(&self, py: Python<'_>) {
        self.inner.stop();
        self.thread.join(py);
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.inner.stop();
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(has_non_finite, m)?)?;
    m.add_function(wrap_pyfunction!(orjson_agrees, m)?)?;
    m.add_function(wrap_pyfunction!(take_in_records, m)?)?;
    m.add_class::<ScanText>()?;
    m.add_class::<SecretScanner>()?;
    m.add_class::<NumberScanner>()?;
    m.add_class::<TokenScanner>()?;
    m.add_class::<EmailScanner>()?;
    m.add_class::<IbanScanner>()?;
    m.add_class::<Ipv6Scanner>()?;
    m.add_class::<RecordSigner>()?;
    m.add_class::<GroupSync>()?;
    m.add_class::<Committer>()?;
    Ok(())
}
