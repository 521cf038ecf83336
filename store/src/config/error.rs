//! Config errors: every one names where it happened (file, line, column) and what.

use std::fmt;

/// A position in a config or zone file, 1-based, printed as `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePos {
    /// The file name as the user gave it (the config's source name or a zone `file =` path).
    pub file: String,
    /// Line, starting at 1.
    pub line: u32,
    /// Column in characters, starting at 1.
    pub column: u32,
}

impl SourcePos {
    /// The position of byte `offset` in `text`, which is the content of `file`.
    pub(crate) fn at_offset(file: &str, text: &str, offset: usize) -> Self {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self {
            file: file.to_owned(),
            line: saturating_u32(line),
            column: saturating_u32(column),
        }
    }

    /// The start of `line` in `file`.
    pub(crate) fn line(file: &str, line: u32) -> Self {
        Self {
            file: file.to_owned(),
            line,
            column: 1,
        }
    }
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a config was rejected. The `Display` form is one line that starts with the position,
/// e.g. `world.toml:14:1: pops[1].capacity: invalid type: string "x", expected u64`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{file}: cannot read: {error}")]
    Read {
        /// The path as written by the user.
        file: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A zone file named in the config could not be read.
    #[error("{at}: {path}: cannot read {file}: {error}")]
    ZoneFile {
        /// Where the config names the file.
        at: SourcePos,
        /// The field, e.g. `zones[0].file`.
        path: String,
        /// The path as written in the config.
        file: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{at}: {message}")]
    Syntax {
        /// Where.
        at: SourcePos,
        /// The TOML parser's message.
        message: String,
    },
    /// A field has the wrong type, is missing or is unknown.
    #[error("{at}: {path}: {message}")]
    Field {
        /// Where.
        at: SourcePos,
        /// The field path, e.g. `pops[1].capacity`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The config is well-formed but inconsistent (unknown reference, out of range, duplicate, ...).
    #[error("{at}: {path}: {message}")]
    Invalid {
        /// Where the offending item is.
        at: SourcePos,
        /// The field path, e.g. `pops[1].region`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A zone record (inline or in a zone file) does not parse or is not allowed.
    #[error("{at}: {path}: {message}")]
    Record {
        /// The line of the record, in the zone file or in the config.
        at: SourcePos,
        /// The zone field the record came from, e.g. `zones[0].file` or `zones[0].records[3]`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A stored canonical record failed to parse (a corrupted store or a bug).
    #[error("zone {zone}: stored record {record:?}: {message}")]
    Stored {
        /// The zone.
        zone: String,
        /// The record text.
        record: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The position the error points at, if it has one.
    pub fn position(&self) -> Option<&SourcePos> {
        match self {
            Self::Syntax { at, .. }
            | Self::Field { at, .. }
            | Self::Invalid { at, .. }
            | Self::Record { at, .. }
            | Self::ZoneFile { at, .. } => Some(at),
            Self::Read { .. } | Self::Stored { .. } => None,
        }
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
