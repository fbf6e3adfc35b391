//! The client-to-server half of an HTTP/2 connection (RFC 9113 §3.4, §4.1), cut into frames so
//! that request header blocks (HEADERS and its CONTINUATIONs) can be rewritten; every other frame
//! passes through byte for byte, as it arrives, without being buffered.
//!
//! Pure and synchronous: bytes in, bytes out, in any chunking. When something does not parse as
//! expected, everything held so far and everything after it passes through unchanged, and h2
//! judges the connection as it would have without this.

use super::hpack::{self, Names};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Every HTTP/2 peer accepts frames this large: SETTINGS_MAX_FRAME_SIZE cannot be set lower.
const MIN_MAX_FRAME: usize = 16_384;
/// The most of one header block (its frames as sent) held while waiting for its end. Larger
/// blocks pass through unchanged; h2's own limit on header lists is far below it anyway.
pub(super) const MAX_BLOCK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of the client preface seen.
    Preface(usize),
    /// Reading a frame header (into `pending`, from `frame_start`).
    FrameHeader,
    /// Reading the payload of a HEADERS or CONTINUATION frame of this length.
    HeaderPayload(usize),
    /// Passing this many more payload bytes of another frame straight through.
    Skip(usize),
    /// Not rewriting any more: everything passes through.
    Passthrough,
}

pub(super) struct Rewriter {
    state: State,
    /// The raw frames of the header block being read: sent as they are if the block cannot be
    /// rewritten or needs no change.
    pending: Vec<u8>,
    /// Where the frame being read starts in `pending`.
    frame_start: usize,
    /// The header block's fragments, without padding and priority fields.
    block: Vec<u8>,
    /// From the block's HEADERS frame.
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    names: Names,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            state: State::Preface(0),
            pending: Vec::new(),
            frame_start: 0,
            block: Vec::new(),
            stream: 0,
            flags: 0,
            priority: None,
            names: Names::default(),
        }
    }
}

impl Rewriter {
    /// How many bytes from here on would pass through unchanged, if that is known without
    /// seeing them (the reader may then read them straight into its caller's buffer).
    pub(super) fn passthrough_budget(&self) -> Option<usize> {
        match self.state {
            State::Passthrough => Some(usize::MAX),
            State::Skip(n) => Some(n),
            _ => None,
        }
    }

    /// `n` bytes (at most `passthrough_budget`) went through without being fed.
    pub(super) fn passed(&mut self, n: usize) {
        if let State::Skip(rem) = self.state {
            let rem = rem.saturating_sub(n);
            self.state = if rem == 0 {
                State::FrameHeader
            } else {
                State::Skip(rem)
            };
        }
    }

    /// Whether rewriting stopped for this connection.
    #[cfg(test)]
    pub(super) fn gave_up(&self) -> bool {
        self.state == State::Passthrough
    }

    /// Take the next bytes from the client; what is ready to go to the server is appended to
    /// `out`.
    pub(super) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match self.state {
                State::Passthrough => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Preface(seen) => {
                    let n = (PREFACE.len() - seen).min(input.len());
                    if input[..n] != PREFACE[seen..seen + n] {
                        // Not HTTP/2 with prior knowledge: not ours to touch.
                        self.give_up(out, "no HTTP/2 client preface");
                        continue;
                    }
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = match seen + n {
                        24 => State::FrameHeader,
                        s => State::Preface(s),
                    };
                }
                State::Skip(rem) => {
                    let n = rem.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.passed(n);
                }
                State::FrameHeader => {
                    let want = self.frame_start + FRAME_HEADER - self.pending.len();
                    let n = want.min(input.len());
                    self.pending.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if n == want {
                        self.on_frame_header(out);
                    }
                }
                State::HeaderPayload(len) => {
                    let want = self.frame_start + FRAME_HEADER + len - self.pending.len();
                    let n = want.min(input.len());
                    self.pending.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if n == want {
                        self.on_header_frame(out);
                    }
                }
            }
        }
    }

    /// The client closed its side: whatever is held goes on as it is.
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.pending);
        self.block.clear();
        self.state = State::Passthrough;
    }

    fn give_up(&mut self, out: &mut Vec<u8>, why: &str) {
        tracing::debug!(
            reason = why,
            "unix socket: leaving this connection's :authority as sent"
        );
        self.finish(out);
    }

    fn on_frame_header(&mut self, out: &mut Vec<u8>) {
        let Some(h) = header_at(&self.pending, self.frame_start) else {
            return self.give_up(out, "frame header lost");
        };
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, stream) = (h[3], stream_id(h));
        let in_block = self.frame_start > 0;
        if in_block {
            // Nothing may come between a block's frames (§6.10).
            if kind != CONTINUATION || stream != self.stream {
                return self.give_up(out, "header block interrupted");
            }
            if self.pending.len() + len > MAX_BLOCK {
                return self.give_up(out, "header block over 64 KiB");
            }
            self.state = State::HeaderPayload(len);
            return;
        }
        match kind {
            HEADERS if len > MAX_BLOCK => self.give_up(out, "header block over 64 KiB"),
            HEADERS => self.state = State::HeaderPayload(len),
            // Only servers push; a client's block here would change the tables unseen.
            PUSH_PROMISE | CONTINUATION => self.give_up(out, "unexpected header block frame"),
            _ => {
                out.append(&mut self.pending);
                self.state = match len {
                    0 => State::FrameHeader,
                    n => State::Skip(n),
                };
            }
        }
    }

    /// A whole HEADERS or CONTINUATION frame is in `pending` from `frame_start`.
    fn on_header_frame(&mut self, out: &mut Vec<u8>) {
        let Some(h) = header_at(&self.pending, self.frame_start) else {
            return self.give_up(out, "frame header lost");
        };
        let (kind, flags, stream) = (h[3], h[4], stream_id(h));
        let mut payload = &self.pending[self.frame_start + FRAME_HEADER..];
        if kind == HEADERS {
            let mut pad = 0;
            if flags & PADDED != 0 {
                match payload.split_first() {
                    Some((&p, rest)) => (pad, payload) = (usize::from(p), rest),
                    None => return self.give_up(out, "HEADERS too short for its padding"),
                }
            }
            if flags & PRIORITY != 0 {
                match payload.split_first_chunk::<5>() {
                    Some((p, rest)) => (self.priority, payload) = (Some(*p), rest),
                    None => return self.give_up(out, "HEADERS too short for its priority"),
                }
            }
            match payload.len().checked_sub(pad) {
                Some(n) => payload = &payload[..n],
                None => return self.give_up(out, "HEADERS padding longer than the frame"),
            }
            self.stream = stream;
            self.flags = flags;
        }
        self.block.extend_from_slice(payload);
        if flags & END_HEADERS == 0 {
            self.frame_start = self.pending.len();
            self.state = State::FrameHeader;
            return;
        }
        match hpack::rewrite_block(&mut self.names, &self.block) {
            Ok(None) => out.append(&mut self.pending),
            Ok(Some(block)) => {
                self.write_block(out, &block);
                self.pending.clear();
            }
            Err(doubt) => return self.give_up(out, &doubt.to_string()),
        }
        self.block.clear();
        self.priority = None;
        self.frame_start = 0;
        self.state = State::FrameHeader;
    }

    /// The rewritten block as a HEADERS frame and as many CONTINUATIONs as it needs, none larger
    /// than any peer accepts. Padding is dropped: it means nothing to the server.
    fn write_block(&self, out: &mut Vec<u8>, block: &[u8]) {
        let prio: &[u8] = match &self.priority {
            Some(p) => p,
            None => &[],
        };
        let first_len = block.len().min(MIN_MAX_FRAME - prio.len());
        let (first, mut rest) = block.split_at(first_len);
        let mut flags = self.flags & (END_STREAM | PRIORITY);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        frame_header(out, prio.len() + first.len(), HEADERS, flags, self.stream);
        out.extend_from_slice(prio);
        out.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MIN_MAX_FRAME));
            rest = tail;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            frame_header(out, chunk.len(), CONTINUATION, flags, self.stream);
            out.extend_from_slice(chunk);
        }
    }
}

fn header_at(buf: &[u8], at: usize) -> Option<&[u8; FRAME_HEADER]> {
    buf.get(at..)?.first_chunk::<FRAME_HEADER>()
}

fn stream_id(h: &[u8; FRAME_HEADER]) -> u32 {
    u32::from_be_bytes([h[5] & 0x7f, h[6], h[7], h[8]])
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = (len as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}
