//! The HTTPDNS query-string parser: the few parameters the Alibaba dialect knows, decoded.
//!
//! `application/x-www-form-urlencoded` rules: pairs split on `&`, key and value on the first
//! `=`, `+` is a space, `%XX` a byte; the decoded bytes must be UTF-8. Unknown keys are
//! ignored (SDKs add their own, e.g. `sdk_version`); for a repeated key the first wins (as
//! Google's DoH JSON API does). Values borrow from the input unless they needed decoding, so
//! a typical request allocates nothing here.

use std::borrow::Cow;

/// Longest query string accepted, bytes. Five hosts of 253 characters plus the rest fit.
pub const MAX_QUERY_LEN: usize = 4096;

/// The parameters of one request, decoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params<'a> {
    /// `host`: one name, or a comma list on `resolve`.
    pub host: Option<Cow<'a, str>>,
    /// `ip`: the client address to answer for (a comma list on `resolve`).
    pub ip: Option<Cow<'a, str>>,
    /// `query`: `4`, `6` or `4,6`.
    pub query: Option<Cow<'a, str>>,
    /// `t`: signature expiry, Unix seconds.
    pub t: Option<Cow<'a, str>>,
    /// `s`: the signature.
    pub s: Option<Cow<'a, str>>,
    /// `did`: a device id.
    pub did: Option<Cow<'a, str>>,
    /// `region`: the region of `ss`.
    pub region: Option<Cow<'a, str>>,
}

/// Why a query string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Longer than [`MAX_QUERY_LEN`].
    #[error("the query string is longer than {MAX_QUERY_LEN} bytes")]
    TooLong,
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding in parameter {0:?}")]
    BadEscape(String),
    /// The decoded bytes are not UTF-8.
    #[error("parameter {0:?} is not UTF-8 once decoded")]
    NotUtf8(String),
}

/// Parses `raw` (the part after `?`, without it).
pub fn parse(raw: &str) -> Result<Params<'_>, QueryError> {
    if raw.len() > MAX_QUERY_LEN {
        return Err(QueryError::TooLong);
    }
    let mut out = Params::default();
    for pair in raw.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "host" => &mut out.host,
            "ip" => &mut out.ip,
            "query" => &mut out.query,
            "t" => &mut out.t,
            "s" => &mut out.s,
            "did" => &mut out.did,
            "region" => &mut out.region,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(decode(key, value)?);
        }
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode<'a>(key: &str, value: &'a str) -> Result<Cow<'a, str>, QueryError> {
    if !value.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(value));
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let pair = bytes
                    .get(i + 1)
                    .copied()
                    .and_then(hex)
                    .zip(bytes.get(i + 2).copied().and_then(hex));
                let Some((hi, lo)) = pair else {
                    return Err(QueryError::BadEscape(key.to_owned()));
                };
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| QueryError::NotUtf8(key.to_owned()))
}

/// Encodes one value for a query string (the inverse of the decoding above; used by tests
/// and clients).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_known_keys_and_ignores_the_rest() {
        let p =
            parse("host=a.example,b.example&ip=1.2.3.4&x=1&query=4%2C6&did=d+1&host=z").unwrap();
        assert_eq!(p.host.as_deref(), Some("a.example,b.example"));
        assert_eq!(p.ip.as_deref(), Some("1.2.3.4"));
        assert_eq!(p.query.as_deref(), Some("4,6"));
        assert_eq!(p.did.as_deref(), Some("d 1"));
        assert!(
            matches!(p.host, Some(Cow::Borrowed(_))),
            "no decoding, no copy"
        );
        assert_eq!(parse("").unwrap(), Params::default());
        assert_eq!(parse("host").unwrap().host.as_deref(), Some(""));
    }

    #[test]
    fn refuses_bad_escapes_non_utf8_and_long_strings() {
        assert_eq!(parse("host=%4"), Err(QueryError::BadEscape("host".into())));
        assert_eq!(parse("s=%zz"), Err(QueryError::BadEscape("s".into())));
        assert_eq!(parse("t=%ff"), Err(QueryError::NotUtf8("t".into())));
        assert_eq!(
            parse(&"a".repeat(MAX_QUERY_LEN + 1)),
            Err(QueryError::TooLong)
        );
        // Unknown keys are not decoded, so their encoding does not matter.
        assert!(parse("junk=%zz&host=a").is_ok());
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(raw in ".{0,300}") {
            let _ = parse(&raw);
        }

        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&String::from_utf8_lossy(&raw));
        }

        #[test]
        fn encoded_values_round_trip(
            host in ".{0,40}", ip in ".{0,20}", did in "[ -~]{0,30}", junk in "[a-z]{1,5}",
        ) {
            let raw = format!(
                "{junk}x=1&host={}&ip={}&did={}&host=ignored",
                encode(&host), encode(&ip), encode(&did)
            );
            let p = parse(&raw).unwrap();
            prop_assert_eq!(p.host.as_deref(), Some(host.as_str()));
            prop_assert_eq!(p.ip.as_deref(), Some(ip.as_str()));
            prop_assert_eq!(p.did.as_deref(), Some(did.as_str()));
            prop_assert_eq!(p.s, None);
        }
    }
}
