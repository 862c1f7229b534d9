//! Field readers and writers shared by the frame layouts.

use bytes::BufMut;

use crate::error::{DecodeError, Field};

/// Reads fields from a frame body, checking every length against the end.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `u8`-length string of UTF-8.
    #[inline]
    pub(crate) fn short_str(&mut self, field: Field) -> Result<&'a str, DecodeError> {
        let len = self.u8()? as usize;
        utf8(self.bytes(len)?, field)
    }

    /// `u16` length and bytes.
    pub(crate) fn long_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()? as usize;
        self.bytes(len)
    }

    /// Everything left: a payload.
    #[inline]
    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }

    /// The layout has ended; nothing may follow.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[inline]
pub(crate) fn utf8(bytes: &[u8], field: Field) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::BadUtf8(field))
}

/// Writes a `u8`-length string.
///
/// # Panics
/// If `s` is longer than 255 bytes: callers validate strings first.
pub(crate) fn put_short<B: BufMut>(dst: &mut B, s: &[u8]) {
    let len = u8::try_from(s.len()).expect("short string longer than 255 bytes");
    dst.put_u8(len);
    dst.put_slice(s);
}

/// Writes a `u16`-length byte string.
///
/// # Panics
/// If `s` is longer than 65535 bytes: callers validate strings first.
pub(crate) fn put_long<B: BufMut>(dst: &mut B, s: &[u8]) {
    let len = u16::try_from(s.len()).expect("long string longer than 65535 bytes");
    dst.put_u16_le(len);
    dst.put_slice(s);
}
