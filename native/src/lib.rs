//! `secure_ds._native`: native fast paths for the DLP scanner and for the audit log's
//! canonical JSON.
//!
//! Each function here has a Python reference in `secure_ds.dlp`, which stays the
//! definition of what is found: the tests run both and require identical findings.
//! The scanner uses this module when it is built (`pip install` compiles it when a
//! Rust toolchain is present) and the Python code otherwise.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};
use regex::Regex;

mod addresses;
mod jcs;
mod numbers;
mod secrets;
mod text;
mod tokens;

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

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(has_non_finite, m)?)?;
    m.add_function(wrap_pyfunction!(orjson_agrees, m)?)?;
    m.add_class::<ScanText>()?;
    m.add_class::<SecretScanner>()?;
    m.add_class::<NumberScanner>()?;
    m.add_class::<TokenScanner>()?;
    m.add_class::<EmailScanner>()?;
    m.add_class::<IbanScanner>()?;
    m.add_class::<Ipv6Scanner>()?;
    Ok(())
}
