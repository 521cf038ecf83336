//! Zone data: RFC 1035 master-file text in, hickory `Record`s and canonical one-line text out.
//!
//! hickory's `Parser` reads a whole file but reports neither the line of an error nor the
//! line of each record, and it has no public single-record entry point. So this module
//! splits master-file text into entries itself (tracking `$ORIGIN`, `$TTL`, the previous
//! owner, parentheses, quotes and comments, with line numbers), and hands each entry to
//! hickory as a one-record file with an absolute owner and an explicit TTL. hickory thus
//! still owns all RDATA parsing.

use std::str::FromStr;

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::{Parser, parse_ttl};

/// TTL of records that state none, when the file sets no `$TTL` either.
pub(crate) const DEFAULT_TTL: u32 = 3600;

/// A record and the 1-based line it starts on in its source text.
#[derive(Debug, Clone)]
pub(crate) struct LinedRecord {
    pub(crate) record: Record,
    pub(crate) line: u32,
}

/// A zone-text error: the 1-based line and what is wrong.
#[derive(Debug, Clone)]
pub(crate) struct ZoneTextError {
    pub(crate) line: u32,
    pub(crate) message: String,
}

/// Parses an RFC 1035 master file whose initial origin is `apex`. Supports `$ORIGIN`,
/// `$TTL`, owner inheritance from a leading blank, parentheses and `;` comments. A record
/// without a TTL takes `$TTL`, else the previous record's TTL (RFC 1035 §5.1), else 3600.
/// `$INCLUDE` is refused: a config must be self-contained so it can be sent over the wire.
pub(crate) fn parse_master_file(
    text: &str,
    apex: &Name,
) -> Result<Vec<LinedRecord>, ZoneTextError> {
    let mut origin = apex.clone();
    let mut default_ttl: Option<u32> = None;
    let mut last_ttl: Option<u32> = None;
    let mut last_owner: Option<Name> = None;
    let mut records = Vec::new();
    for entry in lex(text)? {
        let fail = |message: String| ZoneTextError {
            line: entry.line,
            message,
        };
        if let Some(directive) = entry.directive() {
            let argument = match entry.tokens.get(1) {
                Some(Token::Bare(arg)) if entry.tokens.len() == 2 => arg,
                _ => return Err(fail(format!("{directive} takes exactly one argument"))),
            };
            match directive {
                "$ORIGIN" => {
                    origin = Name::parse(argument, Some(&origin))
                        .map_err(|e| fail(format!("$ORIGIN {argument}: {e}")))?;
                }
                "$TTL" => {
                    default_ttl = Some(
                        parse_ttl(argument).map_err(|e| fail(format!("$TTL {argument}: {e}")))?,
                    );
                }
                "$INCLUDE" => {
                    return Err(fail(
                        "$INCLUDE is not supported: put the records in the zone file itself".into(),
                    ));
                }
                other => return Err(fail(format!("unknown directive {other}"))),
            }
            continue;
        }
        let parsed = parse_entry(&entry, &origin, last_owner.as_ref()).map_err(fail)?;
        if parsed.ttl.is_some() {
            last_ttl = parsed.ttl;
        }
        let ttl = parsed
            .ttl
            .or(default_ttl)
            .or(last_ttl)
            .unwrap_or(DEFAULT_TTL);
        let record = build_record(&parsed, ttl, &origin).map_err(fail)?;
        last_owner = Some(parsed.owner);
        records.push(LinedRecord {
            record,
            line: entry.line,
        });
    }
    Ok(records)
}

/// Parses one master-file line (no directives) relative to `origin`; a missing TTL means
/// 3600. Leading blanks are ignored, so the first word is always the owner.
pub(crate) fn parse_record_line(text: &str, origin: &Name) -> Result<Record, String> {
    let entries = lex(text.trim_start()).map_err(|e| e.message)?;
    let entry = match entries.as_slice() {
        [entry] => entry,
        [] => return Err("empty record".into()),
        _ => return Err("one record per entry: this text holds several".into()),
    };
    if let Some(directive) = entry.directive() {
        return Err(format!("{directive} is only allowed in zone files"));
    }
    let parsed = parse_entry(entry, origin, None)?;
    build_record(&parsed, parsed.ttl.unwrap_or(DEFAULT_TTL), origin)
}

/// The canonical text of a record: `<absolute lowercase owner> <ttl> IN <TYPE> <rdata>`,
/// with names in RDATA lowercased and strings quoted. It re-parses to an identical record
/// (checked here, so a type whose presentation hickory gets wrong is refused, not stored).
pub(crate) fn canonical_text(record: &Record) -> Result<String, String> {
    if record.dns_class != DNSClass::IN {
        return Err(format!(
            "class {} is not supported (only IN)",
            record.dns_class
        ));
    }
    let text = format!(
        "{} {} IN {} {}",
        name_text(&record.name),
        record.ttl,
        record.record_type(),
        rdata_text(&record.data)?,
    );
    let reparsed = parse_record_line(&text, &Name::root())
        .map_err(|e| format!("cannot be written back as master-file text ({e})"))?;
    if reparsed != *record || reparsed.ttl != record.ttl {
        return Err(format!(
            "cannot be written back as master-file text (re-reading {text:?} gives a different record)"
        ));
    }
    Ok(text)
}

fn name_text(name: &Name) -> String {
    name.to_lowercase().to_ascii()
}

fn rdata_text(data: &RData) -> Result<String, String> {
    Ok(match data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(aaaa) => aaaa.0.to_string(),
        RData::NS(ns) => name_text(&ns.0),
        RData::CNAME(cname) => name_text(&cname.0),
        RData::PTR(ptr) => name_text(&ptr.0),
        RData::ANAME(aname) => name_text(&aname.0),
        RData::MX(mx) => format!("{} {}", mx.preference, name_text(&mx.exchange)),
        RData::SRV(srv) => format!(
            "{} {} {} {}",
            srv.priority,
            srv.weight,
            srv.port,
            name_text(&srv.target)
        ),
        RData::SOA(soa) => format!(
            "{} {} {} {} {} {} {}",
            name_text(&soa.mname),
            name_text(&soa.rname),
            soa.serial,
            soa.refresh,
            soa.retry,
            soa.expire,
            soa.minimum
        ),
        RData::TXT(txt) => {
            let strings = txt
                .txt_data
                .iter()
                .map(|s| quote(s))
                .collect::<Result<Vec<_>, _>>()?;
            strings.join(" ")
        }
        RData::CAA(caa) => format!("{} {} {}", caa.flags(), caa.tag, quote(&caa.value)?),
        // Other types use hickory's presentation; `canonical_text` verifies it re-parses.
        other => other.to_string(),
    })
}

/// A `<character-string>` in double quotes. Only `"` and `\` are escaped: hickory decodes
/// `\DDD` incorrectly, so bytes that would need it (control characters, non-UTF-8) are refused.
fn quote(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "string is not valid UTF-8".to_owned())?;
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push(c),
            c if c.is_control() => {
                return Err(format!("string contains control character {c:?}"));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// The owner, TTL, type and RDATA tokens of one record entry.
struct RecordParts<'e> {
    owner: Name,
    ttl: Option<u32>,
    rtype: RecordType,
    rdata: &'e [Token],
}

fn parse_entry<'e>(
    entry: &'e Entry,
    origin: &Name,
    last_owner: Option<&Name>,
) -> Result<RecordParts<'e>, String> {
    let mut tokens = entry.tokens.iter();
    let owner = if entry.starts_blank {
        last_owner
            .cloned()
            .ok_or("record has no owner name (it starts with a blank and no record precedes it)")?
    } else {
        match tokens.next() {
            Some(Token::Bare(at)) if at == "@" => origin.clone(),
            Some(Token::Bare(owner)) => {
                Name::parse(owner, Some(origin)).map_err(|e| format!("owner {owner}: {e}"))?
            }
            Some(Token::Quoted(_)) => return Err("owner name must not be quoted".into()),
            None => return Err("empty record".into()),
        }
    };
    let mut ttl = None;
    let mut class_seen = false;
    let rtype = loop {
        let word = match tokens.next() {
            Some(Token::Bare(word)) => word,
            Some(Token::Quoted(_)) => {
                return Err("expected a TTL, class or type, found a string".into());
            }
            None => return Err("missing record type".into()),
        };
        if ttl.is_none() && word.starts_with(|c: char| c.is_ascii_digit()) {
            ttl = Some(parse_ttl(word).map_err(|e| format!("TTL {word}: {e}"))?);
            continue;
        }
        let upper = word.to_ascii_uppercase();
        if !class_seen && DNSClass::from_str(&upper).is_ok() {
            if upper != "IN" {
                return Err(format!("class {upper} is not supported (only IN)"));
            }
            class_seen = true;
            continue;
        }
        match RecordType::from_str(&upper) {
            Ok(RecordType::Unknown(_)) | Err(_) => {
                return Err(format!("unknown record type {word}"));
            }
            Ok(rtype) => break rtype,
        }
    };
    let consumed = entry.tokens.len() - tokens.as_slice().len();
    Ok(RecordParts {
        owner,
        ttl,
        rtype,
        rdata: &entry.tokens[consumed..],
    })
}

/// Lets hickory parse the RDATA: a one-line file with an absolute owner and explicit TTL.
fn build_record(parts: &RecordParts<'_>, ttl: u32, origin: &Name) -> Result<Record, String> {
    let mut text = format!("{} {ttl} IN {}", parts.owner.to_ascii(), parts.rtype);
    // Tokens from this index on are <character-string>s, whose escapes hickory leaves
    // undecoded when they are not quoted; quoting them decodes them as RFC 1035 says.
    let strings_from = match parts.rtype {
        RecordType::TXT | RecordType::HINFO => 0,
        RecordType::CAA => 2,
        _ => usize::MAX,
    };
    for (i, token) in parts.rdata.iter().enumerate() {
        text.push(' ');
        match token {
            // hickory only accepts `@` as an owner; in RDATA it means the origin too.
            Token::Bare(word) if word == "@" && i < strings_from => {
                text.push_str(&origin.to_ascii())
            }
            Token::Bare(word) if i >= strings_from => text.push_str(&quote(&unescape_word(word)?)?),
            Token::Bare(word) => text.push_str(word),
            Token::Quoted(s) => text.push_str(&quote(s.as_bytes())?),
        }
    }
    text.push('\n');
    let (_, sets) = Parser::new(text, None, Some(origin.clone()))
        .parse()
        .map_err(|e| format!("{} record: {e}", parts.rtype))?;
    let mut records = sets.into_values().flatten();
    match (records.next(), records.next()) {
        (Some(record), None) if record.record_type() == parts.rtype => Ok(record),
        _ => Err(format!("{} record: unexpected parse result", parts.rtype)),
    }
}

/// One master-file token.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// An unquoted word, raw: escapes are left for the name or RDATA parser.
    Bare(String),
    /// A quoted `<character-string>`, unescaped.
    Quoted(String),
}

/// One logical entry: a directive or a record, possibly spanning lines in parentheses.
#[derive(Debug)]
struct Entry {
    line: u32,
    starts_blank: bool,
    tokens: Vec<Token>,
}

impl Entry {
    fn directive(&self) -> Option<&str> {
        match self.tokens.first() {
            Some(Token::Bare(word)) if !self.starts_blank && word.starts_with('$') => Some(word),
            _ => None,
        }
    }
}

/// Splits master-file text into entries.
fn lex(text: &str) -> Result<Vec<Entry>, ZoneTextError> {
    let mut entries = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line: u32 = 1;
    let mut paren_line: Option<u32> = None;
    let mut current: Option<Entry> = None;
    let mut at_line_start = true;
    let fail = |line: u32, message: &str| ZoneTextError {
        line,
        message: message.to_owned(),
    };

    while let Some(c) = chars.next() {
        let line_start = std::mem::replace(&mut at_line_start, false);
        match c {
            '\n' => {
                line += 1;
                at_line_start = true;
                if paren_line.is_none() {
                    entries.extend(current.take().filter(|e| !e.tokens.is_empty()));
                }
            }
            ';' => while chars.next_if(|&c| c != '\n').is_some() {},
            '(' => {
                if paren_line.is_some() {
                    return Err(fail(line, "nested '(' is not allowed"));
                }
                paren_line = Some(line);
                current.get_or_insert_with(|| new_entry(line, false));
            }
            ')' => {
                if paren_line.take().is_none() {
                    return Err(fail(line, "')' without '('"));
                }
            }
            c if c.is_whitespace() => {
                if line_start && paren_line.is_none() {
                    current = Some(new_entry(line, true));
                }
            }
            '"' => {
                let start = line;
                let mut bytes = Vec::new();
                loop {
                    match chars.next() {
                        None => return Err(fail(start, "unterminated quoted string")),
                        Some('"') => break,
                        Some('\n') => {
                            return Err(fail(start, "line break inside a quoted string"));
                        }
                        Some('\\') => {
                            unescape(&mut chars, &mut bytes).map_err(|m| fail(line, m))?
                        }
                        Some(c) => {
                            let mut buf = [0; 4];
                            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                }
                let s = String::from_utf8(bytes)
                    .map_err(|_| fail(start, "quoted string is not valid UTF-8"))?;
                let entry = current.get_or_insert_with(|| new_entry(line, false));
                entry.tokens.push(Token::Quoted(s));
            }
            c => {
                let mut word = String::from(c);
                if c == '\\' {
                    word.extend(chars.next());
                }
                while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && !"();\"".contains(c)) {
                    word.push(c);
                    if c == '\\' {
                        word.extend(chars.next());
                    }
                }
                let entry = current.get_or_insert_with(|| new_entry(line, false));
                entry.tokens.push(Token::Bare(word));
            }
        }
    }
    if let Some(open) = paren_line {
        return Err(fail(open, "'(' is never closed"));
    }
    entries.extend(current.filter(|e| !e.tokens.is_empty()));
    Ok(entries)
}

fn new_entry(line: u32, starts_blank: bool) -> Entry {
    Entry {
        line,
        starts_blank,
        tokens: Vec::new(),
    }
}

/// Decodes the escapes of an unquoted `<character-string>`.
fn unescape_word(word: &str) -> Result<Vec<u8>, String> {
    let mut chars = word.chars().peekable();
    let mut bytes = Vec::with_capacity(word.len());
    while let Some(c) = chars.next() {
        if c == '\\' {
            unescape(&mut chars, &mut bytes).map_err(str::to_owned)?;
        } else {
            let mut buf = [0; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    Ok(bytes)
}

/// Decodes the escape after a `\` in a string: `\DDD` (a decimal octet) or `\X`.
fn unescape(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    match chars.next() {
        Some(d) if d.is_ascii_digit() => {
            let mut value = d.to_digit(10).unwrap_or(0);
            for _ in 0..2 {
                let digit = chars
                    .next()
                    .and_then(|c| c.to_digit(10))
                    .ok_or("\\DDD escape needs three digits")?;
                value = value * 10 + digit;
            }
            out.push(u8::try_from(value).map_err(|_| "\\DDD escape is above 255")?);
            Ok(())
        }
        Some('\n') | None => Err("'\\' at the end of a string"),
        Some(c) => {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apex() -> Name {
        Name::from_ascii("example.com.").unwrap()
    }

    #[test]
    fn lexer_tracks_lines_across_parentheses_and_comments() {
        let text = "; header\n@ IN SOA ns1 host (\n 1 ; serial\n 2 3 4 5 )\nwww A 192.0.2.1\n";
        let entries = lex(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].line, 2);
        assert_eq!(entries[0].tokens.len(), 10);
        assert_eq!(entries[1].line, 5);
    }

    #[test]
    fn quoted_strings_decode_decimal_escapes() {
        let entries = lex(r#"x TXT "a\"b\\c\065""#).unwrap();
        assert_eq!(entries[0].tokens[2], Token::Quoted("a\"b\\cA".into()));
    }

    #[test]
    fn unquoted_character_strings_are_unescaped() {
        let record = parse_record_line(r#"t TXT foo\032bar \"q\" @"#, &apex()).unwrap();
        assert_eq!(
            canonical_text(&record).unwrap(),
            r#"t.example.com. 3600 IN TXT "foo bar" "\"q\"" "@""#
        );
    }

    #[test]
    fn record_line_defaults_ttl_and_resolves_relative_names() {
        let record = parse_record_line("www CNAME web", &apex()).unwrap();
        assert_eq!(record.ttl, DEFAULT_TTL);
        assert_eq!(record.name, Name::from_ascii("www.example.com.").unwrap());
        assert_eq!(
            canonical_text(&record).unwrap(),
            "www.example.com. 3600 IN CNAME web.example.com."
        );
    }

    #[test]
    fn bad_records_name_the_problem() {
        let err = parse_record_line("www 60 IN BOGUS 1", &apex()).unwrap_err();
        assert!(err.contains("unknown record type BOGUS"), "{err}");
        let err = parse_record_line("www CH A 192.0.2.1", &apex()).unwrap_err();
        assert!(err.contains("class CH is not supported"), "{err}");
        let err = parse_record_line("www A 300.1.1.1", &apex()).unwrap_err();
        assert!(err.starts_with("A record:"), "{err}");
    }
}
