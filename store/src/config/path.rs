//! Field paths (`pops[1].region`) and finding them in the parsed TOML document.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A path from the document root to a field: keys and array indices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(&'static str),
    Index(usize),
}

impl FieldPath {
    /// The path `key`.
    pub(crate) fn new(key: &'static str) -> Self {
        Self(vec![Segment::Key(key)])
    }

    /// This path extended by `.key`.
    pub(crate) fn key(&self, key: &'static str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key));
        Self(segments)
    }

    /// This path extended by `[index]`.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    /// The byte range of the deepest part of this path present in `root`. Defaulted fields
    /// are not in the document, so an error about one points at its table instead.
    pub(crate) fn span_in(&self, root: &Spanned<DeTable<'_>>) -> Range<usize> {
        let mut span = root.span();
        let mut value: Option<&DeValue<'_>> = None;
        let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
        for segment in &self.0 {
            let next = match (segment, table, value) {
                (Segment::Key(key), Some(t), _) => t.get(*key),
                (Segment::Index(i), _, Some(DeValue::Array(items))) => items.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            // An empty span carries no position; keep the enclosing one.
            if !next.span().is_empty() {
                span = next.span();
            }
            value = Some(next.get_ref());
            table = match next.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        span
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}
