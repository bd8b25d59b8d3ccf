//! `secure_ds._native`: native fast paths for the DLP scanner.
//!
//! Each function here has a Python reference in `secure_ds.dlp`, which stays the
//! definition of what is found: the tests run both and require identical findings.
//! The scanner uses this module when it is built (`pip install` compiles it when a
//! Rust toolchain is present) and the Python code otherwise.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use regex::Regex;

mod numbers;
mod secrets;
mod text;

/// One result row for Python: (kind or None when deferred, start, end, confidence,
/// keyword index of a deferred candidate or -1).
type Row = (Option<&'static str>, usize, usize, f64, i64);

fn compile(name: &str, pattern: &str) -> PyResult<Regex> {
    Regex::new(pattern).map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
}

/// The key-name half of `_secrets.find_secrets`, with `_secrets`'s word lists.
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

    /// Findings and deferred keyword matches, in the order Python produces them.
    fn scan(&self, py: Python<'_>, text: &str) -> Vec<Row> {
        let events = py.detach(|| secrets::find(&text::Text::new(text), &self.rules));
        events
            .into_iter()
            .map(|event| match event {
                secrets::Event::Found {
                    kind,
                    start,
                    end,
                    confidence,
                } => (Some(kind), start, end, confidence, -1),
                secrets::Event::Deferred { keyword, start } => {
                    (None, start, start, 0.0, keyword as i64)
                }
            })
            .collect()
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

    /// Findings and deferred candidates (branch index), in Python's order.
    fn scan(&self, py: Python<'_>, text: &str) -> Vec<Row> {
        let events = py.detach(|| numbers::find(&text::Text::new(text), &self.rules));
        events
            .into_iter()
            .map(|event| match event {
                numbers::Event::Found {
                    kind,
                    start,
                    end,
                    confidence,
                } => (Some(kind), start, end, confidence, -1),
                numbers::Event::Deferred { branch, start, end } => {
                    (None, start, end, 0.0, branch.index())
                }
            })
            .collect()
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SecretScanner>()?;
    m.add_class::<NumberScanner>()?;
    Ok(())
}
