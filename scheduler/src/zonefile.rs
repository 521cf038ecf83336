//! One zone of the world as an RFC 1035 master file: import (replace a zone's records) and export.
//!
//! Import goes through the config parser, so a zone file is checked by exactly the rules a
//! `[[zones]] file = ...` in `world.toml` is (line-numbered errors, canonical records, a
//! synthesized SOA/NS when missing), and the whole resulting world is validated before the
//! store sees it. The store then applies it as one audited transaction that bumps the config
//! version, like any other config change.

use isobar_store::config;
use isobar_store::world::{World, Zone};
use tracing::info;

use crate::{Applied, Scheduler, SchedulerError};

/// Errors of zone import and export that are not config errors.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// No zone name was given and the file does not say (no `$ORIGIN`, no absolute SOA owner).
    #[error("cannot tell which zone {0} holds: pass the zone name or start the file with $ORIGIN")]
    NoZoneName(String),
    /// The zone name is not a valid domain name.
    #[error("bad zone name {name:?}: {message}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// The world has no such zone.
    #[error("no zone {0} is configured")]
    UnknownZone(String),
}

/// Normalizes a zone name the way the config does: lowercase, absolute.
pub fn normalize_zone_name(name: &str) -> Result<String, ZoneError> {
    let bad = |message: String| ZoneError::BadName {
        name: name.to_owned(),
        message,
    };
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(bad("empty".into()));
    }
    let parsed = hickory_proto::rr::Name::from_ascii(trimmed).map_err(|e| bad(e.to_string()))?;
    let mut text = parsed.to_lowercase().to_ascii();
    if !text.ends_with('.') {
        text.push('.');
    }
    Ok(text)
}

/// The zone a master file holds, when it says: its first `$ORIGIN`, else the owner of its
/// first SOA record if that owner is absolute.
pub fn zone_name_in(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        if first.eq_ignore_ascii_case("$ORIGIN") {
            return words.next().and_then(|n| normalize_zone_name(n).ok());
        }
        let is_soa = words.any(|w| w.eq_ignore_ascii_case("SOA"));
        if is_soa && first.ends_with('.') {
            return normalize_zone_name(first).ok();
        }
    }
    None
}

/// `world` with zone `zone` (created if absent) holding exactly the records of the master
/// file `text`. `source_name` names the file in errors (`zone.db:12: ...`). The result is
/// parsed, canonicalized and validated as a whole world.
pub fn replace_zone(
    world: &World,
    zone: &str,
    source_name: &str,
    text: &str,
) -> Result<World, SchedulerError> {
    let zone = normalize_zone_name(zone)?;
    let mut world = world.clone();
    let imported = Zone {
        name: zone.clone(),
        file: Some(source_name.to_owned()),
        records: Vec::new(),
    };
    match world.zones.iter_mut().find(|z| z.name == zone) {
        Some(existing) => *existing = imported,
        None => world.zones.push(imported),
    }
    let toml = config::to_toml(&world);
    let read_file = |path: &str| {
        if path == source_name {
            Ok(text.to_owned())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{path} is not the imported zone file"),
            ))
        }
    };
    let parsed = config::parse_world("stored world", &toml, &read_file)?;
    Ok(parsed.world)
}

/// Zone `zone` of `world` as a master file: `$ORIGIN`, `$TTL` (the SOA's TTL), the SOA,
/// then every other record, owners relative to the origin and TTLs explicit.
/// [`replace_zone`] reads it back to the identical zone.
pub fn export_zone(world: &World, zone: &str, config_version: u64) -> Result<String, ZoneError> {
    let name = normalize_zone_name(zone)?;
    let zone = world
        .zones
        .iter()
        .find(|z| z.name == name)
        .ok_or_else(|| ZoneError::UnknownZone(name.clone()))?;
    let is_soa = |line: &&String| line.split_whitespace().nth(3) == Some("SOA");
    let soa_ttl = zone
        .records
        .iter()
        .find(is_soa)
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("3600");
    let mut out = format!(
        "; zone {name} exported by isobar at config version {config_version}\n\
         $ORIGIN {name}\n$TTL {soa_ttl}\n"
    );
    let soa = zone.records.iter().filter(is_soa);
    let rest = zone.records.iter().filter(|l| !is_soa(l));
    for line in soa.chain(rest) {
        out.push_str(&relative_line(line, &name));
        out.push('\n');
    }
    Ok(out)
}

/// A canonical record line (`<absolute owner> <ttl> IN <TYPE> <rdata>`) with its owner made
/// relative to `origin` (`@` for the apex). RDATA names stay absolute.
fn relative_line(line: &str, origin: &str) -> String {
    let Some((owner, rest)) = line.split_once(' ') else {
        return line.to_owned();
    };
    let relative = if owner == origin {
        "@"
    } else {
        match owner.strip_suffix(origin).and_then(|s| s.strip_suffix('.')) {
            // A trailing escaped dot (`a\.`) would change meaning once split; keep absolute.
            Some(prefix) if !prefix.is_empty() && !prefix.ends_with('\\') => prefix,
            _ => owner,
        }
    };
    format!("{relative} {rest}")
}

impl Scheduler {
    /// Replaces the records of zone `zone` (default: the zone the file names) with those of
    /// the master file `text`, as one audited config change. On `dry_run` nothing is stored.
    pub async fn import_zone(
        &self,
        zone: Option<&str>,
        source_name: &str,
        text: &str,
        dry_run: bool,
        actor: &str,
    ) -> Result<Applied, SchedulerError> {
        let applied =
            import_into_store(self.store(), zone, source_name, text, dry_run, actor).await?;
        if applied.changed {
            info!(
                config_version = applied.config_version,
                actor, "zone imported"
            );
            self.reload().await?;
        }
        Ok(applied)
    }

    /// The zone as a master file, and the config version it was exported at.
    pub fn export_zone(&self, zone: &str) -> Result<(String, u64), SchedulerError> {
        let (world, version) = self.world();
        Ok((export_zone(&world, zone, version)?, version))
    }
}

/// [`Scheduler::import_zone`] against a store directly (for `isobar zone import --db`):
/// reads the stored world, replaces the zone and applies the result in one transaction.
pub async fn import_into_store(
    store: &isobar_store::Store,
    zone: Option<&str>,
    source_name: &str,
    text: &str,
    dry_run: bool,
    actor: &str,
) -> Result<Applied, SchedulerError> {
    let zone = match zone {
        Some(zone) => normalize_zone_name(zone)?,
        None => zone_name_in(text).ok_or_else(|| ZoneError::NoZoneName(source_name.into()))?,
    };
    let (world, _) = store.load_world().await?;
    let world = replace_zone(&world, &zone, source_name, text)?;
    let outcome = store.apply_world(&world, actor, dry_run).await?;
    Ok(Applied {
        changed: outcome.changed,
        config_version: outcome.config_version,
        diff: outcome.changes.iter().map(ToString::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        let toml = r#"
[[zones]]
name = "example.test."
records = [
  "@ 300 IN SOA ns1 hostmaster 7 7200 900 1209600 300",
  "@ 300 IN NS ns1",
  "ns1 300 IN A 192.0.2.53",
  "*.wild 60 IN TXT \"hello world\"",
  "mail 60 IN MX 10 mx.other.test.",
]
"#;
        config::parse_world(
            "w.toml",
            toml,
            &|_| Err(std::io::ErrorKind::NotFound.into()),
        )
        .unwrap()
        .world
    }

    #[test]
    fn export_then_import_gives_the_identical_zone() {
        let world = world();
        let text = export_zone(&world, "EXAMPLE.test", 3).unwrap();
        assert!(
            text.contains("$ORIGIN example.test.\n$TTL 300\n@ 300 IN SOA"),
            "{text}"
        );
        assert!(
            text.contains("\n*.wild 60 IN TXT \"hello world\"\n"),
            "{text}"
        );
        let back = replace_zone(&world, "example.test.", "exported.zone", &text).unwrap();
        assert_eq!(back, world);
        assert_eq!(zone_name_in(&text).as_deref(), Some("example.test."));
    }

    #[test]
    fn import_replaces_records_and_errors_name_the_file_line() {
        let world = world();
        let text = "$ORIGIN example.test.\n@ 60 SOA ns1 h 9 1 1 1 1\n@ NS ns1\nns1 A 192.0.2.1\n";
        let new = replace_zone(&world, "example.test.", "z.db", text).unwrap();
        assert_eq!(
            new.zones[0].records,
            vec![
                "example.test. 60 IN NS ns1.example.test.",
                "example.test. 60 IN SOA ns1.example.test. h.example.test. 9 1 1 1 1",
                "ns1.example.test. 60 IN A 192.0.2.1",
            ]
        );
        let err = replace_zone(
            &world,
            "example.test.",
            "z.db",
            "@ SOA x\nwww A 300.0.0.1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("z.db:1:"), "{err}");
        let err = export_zone(&world, "nope.test", 1).unwrap_err();
        assert!(matches!(err, ZoneError::UnknownZone(_)));
    }

    #[test]
    fn the_zone_name_comes_from_origin_or_an_absolute_soa() {
        assert_eq!(
            zone_name_in("; c\n$ORIGIN Foo.Test.\n").as_deref(),
            Some("foo.test.")
        );
        assert_eq!(
            zone_name_in("bar.test. 60 IN SOA a b 1 2 3 4 5\n").as_deref(),
            Some("bar.test.")
        );
        assert_eq!(zone_name_in("@ 60 IN SOA a b 1 2 3 4 5\n"), None);
    }
}
