//! Topic names and topic filters: validation, level iteration and matching (3.1.1 §4.7,
//! 5.0 §4.7 and §4.8.2 for shared subscriptions).
//!
//! Both types wrap a [`ByteString`] (a `Bytes` slice known to be UTF-8), so a topic decoded
//! from a PUBLISH points into the read buffer without a copy. Construction validates;
//! holding one means the rules below hold:
//! - a topic name is non-empty (except the 5.0 alias case, see [`TopicName::empty`]),
//!   has no `+` or `#` and no U+0000;
//! - a topic filter is non-empty, `#` only as the whole last level, `+` only as a whole
//!   level, no U+0000, and a `$share/` prefix has a non-empty share name without wildcards
//!   and a filter after it.
//!
//! This file holds the protocol layer's only `unsafe` block ([`utf8_checked`]): wrapping
//! bytes already validated as UTF-8 without validating them a second time on every PUBLISH.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

use super::error::DecodeError;

/// Checks UTF-8 well-formedness and the absence of U+0000.
pub(crate) fn check_string(bytes: &[u8], field: &'static str) -> Result<(), DecodeError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(DecodeError::InvalidUtf8(field));
    }
    if bytes.contains(&0) {
        return Err(DecodeError::NullCharacter(field));
    }
    Ok(())
}

/// A `ByteString` from wire bytes, checked for UTF-8 and U+0000 once.
pub(crate) fn to_bytestring(bytes: Bytes, field: &'static str) -> Result<ByteString, DecodeError> {
    check_string(&bytes, field)?;
    Ok(utf8_checked(bytes))
}

/// Wraps bytes whose UTF-8 validity the caller has just established.
///
/// This is the protocol layer's one `unsafe` block. `ByteString::try_from` would run
/// `from_utf8` a second time over every topic and string of every packet; the decoder has
/// already validated them (it must, to report ill-formed UTF-8 under its own error), so
/// the second pass is pure cost on the PUBLISH hot path.
#[allow(unsafe_code)]
#[inline]
fn utf8_checked(bytes: Bytes) -> ByteString {
    debug_assert!(std::str::from_utf8(&bytes).is_ok());
    // SAFETY: every caller validated `bytes` as UTF-8 immediately before: `to_bytestring`
    // and `TopicName::from_bytes` through `check_string`, `TopicName::from_wire` through
    // `scan_topic` (all ASCII) or `from_utf8` (otherwise), `TopicName::rebased` by
    // comparing them with a valid name's bytes.
    unsafe { ByteString::from_bytes_unchecked(bytes) }
}

/// One pass over a PUBLISH topic, eight bytes per step: (contains `+`, `#` or NUL,
/// contains a non-ASCII byte). Uses the "has zero byte" word trick: `(v - 0x01..) & !v &
/// 0x80..` is non-zero exactly when some byte of `v` is zero. The tail is padded with `a`,
/// which matches none of the tests.
#[inline]
fn scan_topic(b: &[u8]) -> (bool, bool) {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn zero_byte(v: u64) -> u64 {
        v.wrapping_sub(LO) & !v & HI
    }
    let mut bad = 0u64;
    let mut high = 0u64;
    let mut step = |v: u64| {
        bad |= zero_byte(v)
            | zero_byte(v ^ (LO * u64::from(b'+')))
            | zero_byte(v ^ (LO * u64::from(b'#')));
        high |= v & HI;
    };
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        if let Ok(word) = <[u8; 8]>::try_from(c) {
            step(u64::from_le_bytes(word));
        }
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut word = [b'a'; 8];
        for (dst, src) in word.iter_mut().zip(tail) {
            *dst = *src;
        }
        step(u64::from_le_bytes(word));
    }
    (bad != 0, high != 0)
}

#[cfg(test)]
fn has_wildcard_or_nul(b: &[u8]) -> bool {
    scan_topic(b).0
}

/// A validated topic name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TopicName(ByteString);

impl TopicName {
    /// Validates a topic name from UTF-8 text.
    pub fn new(s: impl Into<ByteString>) -> Result<TopicName, DecodeError> {
        let s = s.into();
        Self::validate(s.as_bytes())?;
        Ok(TopicName(s))
    }

    /// Validates a topic name from raw bytes (zero copy).
    pub fn from_bytes(b: Bytes) -> Result<TopicName, DecodeError> {
        // `validate` checked UTF-8 (through `check_string`).
        Self::validate(&b)?;
        Ok(TopicName(utf8_checked(b)))
    }

    /// The empty topic name, legal only in a 5.0 PUBLISH that carries a topic alias.
    pub fn empty() -> TopicName {
        TopicName(ByteString::new())
    }

    /// Decoder entry: validates UTF-8, U+0000 and wildcards in one pass over the bytes,
    /// allowing the empty name (the caller checks emptiness against the topic alias).
    #[inline]
    pub(crate) fn from_wire(b: Bytes) -> Result<TopicName, DecodeError> {
        let (bad, non_ascii) = scan_topic(&b);
        if non_ascii && std::str::from_utf8(&b).is_err() {
            return Err(DecodeError::InvalidUtf8("topic name"));
        }
        if bad {
            return Err(if b.contains(&0) {
                DecodeError::NullCharacter("topic name")
            } else {
                DecodeError::WildcardInTopicName
            });
        }
        Ok(TopicName(utf8_checked(b)))
    }

    fn validate(b: &[u8]) -> Result<(), DecodeError> {
        if b.is_empty() {
            return Err(DecodeError::EmptyTopicName);
        }
        if b.len() > u16::MAX as usize {
            return Err(DecodeError::Truncated("topic name (over 65535 bytes)"));
        }
        check_string(b, "topic name")?;
        if b.iter().any(|&c| c == b'+' || c == b'#') {
            return Err(DecodeError::WildcardInTopicName);
        }
        Ok(())
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The underlying shared string (cheap to clone).
    pub fn as_bytestring(&self) -> &ByteString {
        &self.0
    }

    /// The levels between `/` separators (an empty name has one empty level).
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// True for names starting with `$` (server topics such as `$SYS`), which wildcard
    /// filters do not match at their first level [MQTT-4.7.2-1].
    pub fn is_dollar(&self) -> bool {
        self.0.starts_with('$')
    }

    /// A copy that owns its own allocation, so a long-lived value (a retained or queued
    /// message) does not pin the read buffer it was decoded from.
    pub fn detached(&self) -> TopicName {
        TopicName(ByteString::from(self.as_str()))
    }

    /// This name over `bytes`, a copy of its bytes in another buffer (so a message can
    /// keep topic and payload in one allocation). Bytes that differ get a copy of the
    /// name instead.
    pub(crate) fn rebased(&self, bytes: Bytes) -> TopicName {
        if bytes[..] != *self.as_bytes() {
            return self.detached();
        }
        // Equal to this name's bytes: UTF-8.
        TopicName(utf8_checked(bytes))
    }
}

impl Deref for TopicName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for TopicName {
    type Error = DecodeError;
    fn try_from(s: &str) -> Result<Self, DecodeError> {
        TopicName::new(ByteString::from(s))
    }
}

/// A validated topic filter.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(ByteString);

impl TopicFilter {
    /// Validates a topic filter from UTF-8 text.
    pub fn new(s: impl Into<ByteString>) -> Result<TopicFilter, DecodeError> {
        let s = s.into();
        check_string(s.as_bytes(), "topic filter")?;
        Self::validate(&s)?;
        Ok(TopicFilter(s))
    }

    /// Validates a topic filter from raw bytes (zero copy).
    pub fn from_bytes(b: Bytes) -> Result<TopicFilter, DecodeError> {
        let s = to_bytestring(b, "topic filter")?;
        Self::validate(&s)?;
        Ok(TopicFilter(s))
    }

    fn validate(s: &str) -> Result<(), DecodeError> {
        if s.is_empty() {
            return Err(DecodeError::EmptyTopicFilter);
        }
        if s.len() > u16::MAX as usize {
            return Err(DecodeError::Truncated("topic filter (over 65535 bytes)"));
        }
        if let Some(rest) = s.strip_prefix("$share/") {
            // 5.0 §4.8.2: `$share/{ShareName}/{filter}`, ShareName at least one character,
            // no `/`, `+` or `#` [MQTT-4.8.2-1], followed by `/` and a filter [MQTT-4.8.2-2].
            let (name, filter) = rest
                .split_once('/')
                .ok_or(DecodeError::InvalidSharedFilter)?;
            if name.is_empty() || name.contains(['+', '#']) || filter.is_empty() {
                return Err(DecodeError::InvalidSharedFilter);
            }
            return Self::validate_levels(filter);
        }
        Self::validate_levels(s)
    }

    fn validate_levels(s: &str) -> Result<(), DecodeError> {
        let mut levels = s.split('/').peekable();
        while let Some(level) = levels.next() {
            if level.contains('#') {
                if level != "#" || levels.peek().is_some() {
                    return Err(DecodeError::InvalidMultiLevelWildcard);
                }
            } else if level.contains('+') && level != "+" {
                return Err(DecodeError::InvalidSingleLevelWildcard);
            }
        }
        Ok(())
    }

    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The underlying shared string.
    pub fn as_bytestring(&self) -> &ByteString {
        &self.0
    }

    /// The levels of the filter (for a shared subscription, of the filter part).
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.shared().map_or(self.as_str(), |(_, f)| f).split('/')
    }

    /// True if the filter contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.0.contains(['+', '#'])
    }

    /// For `$share/{name}/{filter}`, the share name and the filter part.
    pub fn shared(&self) -> Option<(&str, &str)> {
        self.0.strip_prefix("$share/")?.split_once('/')
    }

    /// Whether this filter matches `topic` (see [`matches()`]). A shared subscription's
    /// filter part is matched.
    pub fn matches(&self, topic: &str) -> bool {
        matches(self.shared().map_or(self.as_str(), |(_, f)| f), topic)
    }

    /// A copy with its own allocation (see [`TopicName::detached`]).
    pub fn detached(&self) -> TopicFilter {
        TopicFilter(ByteString::from(self.as_str()))
    }
}

impl Deref for TopicFilter {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = DecodeError;
    fn try_from(s: &str) -> Result<Self, DecodeError> {
        TopicFilter::new(ByteString::from(s))
    }
}

/// Whether the (valid) filter `filter` matches the (valid) topic name `topic`.
///
/// - `+` matches exactly one level, which may be empty;
/// - `#` matches the parent level and any number of child levels (`a/#` matches `a`);
/// - a filter starting with `+` or `#` does not match a topic starting with `$`
///   [MQTT-4.7.2-1];
/// - levels compare byte for byte, case-sensitive, and empty levels are significant.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Result<TopicFilter, DecodeError> {
        TopicFilter::try_from(s)
    }

    #[test]
    fn wildcard_scan_finds_every_position() {
        for len in 0..40 {
            let clean = vec![b'a'; len];
            assert!(!has_wildcard_or_nul(&clean));
            for pos in 0..len {
                for bad in [0u8, b'+', b'#'] {
                    let mut v = clean.clone();
                    v[pos] = bad;
                    assert!(has_wildcard_or_nul(&v), "len {len} pos {pos} byte {bad}");
                }
            }
        }
        // Bytes next to the forbidden values must not be mistaken for them.
        assert!(!has_wildcard_or_nul(
            b"\x01\x2a\x22\x24\xff\x80\x7f/abcdefgh"
        ));
    }

    #[test]
    fn topic_name_rules() {
        assert!(TopicName::try_from("a/b").is_ok());
        assert!(TopicName::try_from("/").is_ok());
        assert!(TopicName::try_from("$SYS/x").is_ok());
        assert_eq!(TopicName::try_from(""), Err(DecodeError::EmptyTopicName));
        assert_eq!(
            TopicName::try_from("a/+"),
            Err(DecodeError::WildcardInTopicName)
        );
        assert_eq!(
            TopicName::try_from("a#"),
            Err(DecodeError::WildcardInTopicName)
        );
        assert_eq!(
            TopicName::try_from("a\0b"),
            Err(DecodeError::NullCharacter("topic name"))
        );
        assert_eq!(
            TopicName::from_bytes(Bytes::from_static(b"\xc3\x28")),
            Err(DecodeError::InvalidUtf8("topic name"))
        );
        // An encoded surrogate (U+D800) is ill-formed UTF-8.
        assert_eq!(
            TopicName::from_bytes(Bytes::from_static(b"\xed\xa0\x80")),
            Err(DecodeError::InvalidUtf8("topic name"))
        );
    }

    #[test]
    fn topic_filter_rules() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/+",
            "a//b",
            "sport/tennis/#",
            "$SYS/#",
            "$share/g/a/#",
            "$share/g/#",
        ] {
            assert!(f(ok).is_ok(), "{ok} should be valid");
        }
        assert_eq!(f(""), Err(DecodeError::EmptyTopicFilter));
        assert_eq!(f("a/#/b"), Err(DecodeError::InvalidMultiLevelWildcard));
        assert_eq!(f("a#"), Err(DecodeError::InvalidMultiLevelWildcard));
        assert_eq!(
            f("sport/tennis#"),
            Err(DecodeError::InvalidMultiLevelWildcard)
        );
        assert_eq!(f("a+/b"), Err(DecodeError::InvalidSingleLevelWildcard));
        assert_eq!(f("sport+"), Err(DecodeError::InvalidSingleLevelWildcard));
        assert_eq!(f("$share/g"), Err(DecodeError::InvalidSharedFilter));
        assert_eq!(f("$share//a"), Err(DecodeError::InvalidSharedFilter));
        assert_eq!(f("$share/g+/a"), Err(DecodeError::InvalidSharedFilter));
        assert_eq!(f("$share/g/"), Err(DecodeError::InvalidSharedFilter));
    }

    #[test]
    fn matching_follows_section_4_7() {
        let yes = [
            ("sport/tennis/player1/#", "sport/tennis/player1"),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking"),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
            ),
            ("sport/#", "sport"),
            ("#", "a/b/c"),
            ("#", "/"),
            ("sport/tennis/+", "sport/tennis/player1"),
            ("sport/+", "sport/"),
            ("+/+", "/finance"),
            ("/+", "/finance"),
            ("+", "a"),
            ("+", ""),
            ("a//b", "a//b"),
            ("$SYS/#", "$SYS/broker/load"),
            ("$SYS/+", "$SYS/x"),
            ("$+", "$+"),
        ];
        for (flt, top) in yes {
            assert!(matches(flt, top), "{flt} should match {top}");
        }
        let no = [
            ("sport/tennis/+", "sport/tennis/player1/ranking"),
            ("sport/+", "sport"),
            ("+", "/finance"),
            ("a/b", "a/b/c"),
            ("a/b/c", "a/b"),
            ("A", "a"),
            ("#", "$SYS/x"),
            ("+/monitor/Clients", "$SYS/monitor/Clients"),
            ("+", "$SYS"),
            ("a//b", "a/b"),
        ];
        for (flt, top) in no {
            assert!(!matches(flt, top), "{flt} should not match {top}");
        }
    }

    #[test]
    fn shared_filter_parts() {
        let s = f("$share/grp/a/+").expect("valid");
        assert_eq!(s.shared(), Some(("grp", "a/+")));
        assert!(s.matches("a/b"));
        assert_eq!(s.levels().collect::<Vec<_>>(), ["a", "+"]);
        assert!(f("a/+").expect("valid").shared().is_none());
    }
}
