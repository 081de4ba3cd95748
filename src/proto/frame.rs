//! Length-prefixed framing (Erlang `{packet, 4}`) over any byte stream, and a
//! `Read`/`Write` adapter for a socket descriptor the caller owns.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;

/// Default largest frame accepted from a peer: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// What went wrong reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream cleanly before the first byte of a frame.
    #[error("connection closed by peer")]
    Closed,
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Writes one frame: a 4-byte big-endian length, then `payload`, in one write
/// where the size allows so that small requests leave in one segment.
pub fn write_frame<W: Write + ?Sized>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame larger than 4 GiB"))?;
    if payload.len() <= 64 * 1024 {
        let mut buf = Vec::with_capacity(4 + payload.len());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(payload);
        w.write_all(&buf)
    } else {
        w.write_all(&len.to_be_bytes())?;
        w.write_all(payload)
    }
}

/// Reads one frame of at most `max` bytes. The buffer grows only as bytes
/// arrive, so a peer that announces a large frame and sends nothing costs no
/// memory.
pub fn read_frame<R: Read + ?Sized>(r: &mut R, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut hdr = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut hdr[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(hdr) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    let n = r.take(len as u64).read_to_end(&mut buf)?;
    if n != len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    Ok(buf)
}

/// A borrowed socket descriptor as a byte stream. Writes use `MSG_NOSIGNAL`
/// so that a closed peer gives `EPIPE` instead of killing the process.
#[derive(Debug, Clone, Copy)]
pub struct FdStream(pub RawFd);

impl Read for FdStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is a valid writable slice of buf.len() bytes.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Write for FdStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is a valid readable slice of buf.len() bytes.
            let n =
                unsafe { libc::send(self.0, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Not a socket (a pipe in a test, say): fall back to write(2).
                Some(libc::ENOTSOCK) => {
                    // SAFETY: as above.
                    let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
                    if n >= 0 {
                        return Ok(n as usize);
                    }
                    return Err(io::Error::last_os_error());
                }
                _ => return Err(e),
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut v = Vec::new();
        write_frame(&mut v, b"abc").unwrap();
        write_frame(&mut v, &[7u8; 70_000]).unwrap();
        assert_eq!(&v[..7], &[0, 0, 0, 3, b'a', b'b', b'c']);
        let mut r = &v[..];
        assert_eq!(read_frame(&mut r, 100_000).unwrap(), b"abc");
        assert_eq!(read_frame(&mut r, 100_000).unwrap().len(), 70_000);
        assert!(matches!(read_frame(&mut r, 10), Err(FrameError::Closed)));
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut r = &[0x04u8, 0x2c, 0x1d, 0x80][..];
        let e = read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap_err();
        assert_eq!(
            e.to_string(),
            "frame of 70000000 bytes exceeds the 16777216-byte limit"
        );
        let mut r = &[0u8, 0, 0, 9, 1, 2][..];
        assert!(matches!(read_frame(&mut r, 100), Err(FrameError::Io(_))));
        let mut r = &[0u8, 0][..];
        assert!(matches!(read_frame(&mut r, 100), Err(FrameError::Io(_))));
    }
}
