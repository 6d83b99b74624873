//! Server-sent events (the WHATWG HTML standard, §9.2 "Server-sent
//! events"): an incremental parser of `text/event-stream` bodies and the
//! encoding of one event.

use bytes::{Buf, BytesMut};

/// One event of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// Its `id:` field, when given.
    pub id: Option<String>,
    /// Its `event:` type, when given (the default type is `message`).
    pub event: Option<String>,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

/// Reads events out of a stream's chunks as they arrive.
#[derive(Debug, Default)]
pub struct Parser {
    buffer: BytesMut,
}

impl Parser {
    /// Appends `chunk` to what was read.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// Bytes read but not yet part of a complete event.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete event, if one has arrived (events without data,
    /// such as comments and keep-alives, are skipped).
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            let (end, skip) = blank_line(&self.buffer)?;
            let block = self.buffer.split_to(end);
            self.buffer.advance(skip);
            let text = String::from_utf8_lossy(&block);
            let mut event = Event::default();
            let mut data: Vec<&str> = Vec::new();
            for line in text.split('\n') {
                let line = line.strip_suffix('\r').unwrap_or(line);
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "data" => data.push(value),
                    "id" => event.id = Some(value.to_string()),
                    "event" => event.event = Some(value.to_string()),
                    _ => {}
                }
            }
            if !data.is_empty() {
                event.data = data.join("\n");
                return Some(event);
            }
        }
    }
}

/// Where the first blank line of `buffer` starts, and how many bytes it
/// takes (`\n\n`, `\r\n\r\n` or a mix).
fn blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buffer.len() {
        if buffer[i] == b'\n' {
            let rest = &buffer[i + 1..];
            if rest.starts_with(b"\n") {
                return Some((i, 2));
            }
            if rest.starts_with(b"\r\n") {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

/// `data` (one JSON message, no newline) as an event of type `message`,
/// with `id` when given.
pub fn encode(id: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 32);
    out.push_str("event: message\n");
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_as_their_bytes_arrive() {
        let mut parser = Parser::default();
        parser.push(b": keep-alive\n\nevent: message\r\nid: 7\r\ndata: {\"a\":\r\n");
        assert_eq!(parser.next_event(), None);
        parser.push(b"data: 1}\r\n\r\ndata:x\n\n");
        assert_eq!(
            parser.next_event(),
            Some(Event {
                id: Some("7".into()),
                event: Some("message".into()),
                data: "{\"a\":\n1}".into(),
            })
        );
        assert_eq!(parser.next_event().map(|e| e.data), Some("x".into()));
        assert_eq!(parser.next_event(), None);
        assert_eq!(parser.pending(), 0);
    }

    #[test]
    fn an_encoded_event_parses_back() {
        let mut parser = Parser::default();
        parser.push(encode(Some("0.3"), "{\"id\":1}").as_bytes());
        let event = parser.next_event().unwrap();
        assert_eq!(event.id.as_deref(), Some("0.3"));
        assert_eq!(event.data, "{\"id\":1}");
    }
}
