//! A Server-Sent Events parser for the RLP gateway's stream, fed with the chunks the HTTP body
//! arrives in (which split lines and events anywhere).
//!
//! It follows the WHATWG event-stream rules the gateway relies on: lines end in `\n` or
//! `\r\n`; `data:` lines of one event are joined with `\n`; `event:` names the event
//! (`message` when absent); a line starting with `:` is a comment (a keep-alive); a blank
//! line dispatches the event, unless it carried no data; one space after the colon is
//! dropped; `id:`, `retry:` and unknown fields are ignored.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, `message` by default. The gateway sends `heartbeat` and
    /// `closing` besides its unnamed batches.
    pub(crate) name: String,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: Vec<u8>,
}

/// An event grew past the limit: not an event stream, or a broken one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream event exceeds {max} bytes")]
pub(crate) struct SseTooLarge {
    pub(crate) max: usize,
}

/// Parser state carried from one chunk to the next.
#[derive(Debug)]
pub(crate) struct SseParser {
    /// The incomplete line at the end of the last chunk.
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    name: Option<String>,
    max: usize,
}

impl SseParser {
    /// `max` bounds the bytes one event may hold (its pending line and data together).
    pub(crate) fn new(max: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            name: None,
            max,
        }
    }

    /// Parses `chunk`, appending every event it completes to `out`.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<SseEvent>,
    ) -> Result<(), SseTooLarge> {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(end);
            rest = &tail[1..];
            if self.line.is_empty() {
                self.line_done(head, out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.line_done(&line, out);
                line.clear();
                self.line = line;
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() + self.data.len() > self.max {
            return Err(SseTooLarge { max: self.max });
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // A comment: the gateway's (or a proxy's) keep-alive.
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.name = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let name = self.name.take();
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        out.push(SseEvent {
            name: name.unwrap_or_else(|| "message".to_owned()),
            data: std::mem::take(&mut self.data),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out).expect("small events");
        }
        out
    }

    fn message(data: &str) -> SseEvent {
        SseEvent {
            name: "message".into(),
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn data_lines_are_joined_and_a_blank_line_dispatches() {
        let events = parse(&[b"data: {\"batch\":\ndata:[]}\n\ndata: second\n\n"]);
        assert_eq!(events, vec![message("{\"batch\":\n[]}"), message("second")]);
    }

    #[test]
    fn a_chunk_may_end_anywhere_even_mid_line_or_between_cr_and_lf() {
        let whole: &[u8] =
            b"event: heartbeat\r\ndata: 1710234017\r\n\r\ndata: {\"batch\":[]}\r\n\r\n";
        let expected = parse(&[whole]);
        assert_eq!(expected.len(), 2);
        assert_eq!(expected[0].name, "heartbeat");
        assert_eq!(expected[1], message("{\"batch\":[]}"));
        for split in 0..whole.len() {
            let (a, b) = whole.split_at(split);
            assert_eq!(parse(&[a, b]), expected, "split at {split}");
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(parse(&bytes), expected);
    }

    #[test]
    fn comments_and_events_without_data_dispatch_nothing() {
        let events = parse(&[b": keep-alive\n\n:\n\nevent: closing\n\nid: 7\nretry: 10\n\n"]);
        assert_eq!(events, Vec::new());
    }

    #[test]
    fn only_one_space_after_the_colon_is_dropped_and_a_bare_data_line_is_empty() {
        let events = parse(&[b"data:  two\ndata\ndata:x\n\n"]);
        assert_eq!(events, vec![message(" two\n\nx")]);
    }

    #[test]
    fn the_event_name_applies_to_one_event_only() {
        let events = parse(&[b"event: closing\ndata: bye\n\ndata: next\n\n"]);
        assert_eq!(events[0].name, "closing");
        assert_eq!(events[1], message("next"));
    }

    #[test]
    fn an_event_past_the_limit_is_an_error() {
        let mut parser = SseParser::new(16);
        let mut out = Vec::new();
        assert_eq!(parser.feed(b"data: 0123456789", &mut out), Ok(()));
        assert_eq!(
            parser.feed(b"abcdef", &mut out),
            Err(SseTooLarge { max: 16 })
        );
    }
}
