//! Alibaba-style request signing: `s = md5_hex(payload + "-" + secret + "-" + t)`.
//!
//! `payload` is the `host` parameter exactly as sent (for a batch, the comma list unsorted);
//! `t` is the signature's **expiry** in Unix seconds, at most [`MAX_VALIDITY_SECS`] ahead.
//! The `ip=` parameter does not enter the signature. Signatures compare in constant time.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// The longest a signature may stay valid: 24 hours.
pub const MAX_VALIDITY_SECS: i64 = 24 * 3600;

/// Why a signed request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// `t` or `s` is missing.
    #[error("signed interfaces need both t (expiry, Unix seconds) and s (signature)")]
    Missing,
    /// `t` is not a Unix time in seconds.
    #[error("t must be the expiry time in Unix seconds")]
    BadTimestamp,
    /// `t` is in the past.
    #[error("the signature has expired")]
    Expired,
    /// `t` is more than 24 h ahead.
    #[error("t is more than 24 hours in the future")]
    TooFarAhead,
    /// `s` does not match.
    #[error("the signature does not match")]
    Invalid,
}

/// The lowercase hex signature of `payload` with `secret`, valid until `t`.
pub fn sign(payload: &str, secret: &str, t: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(payload.as_bytes());
    md5.update(b"-");
    md5.update(secret.as_bytes());
    md5.update(b"-");
    md5.update(t.as_bytes());
    let digest = md5.finalize();
    let mut out = String::with_capacity(32);
    for byte in digest.iter() {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

/// Checks `s` and `t` for `payload` at `now_unix` (seconds). The expiry is checked before
/// the signature so an expired request says so even when it was signed correctly.
pub fn verify(
    payload: &str,
    secret: &str,
    t: Option<&str>,
    s: Option<&str>,
    now_unix: i64,
) -> Result<(), SignError> {
    let (Some(t), Some(s)) = (t, s) else {
        return Err(SignError::Missing);
    };
    if t.is_empty() || t.len() > 12 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignError::BadTimestamp);
    }
    let expiry: i64 = t.parse().map_err(|_| SignError::BadTimestamp)?;
    if expiry < now_unix {
        return Err(SignError::Expired);
    }
    if expiry - now_unix > MAX_VALIDITY_SECS {
        return Err(SignError::TooFarAhead);
    }
    let expected = sign(payload, secret, t);
    let given = s.to_ascii_lowercase();
    if given.len() != expected.len() || !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(SignError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two published test vectors (Alibaba Cloud EMAS HTTPDNS signing docs).
    #[test]
    fn published_test_vectors() {
        assert_eq!(
            sign("www.aliyun.com", "IAmASecret", "1534316400"),
            "60c71e98b6d7fcbb366243e224eab457"
        );
        assert_eq!(
            sign("www.aliyun.com,www.taobao.com", "IAmASecret", "1534316400"),
            "12a3f6b1b14a46ca813ca6439beb59a4"
        );
    }

    #[test]
    fn verify_checks_expiry_window_and_signature() {
        let now = 1_534_316_000;
        let good = "60c71e98b6d7fcbb366243e224eab457";
        let host = "www.aliyun.com";
        let ok = |t, s| verify(host, "IAmASecret", t, s, now);
        assert_eq!(ok(Some("1534316400"), Some(good)), Ok(()));
        let upper = good.to_uppercase();
        assert_eq!(ok(Some("1534316400"), Some(&upper)), Ok(()));
        assert_eq!(
            verify(
                host,
                "IAmASecret",
                Some("1534316400"),
                Some(good),
                1_534_316_401
            ),
            Err(SignError::Expired)
        );
        let far = (now + MAX_VALIDITY_SECS + 1).to_string();
        assert_eq!(ok(Some(&far), Some(good)), Err(SignError::TooFarAhead));
        let edge = (now + MAX_VALIDITY_SECS).to_string();
        let edge_sig = sign(host, "IAmASecret", &edge);
        assert_eq!(ok(Some(&edge), Some(&edge_sig)), Ok(()));
        assert_eq!(
            ok(Some("1534316400"), Some("60c71e98b6d7fcbb366243e224eab458")),
            Err(SignError::Invalid)
        );
        assert_eq!(
            ok(Some("1534316400"), Some("60c7")),
            Err(SignError::Invalid)
        );
        assert_eq!(
            verify(
                "www.taobao.com",
                "IAmASecret",
                Some("1534316400"),
                Some(good),
                now
            ),
            Err(SignError::Invalid)
        );
        assert_eq!(ok(None, Some(good)), Err(SignError::Missing));
        assert_eq!(ok(Some("1534316400"), None), Err(SignError::Missing));
        for bad in ["", "-1", "15343e6400", "99999999999999999999"] {
            assert_eq!(
                ok(Some(bad), Some(good)),
                Err(SignError::BadTimestamp),
                "{bad}"
            );
        }
    }
}
