//! The header block of `HPUB` and `HMSG` (protocol 1.1).
//!
//! A header block is a count byte followed by that many key/value pairs:
//!
//! ```text
//! u8 n                      number of headers, 0..=64
//! n times:
//!   u8 k, k bytes           key: 1..=64 bytes of printable ASCII but ':'
//!   u16 v, v bytes          value: 0..=4096 bytes of UTF-8, no control character
//! ```
//!
//! The block ends exactly after its last header, and its length travels in
//! front of it as a `u16`, so a block is at most 65535 bytes (and, being
//! part of a frame, within `max_frame`). Keys are case-sensitive, may repeat,
//! and keep their order: a broker forwards the block byte for byte.
//!
//! [`Headers`] is a checked view of a block inside a received frame;
//! [`HeaderBlock`] builds one to send.

use std::fmt;

use bytes::BufMut;

/// Most headers one block may hold.
pub const MAX_HEADERS: usize = 64;

/// Longest header key, in bytes.
pub const MAX_HEADER_KEY: usize = 64;

/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE: usize = 4096;

/// Longest header block, count byte included: its length is a `u16`.
pub const MAX_HEADER_BLOCK: usize = u16::MAX as usize;

/// How a header block breaks its layout or its rules. A server answers
/// every one of these with *bad header* (13, fatal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The block ends before its layout does: it has no count byte, or the
    /// count says more headers than it holds, or a key length, key, value
    /// length or value runs past the end of the block.
    #[error("header block ends before its headers do")]
    Truncated,
    /// Bytes are left in the block after its last header.
    #[error("{0} bytes left in the header block after its last header")]
    TrailingBytes(usize),
    /// The count is above [`MAX_HEADERS`] (or, when building, one more header
    /// would be).
    #[error("{0} headers, more than the 64 allowed")]
    TooMany(usize),
    /// A key is empty.
    #[error("header key is empty")]
    EmptyKey,
    /// A key is longer than [`MAX_HEADER_KEY`].
    #[error("header key is {0} bytes, more than the 64 allowed")]
    KeyTooLong(usize),
    /// A key byte is not printable ASCII (`!` to `~`), or is `:`.
    #[error("header key contains the byte 0x{0:02x}")]
    BadKeyByte(u8),
    /// A value is longer than [`MAX_HEADER_VALUE`].
    #[error("header value is {0} bytes, more than the 4096 allowed")]
    ValueTooLong(usize),
    /// A value is not valid UTF-8.
    #[error("header value is not valid UTF-8")]
    BadValueUtf8,
    /// A value contains a control character (general category `Cc`).
    #[error("header value contains the control character {0:?}")]
    BadValueChar(char),
    /// The block is longer than [`MAX_HEADER_BLOCK`]: its length cannot be
    /// sent. Never the result of decoding a frame, whose `u16` length
    /// cannot say more.
    #[error("header block is {0} bytes, more than 65535")]
    BlockTooLong(usize),
}

/// A checked header block, borrowed from a frame (or from a
/// [`HeaderBlock`]).
///
/// Equality compares the encoded bytes, which are canonical: two blocks are
/// equal exactly when they hold the same headers in the same order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    /// The whole block: count byte and headers.
    block: &'a [u8],
}

impl<'a> Headers<'a> {
    /// A block without headers: the count byte 0 alone.
    pub const EMPTY: Headers<'static> = Headers { block: &[0] };

    /// Checks `block` (count byte included) against the layout and rules.
    ///
    /// # Errors
    /// The first problem found, in layout order: the count, then each
    /// header's key length, key, value length and value, then trailing
    /// bytes. Each length is checked against its limit as soon as it is
    /// read, before the bytes it announces.
    pub fn parse(block: &'a [u8]) -> Result<Self, HeaderError> {
        if block.len() > MAX_HEADER_BLOCK {
            return Err(HeaderError::BlockTooLong(block.len()));
        }
        let (&count, mut rest) = block.split_first().ok_or(HeaderError::Truncated)?;
        if usize::from(count) > MAX_HEADERS {
            return Err(HeaderError::TooMany(count.into()));
        }
        for _ in 0..count {
            let (&key_len, after) = rest.split_first().ok_or(HeaderError::Truncated)?;
            let key_len = usize::from(key_len);
            check_key_len(key_len)?;
            let (key, after) = split(after, key_len)?;
            check_key(key)?;
            let (value_len, after) = split(after, 2)?;
            let value_len = usize::from(u16::from_le_bytes([value_len[0], value_len[1]]));
            check_value_len(value_len)?;
            let (value, after) = split(after, value_len)?;
            check_value(std::str::from_utf8(value).map_err(|_| HeaderError::BadValueUtf8)?)?;
            rest = after;
        }
        match rest.len() {
            0 => Ok(Self { block }),
            n => Err(HeaderError::TrailingBytes(n)),
        }
    }

    /// The block as it travels: count byte and headers. A broker forwards
    /// these bytes unchanged.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.block
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        usize::from(self.block[0])
    }

    /// Whether the block holds no header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The headers in order, as `(key, value)`.
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter { rest: &self.block[1..], left: self.len() }
    }

    /// The value of the first header named `key` (compared byte for byte).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|&(k, _)| k == key).map(|(_, v)| v)
    }
}

impl Default for Headers<'_> {
    fn default() -> Self {
        Headers::EMPTY
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = (&'a str, &'a str);
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// The headers of a [`Headers`], in order.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        // The block was checked by `Headers::parse`, so every length fits
        // and every string is UTF-8; the fallbacks below are never taken.
        self.left = self.left.checked_sub(1)?;
        let (&key_len, rest) = self.rest.split_first()?;
        let (key, rest) = split(rest, usize::from(key_len)).ok()?;
        let (value_len, rest) = split(rest, 2).ok()?;
        let value_len = usize::from(u16::from_le_bytes([value_len[0], value_len[1]]));
        let (value, rest) = split(rest, value_len).ok()?;
        self.rest = rest;
        Some((std::str::from_utf8(key).ok()?, std::str::from_utf8(value).ok()?))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for HeaderIter<'_> {}

impl std::iter::FusedIterator for HeaderIter<'_> {}

/// A header block being built, to send in an `HPUB`.
///
/// ```
/// use corecast_proto::HeaderBlock;
///
/// let mut block = HeaderBlock::new();
/// block.push("trace-id", "4bf92f3577b34da6")?;
/// block.push("content-type", "application/json")?;
/// assert_eq!(block.headers().get("trace-id"), Some("4bf92f3577b34da6"));
/// # Ok::<(), corecast_proto::HeaderError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderBlock {
    /// Count byte and headers, always a valid block.
    bytes: Vec<u8>,
}

impl HeaderBlock {
    /// A block without headers.
    pub fn new() -> Self {
        Self { bytes: vec![0] }
    }

    /// Appends a header after the others.
    ///
    /// # Errors
    /// The key or value breaks the rules, the block already holds
    /// [`MAX_HEADERS`] headers ([`HeaderError::TooMany`]), or it would grow
    /// past [`MAX_HEADER_BLOCK`] bytes ([`HeaderError::BlockTooLong`]). The
    /// block is unchanged then.
    pub fn push(&mut self, key: &str, value: &str) -> Result<(), HeaderError> {
        let count = self.len();
        if count >= MAX_HEADERS {
            return Err(HeaderError::TooMany(count + 1));
        }
        check_key_len(key.len())?;
        check_key(key.as_bytes())?;
        check_value_len(value.len())?;
        check_value(value)?;
        let grown = self.bytes.len() + 1 + key.len() + 2 + value.len();
        if grown > MAX_HEADER_BLOCK {
            return Err(HeaderError::BlockTooLong(grown));
        }
        self.bytes[0] += 1;
        // Both lengths were checked against limits that fit their types.
        self.bytes.put_u8(key.len() as u8);
        self.bytes.put_slice(key.as_bytes());
        self.bytes.put_u16_le(value.len() as u16);
        self.bytes.put_slice(value.as_bytes());
        Ok(())
    }

    /// The block, to put in a frame.
    pub fn headers(&self) -> Headers<'_> {
        Headers { block: &self.bytes }
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        usize::from(self.bytes[0])
    }

    /// Whether the block holds no header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for HeaderBlock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HeaderBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.headers(), f)
    }
}

fn split(bytes: &[u8], n: usize) -> Result<(&[u8], &[u8]), HeaderError> {
    if bytes.len() < n {
        return Err(HeaderError::Truncated);
    }
    Ok(bytes.split_at(n))
}

fn check_key_len(len: usize) -> Result<(), HeaderError> {
    match len {
        0 => Err(HeaderError::EmptyKey),
        n if n > MAX_HEADER_KEY => Err(HeaderError::KeyTooLong(n)),
        _ => Ok(()),
    }
}

fn check_key(key: &[u8]) -> Result<(), HeaderError> {
    match key.iter().find(|&&b| !(b'!'..=b'~').contains(&b) || b == b':') {
        Some(&b) => Err(HeaderError::BadKeyByte(b)),
        None => Ok(()),
    }
}

fn check_value_len(len: usize) -> Result<(), HeaderError> {
    if len > MAX_HEADER_VALUE {
        return Err(HeaderError::ValueTooLong(len));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), HeaderError> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(HeaderError::BadValueChar(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(pairs: &[(&str, &str)]) -> HeaderBlock {
        let mut block = HeaderBlock::new();
        for (k, v) in pairs {
            block.push(k, v).expect("valid header");
        }
        block
    }

    #[test]
    fn built_blocks_parse_back_in_order() {
        let pairs = [("trace-id", "abc"), ("k", ""), ("k", "é ü"), ("Content-Type", "text/plain")];
        let built = block(&pairs);
        let parsed = Headers::parse(built.headers().as_bytes()).expect("valid");
        assert_eq!(parsed, built.headers());
        assert_eq!(parsed.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed.iter().len(), 4);
        assert_eq!(parsed.get("k"), Some(""));
        assert_eq!(parsed.get("K"), None);
        assert_eq!(format!("{parsed:?}"), format!("{:?}", pairs.to_vec()));
    }

    #[test]
    fn the_empty_block_is_the_count_byte_alone() {
        assert_eq!(HeaderBlock::new().headers(), Headers::EMPTY);
        assert_eq!(Headers::EMPTY.as_bytes(), &[0]);
        assert!(Headers::EMPTY.is_empty());
        assert_eq!(Headers::parse(&[0]), Ok(Headers::EMPTY));
        assert_eq!(Headers::parse(&[]), Err(HeaderError::Truncated));
    }

    #[test]
    fn limits_are_inclusive() {
        let key = "k".repeat(MAX_HEADER_KEY);
        let value = "v".repeat(MAX_HEADER_VALUE);
        let built = block(&[(&key, &value)]);
        assert_eq!(Headers::parse(built.headers().as_bytes()).map(|h| h.len()), Ok(1));
        let mut many = HeaderBlock::new();
        for i in 0..MAX_HEADERS {
            many.push("n", &i.to_string()).expect("within the count");
        }
        assert_eq!(many.push("n", "x"), Err(HeaderError::TooMany(MAX_HEADERS + 1)));
        assert_eq!(many.len(), MAX_HEADERS);
    }

    #[test]
    fn bad_headers_are_refused_when_built() {
        let mut b = HeaderBlock::new();
        let long_key = "k".repeat(MAX_HEADER_KEY + 1);
        let long_value = "v".repeat(MAX_HEADER_VALUE + 1);
        let cases = [
            ("", "v", HeaderError::EmptyKey),
            (long_key.as_str(), "v", HeaderError::KeyTooLong(65)),
            ("a:b", "v", HeaderError::BadKeyByte(b':')),
            ("a b", "v", HeaderError::BadKeyByte(b' ')),
            ("é", "v", HeaderError::BadKeyByte(0xc3)),
            ("a\u{7f}", "v", HeaderError::BadKeyByte(0x7f)),
            ("k", long_value.as_str(), HeaderError::ValueTooLong(4097)),
            ("k", "a\r\nb", HeaderError::BadValueChar('\r')),
            ("k", "\u{85}", HeaderError::BadValueChar('\u{85}')),
        ];
        for (key, value, want) in cases {
            assert_eq!(b.push(key, value), Err(want), "{key:?}: {value:?}");
        }
        assert!(b.is_empty(), "a refused header leaves the block unchanged");
    }

    #[test]
    fn a_block_cannot_outgrow_its_u16_length() {
        let mut b = HeaderBlock::new();
        let value = "v".repeat(MAX_HEADER_VALUE);
        // 1 + 15 * (1 + 1 + 2 + 4096) = 61501; one more is 65601.
        for _ in 0..15 {
            b.push("k", &value).expect("fits");
        }
        assert_eq!(b.push("k", &value), Err(HeaderError::BlockTooLong(65601)));
        assert_eq!(b.len(), 15);
        let too_long = vec![0; MAX_HEADER_BLOCK + 1];
        assert_eq!(Headers::parse(&too_long), Err(HeaderError::BlockTooLong(65536)));
    }

    #[test]
    fn parse_reports_the_first_problem_in_layout_order() {
        let cases: [(&[u8], HeaderError); 9] = [
            (&[2, 1, b'k', 0, 0], HeaderError::Truncated),
            (&[65], HeaderError::TooMany(65)),
            (&[1, 0], HeaderError::EmptyKey),
            (&[1, 200, b'k'], HeaderError::KeyTooLong(200)),
            (&[1, 1, b':', 0, 0], HeaderError::BadKeyByte(b':')),
            (&[1, 1, b'k', 0x01, 0x10], HeaderError::ValueTooLong(4097)),
            (&[1, 1, b'k', 1, 0, 0xff], HeaderError::BadValueUtf8),
            (&[1, 1, b'k', 1, 0, b'\n'], HeaderError::BadValueChar('\n')),
            (&[0, 9], HeaderError::TrailingBytes(1)),
        ];
        for (bytes, want) in cases {
            assert_eq!(Headers::parse(bytes), Err(want), "{bytes:?}");
        }
    }
}
