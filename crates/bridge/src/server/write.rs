//! An answer's bytes on their way out: gathered while the body has frames ready, then written
//! with one vectored write (as many as the socket takes), so a stream event costs one system
//! call and a JSON answer's head and body go out together. Nothing is copied: the head and the
//! chunk size lines are the connection's own bytes, the body's frames are sent from their own
//! buffers.

use std::io::{self, IoSlice};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::net::TcpStream;

/// Body frames (or bytes) gathered into one vectored write, at most.
const BATCH_FRAMES: usize = 16;
const BATCH_BYTES: usize = 256 << 10;
/// Slices of one write: the head, three per chunk, the last chunk.
const MAX_SLICES: usize = 2 + 3 * BATCH_FRAMES;

/// An answer's bytes gathered for one vectored write: the connection's own (head, chunk size
/// lines) and the body's, which are never copied.
#[derive(Default)]
pub(super) struct Out {
    /// The head and chunk size lines.
    pub(super) own: Vec<u8>,
    /// What the next write sends, in order.
    pub(super) pieces: Vec<Piece>,
    frames: usize,
    bytes: usize,
    /// Bytes of the gathered pieces already written.
    written: usize,
}

/// One slice of a write.
pub(super) enum Piece {
    /// A range of [`Out::own`].
    Own(usize, usize),
    /// A body frame.
    Data(Bytes),
    /// Fixed framing bytes.
    Static(&'static [u8]),
}

impl Out {
    pub(super) fn data(&mut self, data: Bytes) {
        self.frames += 1;
        self.bytes += data.len();
        self.pieces.push(Piece::Data(data));
    }

    pub(super) fn chunk(&mut self, data: Bytes) {
        let mut line = [0u8; 18];
        let n = chunk_size_line(data.len(), &mut line);
        let start = self.own.len();
        self.own.extend_from_slice(&line[..n]);
        self.pieces.push(Piece::Own(start, start + n));
        self.data(data);
        self.pieces.push(Piece::Static(b"\r\n"));
    }

    pub(super) fn full(&self) -> bool {
        self.frames >= BATCH_FRAMES || self.bytes >= BATCH_BYTES
    }

    /// Writes everything gathered, in as few writes as the socket takes.
    pub(super) async fn flush(&mut self, io: &TcpStream) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(io, cx)).await
    }

    /// One step of [`Out::flush`]. The slices are built on the stack on each call, so the
    /// future of a connection waiting for its client to read holds none of them (an array
    /// of them kept across the wait was 800 bytes of every open stream).
    fn poll_flush(&mut self, io: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut n = 0;
            for piece in &self.pieces {
                slices[n] = IoSlice::new(match piece {
                    Piece::Own(start, end) => &self.own[*start..*end],
                    Piece::Data(data) => data,
                    Piece::Static(bytes) => bytes,
                });
                n += 1;
            }
            let mut rest = &mut slices[..n];
            IoSlice::advance_slices(&mut rest, self.written);
            if rest.is_empty() {
                break;
            }
            match io.try_write_vectored(rest) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(written) => self.written += written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(io.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.own.clear();
        self.pieces.clear();
        self.frames = 0;
        self.bytes = 0;
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// Writes a chunk's size line (hexadecimal, CRLF) into `out` and returns its length.
fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.max(1).leading_zeros()).div_ceil(4) as usize;
    for (i, slot) in out[..digits].iter_mut().enumerate() {
        *slot = HEX[(len >> (4 * (digits - 1 - i))) & 0xf];
    }
    out[digits..digits + 2].copy_from_slice(b"\r\n");
    digits + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        let line = |n| {
            let mut out = [0u8; 18];
            let len = chunk_size_line(n, &mut out);
            String::from_utf8(out[..len].to_vec()).unwrap()
        };
        assert_eq!(line(0), "0\r\n");
        assert_eq!(line(1), "1\r\n");
        assert_eq!(line(255), "ff\r\n");
        assert_eq!(line(4096), "1000\r\n");
        assert_eq!(line(usize::MAX), "ffffffffffffffff\r\n");
    }
}
