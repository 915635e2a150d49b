//! The request's query string, which a waSCC host passes raw, still
//! percent-encoded. This module uses std only, so that its unit tests
//! compile alone on the build machine (tests/test_rust_units.py), where
//! the actor itself, a wasm32 module with a model, does not build.

/// `top=N` from the query string; other parameters are ignored. Keys and
/// values are percent-decoded (`?top=%33` is `?top=3`); a malformed escape
/// anywhere is an error, as the query cannot be read.
pub fn parse_top(query: &str) -> Result<Option<usize>, String> {
    let mut top = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_decode(value)?;
        if percent_decode(key)? == "top" {
            match decoded.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => top = Some(n),
                // the raw value: a decoded one could hold a line break
                _ => return Err(format!("top={}: want a number from 1 to 1000", value)),
            }
        }
    }
    Ok(top)
}

/// Decodes `%XX` escapes (RFC 3986); `+` is left as it is, as only HTML
/// forms mean a space by it.
pub fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            decoded.push(bytes[i]);
            i += 1;
            continue;
        }
        let byte = bytes.get(i + 1..i + 3).and_then(|h| Some(hex(h[0])? << 4 | hex(h[1])?));
        decoded.push(byte.ok_or_else(|| malformed(&bytes[i..]))?);
        i += 3;
    }
    String::from_utf8(decoded).map_err(|_| format!("query: '{}' is not UTF-8 once decoded", text))
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

/// Names the escape: `%` and the (up to) two bytes after it.
fn malformed(escape: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&escape[..escape.len().min(3)]);
    format!("malformed escape '{}' in the query: % takes two hex digits", shown)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn escapes_are_decoded_in_keys_and_values() {
        assert_eq!(parse_top("top=%33"), Ok(Some(3)));
        assert_eq!(parse_top("%74op=1%30"), Ok(Some(10)));
        assert_eq!(parse_top("a=%C3%A9&top=2"), Ok(Some(2)));
        assert_eq!(percent_decode("%e2%82%ac+x"), Ok("€+x".to_string()));
    }

    #[test]
    fn a_malformed_escape_is_named() {
        for (query, escape) in [("top=%3", "'%3'"), ("top=%", "'%'"), ("top=%zz", "'%zz'"), ("x=%+1&top=2", "'%+1'")] {
            let err = parse_top(query).unwrap_err();
            assert!(err.starts_with(&format!("malformed escape {} in the query", escape)), "{}: {}", query, err);
        }
        // the escape is cut after 3 bytes, even inside a character, without a panic
        assert!(percent_decode("%é").unwrap_err().starts_with("malformed escape '%é'"));
        assert!(percent_decode("%€").unwrap_err().starts_with("malformed escape '%\u{FFFD}'"));
    }

    #[test]
    fn decoded_bytes_must_be_utf8() {
        assert!(parse_top("top=%FF").unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn top_is_checked_after_decoding() {
        assert_eq!(parse_top(""), Ok(None));
        assert_eq!(parse_top("other=x&&top"), Err("top=: want a number from 1 to 1000".to_string()));
        assert_eq!(parse_top("top=%30"), Err("top=%30: want a number from 1 to 1000".to_string()));
        assert!(parse_top("top=%0A5").unwrap_err().starts_with("top=%0A5:"));
    }
}
