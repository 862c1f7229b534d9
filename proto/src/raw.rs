//! Splitting a byte stream into length-prefixed frames.

use crate::{error::DecodeError, LEN_PREFIX, MIN_FRAME_LEN};

/// One frame cut out of the stream: opcode, flags and the body after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The frame's opcode.
    pub opcode: u8,
    /// The frame's flags byte.
    pub flags: u8,
    /// Everything after the flags byte.
    pub body: &'a [u8],
}

impl<'a> RawFrame<'a> {
    /// Cuts the next frame off the front of `src`.
    ///
    /// Returns `Ok(None)` and leaves `src` alone when the frame is not
    /// complete yet. A length prefix above `max_frame` is an error as soon as
    /// the prefix has arrived, before the rest of the frame.
    #[inline]
    pub fn split(src: &mut &'a [u8], max_frame: u32) -> Result<Option<Self>, DecodeError> {
        let Some(len) = Self::peek_len(src) else {
            return Ok(None);
        };
        if len < MIN_FRAME_LEN {
            return Err(DecodeError::FrameTooShort(len));
        }
        if len > max_frame {
            return Err(DecodeError::FrameTooLarge { len, max: max_frame });
        }
        let total = LEN_PREFIX + len as usize;
        let Some(frame) = src.get(LEN_PREFIX..total) else {
            return Ok(None);
        };
        *src = &src[total..];
        Ok(Some(Self { opcode: frame[0], flags: frame[1], body: &frame[2..] }))
    }

    /// The length prefix at the front of `src` (the frame's length after
    /// the prefix), once all of its bytes have arrived.
    #[inline]
    pub fn peek_len(src: &[u8]) -> Option<u32> {
        let prefix: [u8; LEN_PREFIX] = src.get(..LEN_PREFIX)?.try_into().ok()?;
        Some(u32::from_le_bytes(prefix))
    }

    /// How many bytes the whole frame took on the wire, prefix included.
    pub fn wire_len(&self) -> usize {
        LEN_PREFIX + 2 + self.body.len()
    }
}

/// Writes the length prefix, opcode and flags of a frame whose body is
/// `body_len` bytes.
pub(crate) fn put_header<B: bytes::BufMut>(dst: &mut B, opcode: u8, flags: u8, body_len: usize) {
    let len = u32::try_from(2 + body_len).expect("frame longer than u32::MAX");
    dst.put_u32_le(len);
    dst.put_u8(opcode);
    dst.put_u8(flags);
}
