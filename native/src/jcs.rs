//! The two checks `secure_ds.audit._jcs.canonicalize` runs on orjson's output, natively.
//!
//! The Python functions `_has_non_finite` and `_orjson_and_ecmascript_agree` are the
//! reference; these follow them step by step (the tests compare both on generated
//! values and byte strings). They are most of what canonicalising an audit record
//! costs once orjson has written it.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyTuple};

/// Whether a NaN or an infinity is among `value`'s floats, looking through exact
/// dicts (their values), lists and tuples only, as `_has_non_finite` does.
pub fn has_non_finite(value: &Bound<'_, PyAny>) -> bool {
    let mut stack = vec![value.clone()];
    while let Some(v) = stack.pop() {
        if let Ok(dict) = v.cast_exact::<PyDict>() {
            // iter(), not values(): values() builds a list per dict (a dozen per audit
            // record), iter() walks the dict in place
            stack.extend(dict.iter().map(|(_, value)| value));
        } else if let Ok(list) = v.cast_exact::<PyList>() {
            stack.extend(list.iter());
        } else if let Ok(tuple) = v.cast_exact::<PyTuple>() {
            stack.extend(tuple.iter());
        } else if let Ok(float) = v.cast_exact::<PyFloat>() {
            if !float.value().is_finite() {
                return true;
            }
        }
    }
    false
}

const DELIMITERS: &[u8] = b",}]";

fn number_byte(b: u8) -> bool {
    b.is_ascii_digit() || b == b'.' || b == b'-'
}

/// `_number_before`: whether `out[..at]` ends in a JSON number token.
fn number_before(out: &[u8], at: usize) -> bool {
    let mut start = at;
    while start > 0 && number_byte(out[start - 1]) {
        start -= 1;
    }
    start < at
        && out[start..at].iter().any(|&b| b != b'-' && b != b'.')
        && (start == 0 || matches!(out[start - 1], b':' | b',' | b'['))
}

/// `_orjson_and_ecmascript_agree`: false if `out` may hold an integral float
/// (`<digits>.0`), an exponent after a digit, or a character past U+FFFF.
pub fn orjson_agrees(out: &[u8]) -> bool {
    for at in memchr::memmem::find_iter(out, b".0") {
        let after = out.get(at + 2);
        if after.is_none_or(|b| DELIMITERS.contains(b)) && number_before(out, at) {
            return false;
        }
    }
    for needle in [&b"e+"[..], b"e-"] {
        for at in memchr::memmem::find_iter(out, needle) {
            if at > 0 && out[at - 1].is_ascii_digit() && number_before(out, at) {
                return false;
            }
        }
    }
    !out.iter().any(|&b| b >= 0xF0)
}
