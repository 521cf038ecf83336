//! Writes a response into a caller-owned buffer, with name compression and size limits.

use super::record::WireRecord;

/// Names remembered for compression; more are written uncompressed, which is always valid.
const MAX_POINTERS: usize = 48;
/// Compression pointers address the first 16 KiB only (RFC 1035 §4.1.4).
const MAX_POINTER_OFFSET: usize = 0x3FFF;

/// Which section a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Answer = 0,
    Authority = 1,
    Additional = 2,
}

/// A response under construction. Borrows every name it may point back to, so nothing is
/// copied to remember them.
pub(crate) struct Writer<'a, 'b> {
    buf: &'b mut Vec<u8>,
    limit: usize,
    pointers: [(&'a [u8], u16); MAX_POINTERS],
    pointer_count: usize,
    counts: [u16; 3],
    question_end: usize,
    question_pointers: usize,
}

/// A position to roll back to when an RRset does not fit.
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    len: usize,
    pointers: usize,
    counts: [u16; 3],
}

impl<'a, 'b> Writer<'a, 'b> {
    /// Starts a response: the header (counts filled in by [`Writer::finish`]) and the
    /// question copied as sent, whose lowercase name `qname` is remembered for compression.
    pub(crate) fn new(
        buf: &'b mut Vec<u8>,
        limit: usize,
        header: [u8; 4],
        question: Option<(&[u8], &'a [u8])>,
    ) -> Self {
        buf.clear();
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&[0, u8::from(question.is_some()), 0, 0, 0, 0, 0, 0]);
        let mut w = Self {
            buf,
            limit,
            pointers: [(&[], 0); MAX_POINTERS],
            pointer_count: 0,
            counts: [0; 3],
            question_end: 0,
            question_pointers: 0,
        };
        if let Some((sent, qname)) = question {
            let start = w.buf.len();
            w.buf.extend_from_slice(sent);
            w.remember_all(qname, start);
        }
        w.question_end = w.buf.len();
        w.question_pointers = w.pointer_count;
        w
    }

    /// Sets the rcode and flag bits of the header (byte 2 and 3 masks are OR-ed).
    pub(crate) fn set_flags(&mut self, byte2: u8, byte3: u8) {
        self.buf[2] |= byte2;
        self.buf[3] |= byte3;
    }

    /// The header's flag bytes as they stand.
    pub(crate) fn flags(&self) -> [u8; 2] {
        [self.buf[2], self.buf[3]]
    }

    /// Lowers the size limit (to reserve room for the OPT record).
    pub(crate) fn reserve(&mut self, octets: usize) {
        self.limit = self.limit.saturating_sub(octets);
    }

    /// Drops every record written so far, keeping header and question.
    pub(crate) fn truncate_to_question(&mut self) {
        let question = self.question_end;
        self.buf.truncate(question);
        self.pointer_count = self.question_pointers;
        self.counts = [0; 3];
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark {
            len: self.buf.len(),
            pointers: self.pointer_count,
            counts: self.counts,
        }
    }

    pub(crate) fn rollback(&mut self, mark: Mark) {
        self.buf.truncate(mark.len);
        self.pointer_count = mark.pointers;
        self.counts = mark.counts;
    }

    /// Writes a whole RRset, with `owner` replacing each record's owner when given (the
    /// query name for wildcard answers). Returns false, having written nothing, when it
    /// does not fit.
    pub(crate) fn rrset(
        &mut self,
        section: Section,
        owner: Option<&'a [u8]>,
        records: &'a [WireRecord],
    ) -> bool {
        let mark = self.mark();
        for record in records {
            self.record(owner.unwrap_or(&record.owner), record);
            self.counts[section as usize] += 1;
        }
        if self.buf.len() > self.limit {
            self.rollback(mark);
            return false;
        }
        true
    }

    fn record(&mut self, owner: &'a [u8], record: &'a WireRecord) {
        self.name(owner);
        self.buf.extend_from_slice(&record.rtype.to_be_bytes());
        self.buf.extend_from_slice(&1u16.to_be_bytes());
        self.buf.extend_from_slice(&record.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        let start = self.buf.len();
        let mut copied = 0;
        for &offset in record.compressible() {
            let offset = usize::from(offset);
            self.buf.extend_from_slice(&record.rdata[copied..offset]);
            let name = &record.rdata[offset..];
            let len = wire_len(name);
            self.name(&name[..len]);
            copied = offset + len;
        }
        self.buf.extend_from_slice(&record.rdata[copied..]);
        let rdlen = (self.buf.len() - start) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }

    /// Writes a name, pointing at an earlier copy of its longest known suffix.
    fn name(&mut self, name: &'a [u8]) {
        let mut at = 0;
        while at < name.len() && name[at] != 0 {
            let suffix = &name[at..];
            if let Some(offset) = self.find(suffix) {
                self.buf.extend_from_slice(&(0xC000 | offset).to_be_bytes());
                return;
            }
            self.remember(suffix, self.buf.len());
            let len = usize::from(name[at]);
            self.buf.extend_from_slice(&name[at..at + 1 + len]);
            at += 1 + len;
        }
        self.buf.push(0);
    }

    fn find(&self, suffix: &[u8]) -> Option<u16> {
        self.pointers[..self.pointer_count]
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(suffix))
            .map(|&(_, offset)| offset)
    }

    fn remember(&mut self, suffix: &'a [u8], offset: usize) {
        if offset <= MAX_POINTER_OFFSET && self.pointer_count < MAX_POINTERS {
            self.pointers[self.pointer_count] = (suffix, offset as u16);
            self.pointer_count += 1;
        }
    }

    fn remember_all(&mut self, name: &'a [u8], start: usize) {
        let mut at = 0;
        while at < name.len() && name[at] != 0 {
            self.remember(&name[at..], start + at);
            at += 1 + usize::from(name[at]);
        }
    }

    /// Appends raw bytes outside any section bookkeeping (the OPT record).
    pub(crate) fn raw(&mut self, bytes: &[u8], additional: bool) {
        self.buf.extend_from_slice(bytes);
        if additional {
            self.counts[Section::Additional as usize] += 1;
        }
    }

    /// Writes the section counts into the header.
    pub(crate) fn finish(self) {
        for (i, count) in self.counts.iter().enumerate() {
            self.buf[6 + 2 * i..8 + 2 * i].copy_from_slice(&count.to_be_bytes());
        }
    }
}

/// Length of the uncompressed wire name at the start of `name`.
fn wire_len(name: &[u8]) -> usize {
    let mut at = 0;
    while at < name.len() && name[at] != 0 {
        at += 1 + usize::from(name[at]);
    }
    (at + 1).min(name.len())
}
