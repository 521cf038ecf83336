//! Domain names as lowercase wire-format keys, built on the stack for allocation-free lookups.

use hickory_proto::rr::Name;

/// A map from name keys (or other small keys) to what the answer path looks up, hashed
/// with foldhash instead of SipHash: the keys are operator data (zones, owners, services),
/// never inserted from queries, so flooding resistance buys nothing here, and SipHash was
/// ≈ 1.2 % of a GSLB answer's CPU (BENCHMARKS.md). Still seeded per process.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Longest domain name in wire format (RFC 1035 §3.1).
const MAX_WIRE_LEN: usize = 255;
/// Most labels a name of 255 octets can hold, plus the root.
const MAX_LABELS: usize = 128;

/// A domain name in lowercase, uncompressed wire format, with each label's offset.
///
/// Every suffix of a wire-format name at a label boundary is itself the wire form of the
/// parent name, so one key answers "which zone holds this name" and "does this ancestor
/// exist" with plain slice lookups and no further allocation.
pub(crate) struct NameKey {
    buf: [u8; MAX_WIRE_LEN],
    len: usize,
    starts: [u8; MAX_LABELS],
    labels: usize,
}

impl NameKey {
    /// The key of `name`, or `None` for a name longer than DNS allows.
    pub(crate) fn new(name: &Name) -> Option<Self> {
        let mut key = Self::empty();
        for label in name.iter() {
            key.push_label(label)?;
        }
        key.finish()
    }

    /// The key of the name made of `labels` (leftmost first, root excluded), or `None` for
    /// an empty or over-long label, or a name longer than DNS allows.
    pub(crate) fn from_labels<'a>(labels: impl Iterator<Item = &'a [u8]>) -> Option<Self> {
        let mut key = Self::empty();
        for label in labels {
            key.push_label(label)?;
        }
        key.finish()
    }

    /// The key of `label.name` (used for wildcard owners, `*.<closest encloser>`).
    pub(crate) fn prepend(label: &[u8], suffix: &[u8]) -> Option<Self> {
        let mut key = Self::empty();
        key.push_label(label)?;
        // `suffix` is already a lowercase wire name: walk its labels to record the offsets.
        let mut at = 0;
        while at < suffix.len() {
            let len = usize::from(suffix[at]);
            if len == 0 {
                break;
            }
            key.push_label(suffix.get(at + 1..at + 1 + len)?)?;
            at += 1 + len;
        }
        key.finish()
    }

    /// Reads an uncompressed wire-format name at `packet[*at..]`, advancing `at` past it.
    /// `None` for compression pointers, reserved label types, or names longer than 255.
    pub(crate) fn parse_uncompressed(packet: &[u8], at: &mut usize) -> Option<Self> {
        let mut key = Self::empty();
        loop {
            let len = usize::from(*packet.get(*at)?);
            if len == 0 {
                *at += 1;
                return key.finish();
            }
            if len > 63 {
                return None;
            }
            key.push_label(packet.get(*at + 1..*at + 1 + len)?)?;
            *at += 1 + len;
        }
    }

    fn empty() -> Self {
        Self {
            buf: [0; MAX_WIRE_LEN],
            len: 0,
            starts: [0; MAX_LABELS],
            labels: 0,
        }
    }

    fn push_label(&mut self, label: &[u8]) -> Option<()> {
        if label.is_empty() || label.len() > 63 || self.labels + 1 >= MAX_LABELS {
            return None;
        }
        let end = self.len + 1 + label.len();
        // Leave room for the root label.
        if end >= MAX_WIRE_LEN {
            return None;
        }
        self.starts[self.labels] = self.len as u8;
        self.buf[self.len] = label.len() as u8;
        for (dst, src) in self.buf[self.len + 1..end].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        self.len = end;
        self.labels += 1;
        Some(())
    }

    fn finish(mut self) -> Option<Self> {
        self.buf[self.len] = 0;
        self.len += 1;
        Some(self)
    }

    /// The whole name.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Number of labels, not counting the root.
    pub(crate) fn labels(&self) -> usize {
        self.labels
    }

    /// The name with its `skip` leftmost labels removed (`skip == labels()` is the root).
    pub(crate) fn suffix(&self, skip: usize) -> &[u8] {
        let start = if skip < self.labels {
            usize::from(self.starts[skip])
        } else {
            self.len - 1
        };
        &self.buf[start..self.len]
    }
}

/// Parses a presentation-format host name (trailing dot optional) as an absolute name.
pub(crate) fn parse_absolute(text: &str) -> Option<Name> {
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lowercase_wire_names_with_label_suffixes() {
        let key = NameKey::new(&Name::from_ascii("WWW.Demo.test.").unwrap()).unwrap();
        assert_eq!(key.as_bytes(), b"\x03www\x04demo\x04test\x00");
        assert_eq!(key.labels(), 3);
        assert_eq!(key.suffix(1), b"\x04demo\x04test\x00");
        assert_eq!(key.suffix(3), b"\x00");
        let root = NameKey::new(&Name::root()).unwrap();
        assert_eq!(root.as_bytes(), b"\x00");
        assert_eq!(root.labels(), 0);
    }

    #[test]
    fn prepend_builds_a_wildcard_owner() {
        let key = NameKey::prepend(b"*", b"\x04demo\x04test\x00").unwrap();
        assert_eq!(key.as_bytes(), b"\x01*\x04demo\x04test\x00");
        assert_eq!(key.labels(), 3);
        assert_eq!(key.suffix(1), b"\x04demo\x04test\x00");
    }

    #[test]
    fn trailing_dot_is_optional_in_presentation_input() {
        let a = NameKey::new(&parse_absolute("www.demo.test").unwrap()).unwrap();
        let b = NameKey::new(&parse_absolute("WWW.demo.test.").unwrap()).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
    }
}
