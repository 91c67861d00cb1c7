//! Primitive data types of §1.5 (3.1.1) and §1.5 (5.0): big-endian integers, Variable
//! Byte Integers, length-prefixed UTF-8 strings and binary data. Reading slices a frame's
//! `Bytes` (zero copy); writing appends to a `BytesMut`.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use super::topic::to_bytestring;

/// Largest value a Variable Byte Integer carries (four bytes of seven bits).
pub const VARINT_MAX: u32 = 268_435_455;

/// Result of parsing a Variable Byte Integer from a buffer that may be incomplete.
pub(crate) enum VarInt {
    /// The value and the number of bytes it took.
    Done(u32, usize),
    /// The buffer ends inside the integer.
    Incomplete,
}

/// Parses a Variable Byte Integer at the start of `buf`.
#[inline]
pub(crate) fn parse_varint(buf: &[u8]) -> Result<VarInt, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(VarInt::Incomplete);
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A last byte of 0 after the first means a shorter encoding existed.
            if byte == 0 && i > 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(VarInt::Done(value, i + 1));
        }
    }
    Err(DecodeError::VarIntTooLong)
}

/// Bytes a Variable Byte Integer of this value takes.
#[inline]
pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends a Variable Byte Integer; the caller guarantees `v <= VARINT_MAX`.
#[inline]
pub(crate) fn put_varint(buf: &mut BytesMut, mut v: usize) {
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

/// Appends a length-prefixed string or binary field.
#[inline]
pub(crate) fn put_prefixed(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

/// Fails if a string or binary field cannot carry its 16-bit length prefix.
#[inline]
pub(crate) fn check_len(b: &[u8], field: &'static str) -> Result<usize, EncodeError> {
    if b.len() > u16::MAX as usize {
        Err(EncodeError::FieldTooLong(field))
    } else {
        Ok(2 + b.len())
    }
}

/// A cursor over one complete frame body.
pub(crate) struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `frame[start..end]`.
    #[inline]
    pub(crate) fn new(frame: &'a Bytes, start: usize, end: usize) -> Self {
        Reader {
            frame,
            pos: start,
            end,
        }
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// Fails unless every byte of the body was consumed.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    /// The next `N` bytes as an array.
    #[inline]
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        if self.remaining() < N {
            return Err(DecodeError::Truncated(field));
        }
        let a = self
            .frame
            .get(self.pos..self.pos + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(DecodeError::Truncated(field))?;
        self.pos += N;
        Ok(a)
    }

    #[inline]
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.take(field)?))
    }

    #[inline]
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(field)?))
    }

    #[inline]
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(field)?))
    }

    /// A Variable Byte Integer inside the body (property lengths, subscription ids).
    #[inline]
    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        match parse_varint(self.frame.get(self.pos..self.end).unwrap_or_default())? {
            VarInt::Done(v, n) => {
                self.pos += n;
                Ok(v)
            }
            VarInt::Incomplete => Err(DecodeError::Truncated(field)),
        }
    }

    /// The next `n` bytes as a slice of the frame.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(field));
        }
        let b = self.frame.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Binary Data: a 16-bit length and that many bytes.
    #[inline]
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let n = self.u16(field)? as usize;
        self.bytes(n, field)
    }

    /// UTF-8 Encoded String: well-formed, no U+0000.
    #[inline]
    pub(crate) fn string(&mut self, field: &'static str) -> Result<ByteString, DecodeError> {
        to_bytestring(self.binary(field)?, field)
    }

    /// A sub-reader over the next `n` bytes (a property block), advancing past them.
    #[inline]
    pub(crate) fn sub(&mut self, n: usize, field: &'static str) -> Result<Reader<'a>, DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(field));
        }
        let r = Reader::new(self.frame, self.pos, self.pos + n);
        self.pos += n;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_examples_from_the_spec() {
        // 3.1.1 Table 2.4 boundaries.
        let cases: [(&[u8], u32); 8] = [
            (&[0x00], 0),
            (&[0x7F], 127),
            (&[0x80, 0x01], 128),
            (&[0xFF, 0x7F], 16_383),
            (&[0x80, 0x80, 0x01], 16_384),
            (&[0xFF, 0xFF, 0x7F], 2_097_151),
            (&[0x80, 0x80, 0x80, 0x01], 2_097_152),
            (&[0xFF, 0xFF, 0xFF, 0x7F], 268_435_455),
        ];
        for (bytes, value) in cases {
            match parse_varint(bytes) {
                Ok(VarInt::Done(v, n)) => {
                    assert_eq!((v, n), (value, bytes.len()));
                }
                _ => panic!("{bytes:?} should parse"),
            }
            let mut out = BytesMut::new();
            put_varint(&mut out, value as usize);
            assert_eq!(&out[..], bytes);
            assert_eq!(varint_len(value as usize), bytes.len());
        }
    }

    #[test]
    fn varint_errors() {
        assert!(matches!(
            parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::VarIntTooLong)
        ));
        assert!(matches!(
            parse_varint(&[0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        ));
        assert!(matches!(parse_varint(&[0x80]), Ok(VarInt::Incomplete)));
        assert!(matches!(parse_varint(&[]), Ok(VarInt::Incomplete)));
    }
}
