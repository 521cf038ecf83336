//! The declarative config format: `world.toml` (plus zone files) in, a normalized `World` out.
//!
//! The TOML layout is the serde shape of [`World`]: `[defaults]`, `[health]`, `[[regions]]`,
//! `[[pops]]`, `[[zones]]`, `[[services]]` with `[[services.endpoints]]`, `[[client_groups]]`.
//! A top-level `[server]` table holds process-local settings of `isobar serve`; it is handed
//! back untouched in [`Parsed::server`] and is never part of the world.
//!
//! Parsing normalizes: DNS names become lowercase and absolute, addresses and prefixes take
//! their canonical text, zone files are read and every record becomes one canonical line
//! `<owner> <ttl> IN <TYPE> <rdata>` in `Zone::records`. A zone without an SOA or apex NS
//! gets synthesized ones (see [`parse_world`]). Every error names the file, line, column
//! and field path.

mod error;
mod httpdns;
mod normalize;
mod path;
mod probing;
mod steering;
mod validate;
mod zone;

use std::collections::BTreeMap;
use std::path::Path;

use hickory_proto::rr::{Name, Record};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

pub use error::{ConfigError, SourcePos};

use crate::world::{World, Zone};
use normalize::{Problem, normalize_source};
use path::FieldPath;

/// The result of parsing a config.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The normalized, validated world.
    pub world: World,
    /// The `[server]` table, if present: settings for the local process, not stored.
    pub server: Option<toml::Table>,
    /// The zone files that were read, by the path written in the config.
    pub files: BTreeMap<String, String>,
}

/// Parses and validates a config. `source_name` names the text in errors; `read_file`
/// returns the content of a zone `file =` path exactly as written in the config.
///
/// Zones need an SOA and an NS at the apex. When the config gives none, parsing adds
/// `<zone> 3600 IN SOA ns1.<zone> hostmaster.<zone> 1 7200 900 1209600 300` and
/// `<zone> 3600 IN NS ns1.<zone>`.
pub fn parse_world(
    source_name: &str,
    text: &str,
    read_file: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<Parsed, ConfigError> {
    let doc = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        at: SourcePos::at_offset(source_name, text, e.span().map_or(0, |s| s.start)),
        message: e.message().trim_end().to_owned(),
    })?;
    let field_error = |path: String, e: toml::de::Error| ConfigError::Field {
        at: SourcePos::at_offset(source_name, text, e.span().map_or(0, |s| s.start)),
        path,
        message: e.message().trim_end().to_owned(),
    };

    let mut world_table = doc.clone();
    let server = match world_table.get_mut().remove("server") {
        None => None,
        // A second, lenient pass reads just the server table (ignoring the world's keys).
        Some(_) => {
            toml::from_str::<ServerOnly>(text)
                .map_err(|e| field_error("server".into(), e))?
                .server
        }
    };
    let mut world: World = serde_path_to_error::deserialize(toml::de::Deserializer::from(
        world_table,
    ))
    .map_err(|e| {
        let path = e.path().to_string();
        field_error(path, e.into_inner())
    })?;

    let locate = |problem: Problem| locate(problem, source_name, text, &doc);
    let mut files = BTreeMap::new();
    normalize_source(&mut world, read_file, &mut files).map_err(locate)?;
    validate::check_world(&world).map_err(|invalid| locate(Problem::Invalid(invalid)))?;
    world.normalize();
    Ok(Parsed {
        world,
        server,
        files,
    })
}

/// Reads and parses a config file. Zone `file =` paths are relative to its directory.
pub fn load_world_file(path: &Path) -> Result<Parsed, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        file: name.clone(),
        error,
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new(""));
    let read_file = |file: &str| std::fs::read_to_string(base.join(file));
    parse_world(&name, &text, &read_file)
}

/// Writes a world in the config format, normalized, with zone records inline, so that
/// [`parse_world`] reads back an equal world.
pub fn to_toml(world: &World) -> String {
    let mut world = world.clone();
    world.normalize();
    // Serializing cannot fail: `World` holds only strings, numbers, booleans, string-keyed
    // maps and sequences, all of which TOML represents.
    let body = toml::to_string_pretty(&world).expect("a World always serializes to TOML");
    format!(
        "# Isobar world configuration.\n\
         # Zone records are canonical master-file lines: <owner> <ttl> IN <TYPE> <rdata>.\n\n{body}"
    )
}

/// Parses a stored zone's canonical record lines into hickory records.
pub fn zone_records(zone: &Zone) -> Result<Vec<Record>, ConfigError> {
    let stored = |record: &str, message: String| ConfigError::Stored {
        zone: zone.name.clone(),
        record: record.to_owned(),
        message,
    };
    let apex =
        Name::from_ascii(&zone.name).map_err(|e| stored("", format!("bad zone name: {e}")))?;
    zone.records
        .iter()
        .map(|line| zone::parse_record_line(line, &apex).map_err(|e| stored(line, e)))
        .collect()
}

/// Checks that a world (already normalized, e.g. one read from the store or built in code)
/// follows every config rule. The message names the offending field path.
pub fn validate(world: &World) -> Result<(), String> {
    validate::check_world(world).map_err(|invalid| format!("{}: {}", invalid.path, invalid.message))
}

#[derive(Deserialize)]
struct ServerOnly {
    server: Option<toml::Table>,
}

fn locate(
    problem: Problem,
    source_name: &str,
    text: &str,
    doc: &Spanned<DeTable<'_>>,
) -> ConfigError {
    let at = |path: &FieldPath| SourcePos::at_offset(source_name, text, path.span_in(doc).start);
    match problem {
        Problem::Invalid(invalid) => ConfigError::Invalid {
            at: at(&invalid.path),
            path: invalid.path.to_string(),
            message: invalid.message,
        },
        Problem::InlineRecord { path, message } => ConfigError::Record {
            at: at(&path),
            path: path.to_string(),
            message,
        },
        Problem::FileRecord {
            path,
            file,
            line,
            message,
        } => ConfigError::Record {
            at: SourcePos::line(&file, line),
            path: path.to_string(),
            message,
        },
        Problem::Read { path, file, error } => ConfigError::ZoneFile {
            at: at(&path),
            path: path.to_string(),
            file,
            error,
        },
    }
}
