//! The field-level primitives shared by the frame and media codecs: a bounded
//! reader over a complete body and a writer that records the first limit it
//! breaks. Strings are `varint length | UTF-8`, lists `varint count | items`,
//! booleans one byte 0/1.

use bytes::{BufMut, BytesMut};

use super::{WireError, varint};

/// Reads fields from a complete frame body; reading past its end is
/// [`WireError::Truncated`].
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    pub(super) fn varint(&mut self) -> Result<u64, WireError> {
        varint::decode(&mut self.rest)
    }

    pub(super) fn byte(&mut self) -> Result<u8, WireError> {
        let (&first, rest) = self.rest.split_first().ok_or(WireError::Truncated)?;
        self.rest = rest;
        Ok(first)
    }

    pub(super) fn boolean(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(WireError::InvalidValue {
                field,
                value: u64::from(other),
            }),
        }
    }

    /// A length or count, checked against `max` before anything is allocated.
    pub(super) fn bounded(&mut self, what: &'static str, max: usize) -> Result<usize, WireError> {
        let declared = self.varint()?;
        match usize::try_from(declared) {
            Ok(len) if len <= max => Ok(len),
            _ => Err(WireError::Oversize {
                what,
                len: usize::try_from(declared).unwrap_or(usize::MAX),
                max,
            }),
        }
    }

    pub(super) fn string(&mut self, field: &'static str, max: usize) -> Result<String, WireError> {
        let len = self.bounded(field, max)?;
        if len > self.rest.len() {
            return Err(WireError::Truncated);
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        let text = std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8(field))?;
        Ok(text.to_owned())
    }

    pub(super) fn list<T>(
        &mut self,
        field: &'static str,
        max: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let count = self.bounded(field, max)?;
        // Every item takes at least one byte: never reserve more than remains.
        let mut items = Vec::with_capacity(count.min(self.rest.len()));
        for _ in 0..count {
            items.push(item(self)?);
        }
        Ok(items)
    }

    /// Whether every byte of the body has been read (for a trailing
    /// optional field).
    pub(super) fn at_end(&self) -> bool {
        self.rest.is_empty()
    }

    /// Ends a body: any byte left over is [`WireError::TrailingBytes`].
    pub(super) fn finish(self, frame: &'static str) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes { frame })
        }
    }
}

/// Writes fields into a buffer. It always writes (so that infallible encoding
/// stays possible) and remembers the first value that breaks a limit.
pub(super) struct Writer<'a> {
    buf: &'a mut BytesMut,
    first_error: Option<WireError>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(buf: &'a mut BytesMut) -> Self {
        Self {
            buf,
            first_error: None,
        }
    }

    fn fail(&mut self, error: WireError) {
        self.first_error.get_or_insert(error);
    }

    pub(super) fn varint(&mut self, value: u64) {
        if value > varint::MAX {
            self.fail(WireError::VarintOverflow);
        }
        varint::encode(value, self.buf);
    }

    pub(super) fn byte(&mut self, value: u8) {
        self.buf.put_u8(value);
    }

    pub(super) fn boolean(&mut self, value: bool) {
        self.buf.put_u8(u8::from(value));
    }

    fn bounded(&mut self, what: &'static str, len: usize, max: usize) {
        if len > max {
            self.fail(WireError::Oversize { what, len, max });
        }
        self.varint(len as u64);
    }

    pub(super) fn string(&mut self, field: &'static str, value: &str, max: usize) {
        self.bounded(field, value.len(), max);
        self.buf.put_slice(value.as_bytes());
    }

    pub(super) fn list<T>(
        &mut self,
        field: &'static str,
        items: &[T],
        max: usize,
        mut item: impl FnMut(&mut Self, &T),
    ) {
        self.bounded(field, items.len(), max);
        for value in items {
            item(self, value);
        }
    }

    /// The first limit broken while writing, if any.
    pub(super) fn finish(self) -> Result<(), WireError> {
        self.first_error.map_or(Ok(()), Err)
    }
}
