//! Rules for the HTTPDNS part of a world: `[[accounts]]` and `[httpdns]`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::path::FieldPath;
use super::validate::Invalid;
use crate::world::{RateLimit, World};

/// Longest account id.
const MAX_ID_LEN: usize = 64;
/// Longest signing secret.
const MAX_SECRET_LEN: usize = 256;

fn invalid<T>(path: FieldPath, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        path,
        message: message.into(),
    })
}

/// Puts service IP addresses into canonical text; unparseable ones are left for validation.
pub(crate) fn normalize_httpdns(world: &mut World) {
    for entry in &mut world.httpdns.service_ips {
        for address in entry.ipv4.iter_mut().chain(entry.ipv6.iter_mut()) {
            if let Ok(ip) = address.parse::<IpAddr>() {
                *address = ip.to_string();
            }
        }
    }
}

/// Checks accounts (ids, uniqueness, secrets) and the `[httpdns]` settings.
pub(crate) fn check_httpdns(world: &World, regions: &BTreeSet<&str>) -> Result<(), Invalid> {
    let mut ids = BTreeSet::new();
    for (i, account) in world.accounts.iter().enumerate() {
        let path = FieldPath::new("accounts").index(i);
        let id = &account.id;
        if id.is_empty()
            || id.len() > MAX_ID_LEN
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid(
                path.key("id"),
                format!("{id:?} must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 _ -"),
            );
        }
        if !ids.insert(id.as_str()) {
            return invalid(path.key("id"), format!("duplicate account {id}"));
        }
        let secret = &account.secret;
        if secret.len() > MAX_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return invalid(
                path.key("secret"),
                format!("must be at most {MAX_SECRET_LEN} printable ASCII characters, no blanks"),
            );
        }
        if secret.is_empty() && !account.unsigned_allowed {
            return invalid(
                path.key("unsigned_allowed"),
                format!("account {id} has no secret, so it must allow unsigned requests"),
            );
        }
    }

    let settings = &world.httpdns;
    let root = FieldPath::new("httpdns");
    check_limit(root.key("per_client"), settings.per_client)?;
    check_limit(root.key("per_account"), settings.per_account)?;
    let mut seen = BTreeSet::new();
    for (i, entry) in settings.service_ips.iter().enumerate() {
        let path = root.key("service_ips").index(i);
        if !regions.contains(entry.region.as_str()) {
            return invalid(
                path.key("region"),
                format!("unknown region {}", entry.region),
            );
        }
        if !seen.insert(entry.region.as_str()) {
            return invalid(
                path.key("region"),
                format!("duplicate region {}", entry.region),
            );
        }
        if entry.ipv4.is_empty() && entry.ipv6.is_empty() {
            return invalid(path.key("ipv4"), "list at least one IPv4 or IPv6 address");
        }
        for (key, list, v4) in [("ipv4", &entry.ipv4, true), ("ipv6", &entry.ipv6, false)] {
            for (j, text) in list.iter().enumerate() {
                let at = path.key(key).index(j);
                match text.parse::<IpAddr>() {
                    Ok(ip) if ip.is_ipv4() != v4 => {
                        return invalid(at, format!("{text} is not an {key} address"));
                    }
                    Ok(ip) if ip.to_string() != *text => {
                        return invalid(at, format!("{text:?} is not normalized (expected {ip})"));
                    }
                    Ok(_) => {}
                    Err(_) => return invalid(at, format!("{text:?} is not an IP address")),
                }
            }
        }
    }
    Ok(())
}

fn check_limit(path: FieldPath, limit: RateLimit) -> Result<(), Invalid> {
    if limit.rate > 0 && limit.burst == 0 {
        return invalid(path.key("burst"), "must be at least 1 when rate is set");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::parse_world;

    const BASE: &str = "[[regions]]\nname = \"eu\"\nlat = 50.0\nlon = 8.0\n";

    fn parse(extra: &str) -> Result<crate::world::World, String> {
        let text = format!("{BASE}{extra}");
        parse_world("w.toml", &text, &|p: &str| {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                p.to_owned(),
            ))
        })
        .map(|p| p.world)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn accounts_and_settings_parse_with_defaults() {
        let world = parse(
            "[[accounts]]\nid = \"100000\"\nsecret = \"IAmASecret\"\n\n\
             [[accounts]]\nid = \"open\"\n\n\
             [httpdns]\nper_client = { rate = 5, burst = 10 }\n\
             [[httpdns.service_ips]]\nregion = \"eu\"\nipv4 = [\"192.0.2.80\"]\n\
             ipv6 = [\"2001:DB8::80\"]\n",
        )
        .unwrap();
        assert_eq!(world.accounts.len(), 2);
        assert!(world.accounts.iter().all(|a| a.unsigned_allowed));
        assert_eq!(world.httpdns.per_client.rate, 5);
        assert_eq!(world.httpdns.per_account.rate, 10_000);
        assert_eq!(world.httpdns.service_ips[0].ipv6, ["2001:db8::80"]);
        // Export round-trips, secrets included.
        let again = parse_world("x.toml", &crate::config::to_toml(&world), &|_| {
            Err(std::io::Error::other("no files"))
        })
        .unwrap()
        .world;
        assert_eq!(again, world);
    }

    #[test]
    fn bad_accounts_and_settings_name_file_line_and_field() {
        let cases = [
            ("[[accounts]]\nid = \"a b\"\n", "w.toml:6", "accounts[0].id"),
            (
                "[[accounts]]\nid = \"x\"\n[[accounts]]\nid = \"x\"\n",
                "w.toml:8",
                "duplicate account x",
            ),
            (
                "[[accounts]]\nid = \"x\"\nunsigned_allowed = false\n",
                "w.toml:7",
                "accounts[0].unsigned_allowed",
            ),
            (
                "[httpdns]\nper_account = { rate = 5, burst = 0 }\n",
                "w.toml:6",
                "httpdns.per_account.burst",
            ),
            (
                "[[httpdns.service_ips]]\nregion = \"mars\"\nipv4 = [\"192.0.2.1\"]\n",
                "w.toml:6",
                "unknown region mars",
            ),
            (
                "[[httpdns.service_ips]]\nregion = \"eu\"\nipv4 = [\"2001:db8::1\"]\n",
                "w.toml:7",
                "httpdns.service_ips[0].ipv4[0]",
            ),
        ];
        for (extra, at, what) in cases {
            let err = parse(extra).unwrap_err();
            assert!(err.contains(at) && err.contains(what), "{extra}: {err}");
        }
    }
}
