//! qemu's stream framing: Ethernet frames over a byte stream (passt's UNIX domain socket), each
//! preceded by its length as a 4-byte big-endian number.
//!
//! [`StreamDecoder`] turns whatever the stream delivered, in pieces of any size, back into
//! frames, without I/O of its own: the caller reads into [`StreamDecoder::spare`], reports how
//! much arrived with [`StreamDecoder::filled`], then takes the complete frames with
//! [`StreamDecoder::next_frame`]. One read can bring many frames (they are handed out in place,
//! not copied), or a piece of one (kept until the rest arrives). A length of zero or beyond the
//! limit cannot come from a well-behaved peer and leaves the stream without a frame boundary to
//! resynchronise on: it is an error, and the caller should drop the connection.

use std::fmt;
use std::ops::Range;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// The prefix for a frame of `len` bytes.
///
/// # Panics
/// Never for frames a `FrameQueue` holds; a length beyond `u32::MAX` is a caller's bug.
pub fn header(len: usize) -> [u8; HEADER_LEN] {
    u32::try_from(len)
        .expect("frame length fits in 32 bits")
        .to_be_bytes()
}

/// Why the stream cannot be decoded any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// A frame announced with length zero.
    ZeroLength,
    /// A frame announced as longer than the limit.
    TooLong { len: u32, max: usize },
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::ZeroLength => f.write_str("frame of length zero in the stream"),
            FramingError::TooLong { len, max } => {
                write!(
                    f,
                    "frame length {len} in the stream exceeds the limit of {max}"
                )
            }
        }
    }
}

impl std::error::Error for FramingError {}

/// Reassembles frames from a stream, see the module documentation.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// Start of the first byte not yet handed out.
    start: usize,
    /// End of the bytes received.
    end: usize,
    max_frame: usize,
    /// Set once the stream was found broken: nothing more is decoded until [`Self::reset`].
    broken: Option<FramingError>,
}

impl StreamDecoder {
    /// A decoder for frames of at most `max_frame` bytes, reading up to `capacity` bytes at a
    /// time (raised to hold at least one whole frame with its prefix). The buffer is allocated
    /// here, once.
    pub fn new(capacity: usize, max_frame: usize) -> StreamDecoder {
        let capacity = capacity.max(max_frame + HEADER_LEN);
        StreamDecoder {
            buf: vec![0; capacity],
            start: 0,
            end: 0,
            max_frame,
            broken: None,
        }
    }

    /// The largest frame accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Room to read into. Bytes of an incomplete frame are moved to the front first when the
    /// rest of it might not fit behind them, so the room is never too small for a whole frame.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.start < self.max_frame + HEADER_LEN {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written at the start of [`Self::spare`].
    ///
    /// # Panics
    /// If `n` is larger than the room `spare` gave (a caller's bug).
    pub fn filled(&mut self, n: usize) {
        assert!(
            self.end + n <= self.buf.len(),
            "filled beyond the spare room"
        );
        self.end += n;
    }

    /// The next complete frame, `None` when the bytes received so far hold none, or the
    /// framing error that stopped decoding (again on every later call, until a reset).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        Ok(self.next_frame_at()?.map(|at| &self.buf[at]))
    }

    /// As [`Self::next_frame`], where the frame is in [`Self::received`]: several frames can
    /// be held at once that way, until [`Self::spare`] is called again.
    pub fn next_frame_at(&mut self) -> Result<Option<Range<usize>>, FramingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        let avail = &self.buf[self.start..self.end];
        let Some(prefix) = avail.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len == 0 {
            return Err(*self.broken.insert(FramingError::ZeroLength));
        }
        if len as usize > self.max_frame {
            return Err(*self.broken.insert(FramingError::TooLong {
                len,
                max: self.max_frame,
            }));
        }
        let total = HEADER_LEN + len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let frame = self.start + HEADER_LEN..self.start + total;
        self.start += total;
        Ok(Some(frame))
    }

    /// The decoder's buffer, where [`Self::next_frame_at`] says its frames are.
    pub fn received(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes received and not handed out as frames: a frame (or prefix) still incomplete.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Forgets everything received, for a new stream.
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.broken = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in frames {
            v.extend_from_slice(&header(f.len()));
            v.extend_from_slice(f);
        }
        v
    }

    /// Feeds `bytes` in the given piece sizes; collects the frames or the first error.
    fn decode(
        dec: &mut StreamDecoder,
        bytes: &[u8],
        pieces: &[usize],
    ) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut out = Vec::new();
        let mut rest = bytes;
        let mut sizes = pieces.iter().copied().cycle();
        while !rest.is_empty() {
            let want = sizes.next().unwrap_or(rest.len()).max(1);
            let room = dec.spare();
            let n = want.min(rest.len()).min(room.len());
            room[..n].copy_from_slice(&rest[..n]);
            dec.filled(n);
            rest = &rest[n..];
            while let Some(f) = dec.next_frame()? {
                out.push(f.to_vec());
            }
        }
        Ok(out)
    }

    #[test]
    fn header_is_big_endian() {
        assert_eq!(header(0x0102_0304), [1, 2, 3, 4]);
        assert_eq!(header(60), [0, 0, 0, 60]);
    }

    #[test]
    fn many_frames_in_one_read() {
        let mut dec = StreamDecoder::new(4096, 1500);
        let bytes = framed(&[b"one", b"second", b"3"]);
        let frames = decode(&mut dec, &bytes, &[bytes.len()]).unwrap();
        assert_eq!(frames, [b"one".to_vec(), b"second".to_vec(), b"3".to_vec()]);
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn length_split_across_reads() {
        let mut dec = StreamDecoder::new(4096, 1500);
        let bytes = framed(&[b"hello"]);
        // Two bytes of the prefix, then the other two, then the frame.
        let room = dec.spare();
        room[..2].copy_from_slice(&bytes[..2]);
        dec.filled(2);
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(dec.pending(), 2);
        let room = dec.spare();
        room[..2].copy_from_slice(&bytes[2..4]);
        dec.filled(2);
        assert_eq!(dec.next_frame(), Ok(None));
        let room = dec.spare();
        room[..5].copy_from_slice(&bytes[4..]);
        dec.filled(5);
        assert_eq!(dec.next_frame(), Ok(Some(&b"hello"[..])));
        assert_eq!(dec.next_frame(), Ok(None));
    }

    #[test]
    fn frame_split_across_reads() {
        let mut dec = StreamDecoder::new(4096, 1500);
        let payload = vec![0xabu8; 1000];
        let bytes = framed(&[&payload, b"tail"]);
        let frames = decode(&mut dec, &bytes, &[7, 300, 1]).unwrap();
        assert_eq!(frames, [payload, b"tail".to_vec()]);
    }

    #[test]
    fn partial_frame_moves_to_the_front_when_room_runs_short() {
        // Room for two maximum frames: the third must wrap around.
        let max = 100;
        let mut dec = StreamDecoder::new(2 * (max + HEADER_LEN), max);
        let big = vec![7u8; max];
        let bytes = framed(&[&big, &big[..60], &big, &big]);
        let frames = decode(&mut dec, &bytes, &[150]).unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[1].len(), 60);
        assert!(frames.iter().all(|f| f.iter().all(|&b| b == 7)));
    }

    #[test]
    fn zero_length_is_an_error_that_sticks() {
        let mut dec = StreamDecoder::new(4096, 1500);
        let mut bytes = framed(&[b"ok"]);
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        bytes.extend_from_slice(&framed(&[b"after"]));
        assert_eq!(
            decode(&mut dec, &bytes, &[bytes.len()]),
            Err(FramingError::ZeroLength)
        );
        assert_eq!(dec.next_frame(), Err(FramingError::ZeroLength));
        dec.reset();
        assert_eq!(dec.next_frame(), Ok(None));
    }

    #[test]
    fn oversize_length_is_an_error() {
        let mut dec = StreamDecoder::new(4096, 1500);
        let bytes = [0, 0, 0x05, 0xdd, 1, 2, 3];
        let e = decode(&mut dec, &bytes, &[bytes.len()]).unwrap_err();
        assert_eq!(
            e,
            FramingError::TooLong {
                len: 1501,
                max: 1500
            }
        );
        assert_eq!(
            e.to_string(),
            "frame length 1501 in the stream exceeds the limit of 1500"
        );
        // A huge length is refused from its prefix alone, without waiting for the bytes.
        let mut dec = StreamDecoder::new(4096, 1500);
        let e = decode(&mut dec, &[0xff, 0xff, 0xff, 0xff], &[4]).unwrap_err();
        assert!(matches!(e, FramingError::TooLong { len: u32::MAX, .. }));
    }

    #[test]
    fn largest_frame_fits_even_with_a_small_capacity() {
        let mut dec = StreamDecoder::new(16, 65_600);
        let big = vec![1u8; 65_600];
        let bytes = framed(&[b"x", &big, b"y"]);
        let frames = decode(&mut dec, &bytes, &[3, 65_000, 700]).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].len(), 65_600);
    }

    proptest! {
        /// However the stream is cut, the same frames come out, in order.
        #[test]
        fn any_split_gives_the_same_frames(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..20),
            pieces in proptest::collection::vec(1usize..700, 1..10),
            capacity in 0usize..2000,
        ) {
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let bytes = framed(&refs);
            let mut dec = StreamDecoder::new(capacity, 300);
            let got = decode(&mut dec, &bytes, &pieces).unwrap();
            prop_assert_eq!(got, frames);
            prop_assert_eq!(dec.pending(), 0);
        }

        /// Any bytes at all: frames, an error, or a wait for more; never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..3000),
            pieces in proptest::collection::vec(1usize..500, 1..5),
        ) {
            let mut dec = StreamDecoder::new(1024, 1500);
            if let Ok(frames) = decode(&mut dec, &bytes, &pieces) {
                prop_assert!(frames.iter().all(|f| !f.is_empty() && f.len() <= 1500));
            }
        }
    }
}
