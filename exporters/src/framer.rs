//! Reads a JSON document one value at a time, so that a bundle of any size is verified with one
//! record in memory. The framer only finds where a value ends (tracking strings and nesting);
//! serde_json then parses and validates each value's bytes, which is several times faster than
//! parsing the whole stream through `serde_json::from_reader`.

use std::io::{BufRead, BufReader, Read};

/// A framing problem: where and what.
#[derive(Debug)]
pub(crate) enum FrameError {
    Io(std::io::Error),
    Syntax { offset: u64, reason: String },
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

pub(crate) struct Framer<R> {
    inner: BufReader<R>,
    offset: u64,
}

impl<R: Read> Framer<R> {
    pub fn new(reader: R) -> Framer<R> {
        Framer {
            inner: BufReader::with_capacity(256 * 1024, reader),
            offset: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn syntax(&self, reason: impl Into<String>) -> FrameError {
        FrameError::Syntax {
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.offset += n as u64;
    }

    /// Skips whitespace; the next byte, not consumed, or `None` at the end of the input.
    pub fn peek(&mut self) -> Result<Option<u8>, FrameError> {
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|b| !is_ws(*b)) {
                Some(i) => {
                    let b = buf.get(i).copied();
                    self.consume(i);
                    return Ok(b);
                }
                None => {
                    let n = buf.len();
                    self.consume(n);
                }
            }
        }
    }

    /// Skips whitespace and consumes `want`, or fails naming what was there instead.
    pub fn expect(&mut self, want: u8, context: &str) -> Result<(), FrameError> {
        let found = self.peek()?;
        if found == Some(want) {
            self.consume(1);
            return Ok(());
        }
        Err(self.syntax(format!(
            "expected `{}` {context}, found {}",
            want as char,
            describe(found)
        )))
    }

    /// Skips whitespace and consumes one of `allowed`, returning it.
    pub fn one_of(&mut self, allowed: &[u8], context: &str) -> Result<u8, FrameError> {
        match self.peek()? {
            Some(b) if allowed.contains(&b) => {
                self.consume(1);
                Ok(b)
            }
            found => {
                let want: Vec<String> = allowed
                    .iter()
                    .map(|b| format!("`{}`", *b as char))
                    .collect();
                Err(self.syntax(format!(
                    "expected {} {context}, found {}",
                    want.join(" or "),
                    describe(found)
                )))
            }
        }
    }

    /// Reads the bytes of the next JSON value into `out` (cleared first). The value is framed,
    /// not validated: parse `out` afterwards. Fails when it is longer than `limit` bytes.
    pub fn value(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), FrameError> {
        out.clear();
        let mut too_long = false;
        self.value_chunks(&mut |chunk| {
            out.extend_from_slice(chunk);
            too_long |= out.len() > limit;
            !too_long
        })?;
        if too_long {
            return Err(self.syntax(format!("a value is longer than {limit} bytes")));
        }
        Ok(())
    }

    /// Frames the next JSON value without keeping it; returns the offsets of its first byte and
    /// of the byte after it.
    pub fn skip_value(&mut self) -> Result<(u64, u64), FrameError> {
        self.peek()?;
        let start = self.offset;
        self.value_chunks(&mut |_| true)?;
        Ok((start, self.offset))
    }

    /// Frames the next JSON value, handing its bytes to `sink` a piece at a time as they are
    /// read (a string's quotes and escapes included). `sink` returns false to stop early: the
    /// value is then left unfinished.
    pub fn value_chunks(&mut self, sink: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), FrameError> {
        let first = self.peek()?;
        let scalar = match first {
            None => return Err(self.syntax("unexpected end of the file, expected a value")),
            Some(b'{' | b'[' | b'"') => false,
            Some(b',' | b':' | b'}' | b']') => {
                return Err(self.syntax(format!("expected a value, found {}", describe(first))))
            }
            Some(_) => true,
        };
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                if scalar {
                    return Ok(());
                }
                return Err(self.syntax("unexpected end of the file inside a value"));
            }
            let mut end = None;
            let mut i = 0;
            while let Some(&b) = buf.get(i) {
                i += 1;
                if scalar {
                    if matches!(b, b',' | b'}' | b']' | b':') || is_ws(b) {
                        end = Some(i - 1);
                        break;
                    }
                    continue;
                }
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            end = Some(i);
                            break;
                        }
                    } else {
                        // Most of a bundle is string content (base64): jump to the next quote
                        // or backslash.
                        let rest = buf.get(i..).unwrap_or_default();
                        i += memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let take = end.unwrap_or(buf.len());
            let more = sink(buf.get(..take).unwrap_or_default());
            self.consume(take);
            if end.is_some() || !more {
                return Ok(());
            }
        }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

fn describe(b: Option<u8>) -> String {
    match b {
        None => "the end of the file".to_owned(),
        Some(b) if b.is_ascii_graphic() => format!("`{}`", b as char),
        Some(b) => format!("byte {b:#04x}"),
    }
}

#[cfg(test)]
// Tests unwrap what they just built; a panic is a test failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Frames every value of a top-level array, one byte per read to cross buffer edges.
    fn frame_array(text: &str) -> Result<Vec<String>, String> {
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                match (self.0.split_first(), buf.first_mut()) {
                    (Some((b, rest)), Some(slot)) => {
                        *slot = *b;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let mut f = Framer::new(OneByte(text.as_bytes()));
        let err = |e: FrameError| match e {
            FrameError::Io(e) => e.to_string(),
            FrameError::Syntax { offset, reason } => format!("{offset}: {reason}"),
        };
        f.expect(b'[', "").map_err(err)?;
        let mut out = Vec::new();
        let mut values = Vec::new();
        loop {
            f.value(&mut out, 1 << 20).map_err(err)?;
            values.push(String::from_utf8(out.clone()).unwrap());
            if f.one_of(b",]", "").map_err(err)? == b']' {
                break;
            }
        }
        Ok(values)
    }

    #[test]
    fn frames_values_of_every_kind() {
        let values = frame_array(
            r#"[ {"a": "}\"]", "b": [1, {"c": []}]} , "x\\", -1.5e3,true, null,[[]] ]"#,
        )
        .unwrap();
        assert_eq!(
            values,
            [
                r#"{"a": "}\"]", "b": [1, {"c": []}]}"#,
                r#""x\\""#,
                "-1.5e3",
                "true",
                "null",
                "[[]]"
            ]
        );
        for v in &values {
            serde_json::from_str::<serde_json::Value>(v).unwrap();
        }
    }

    #[test]
    fn reports_truncation_and_misplaced_punctuation() {
        assert!(frame_array(r#"[{"a": 1"#)
            .unwrap_err()
            .contains("end of the file inside a value"));
        assert!(frame_array("[1,,2]")
            .unwrap_err()
            .contains("expected a value"));
        assert!(frame_array("[1 2]")
            .unwrap_err()
            .contains("expected `,` or `]`"));
    }

    #[test]
    fn enforces_the_size_limit() {
        let mut f = Framer::new(r#""0123456789""#.as_bytes());
        let mut out = Vec::new();
        assert!(matches!(
            f.value(&mut out, 5),
            Err(FrameError::Syntax { .. })
        ));
    }
}
