//! Handing a received (possibly GRO-coalesced) batch to caller buffers, shared by both backends.
//!
//! Backends receive into buffers of their own that always fit a whole UDP payload, so they know
//! exactly how long each datagram was. Copying out, a batch that does not fit one caller buffer is
//! split at datagram boundaries across buffers (and calls); only a single datagram longer than
//! its buffer is cut, and then it is flagged as truncated.

use std::net::{IpAddr, SocketAddr};

use crate::{Ecn, RecvMeta};

/// A received batch, or what is left of it, inside some backend-owned byte buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Staged {
    pub(crate) src: SocketAddr,
    pub(crate) dst_ip: Option<IpAddr>,
    pub(crate) ecn: Option<Ecn>,
    /// Datagram size inside the batch (GRO segment size, or the whole length).
    pub(crate) stride: usize,
    /// Next undelivered byte.
    pub(crate) off: usize,
    /// One past the last byte.
    pub(crate) end: usize,
}

impl Staged {
    /// True once every byte has been handed out.
    pub(crate) fn is_done(&self) -> bool {
        self.off >= self.end
    }

    /// Describes everything left as one batch and marks it delivered (for borrowed receive).
    pub(crate) fn take_all(&mut self) -> RecvMeta {
        let len = self.end - self.off;
        let stride = if self.stride == 0 { len } else { self.stride };
        self.off = self.end;
        RecvMeta {
            src: self.src,
            dst_ip: self.dst_ip,
            len,
            stride: stride.min(len),
            ecn: self.ecn,
            truncated: false,
        }
    }

    /// Copies the next whole datagrams that fit into `out` and describes them.
    ///
    /// `data` is the backing buffer that `off..end` index into.
    pub(crate) fn deliver(&mut self, data: &[u8], out: &mut [u8]) -> RecvMeta {
        let rem = &data[self.off..self.end];
        let stride = if self.stride == 0 {
            rem.len()
        } else {
            self.stride
        };
        let (written, consumed, truncated) = if rem.len() <= out.len() {
            (rem.len(), rem.len(), false)
        } else if stride <= out.len() {
            let w = out.len() / stride * stride;
            (w, w, false)
        } else {
            (out.len(), stride.min(rem.len()), true)
        };
        out[..written].copy_from_slice(&rem[..written]);
        self.off += consumed;
        RecvMeta {
            src: self.src,
            dst_ip: self.dst_ip,
            len: written,
            stride: if truncated {
                written
            } else {
                stride.min(written)
            },
            ecn: self.ecn,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(len: usize, stride: usize) -> Staged {
        Staged {
            src: SocketAddr::from(([127, 0, 0, 1], 1)),
            dst_ip: None,
            ecn: None,
            stride,
            off: 0,
            end: len,
        }
    }

    #[test]
    fn batch_that_fits_is_delivered_whole() {
        let data: Vec<u8> = (0..=255).cycle().take(3000).collect();
        let mut s = staged(3000, 1200);
        let mut out = [0u8; 4000];
        let m = s.deliver(&data, &mut out);
        assert_eq!((m.len, m.stride, m.truncated), (3000, 1200, false));
        assert_eq!(&out[..3000], &data[..]);
        assert!(s.is_done());
    }

    #[test]
    fn batch_is_split_at_datagram_boundaries() {
        let data: Vec<u8> = (0..=255).cycle().take(3000).collect();
        let mut s = staged(3000, 1200);
        let mut out = [0u8; 2500];
        let m = s.deliver(&data, &mut out);
        assert_eq!((m.len, m.stride, m.truncated), (2400, 1200, false));
        let m = s.deliver(&data, &mut out);
        assert_eq!((m.len, m.stride, m.truncated), (600, 600, false));
        assert_eq!(&out[..600], &data[2400..]);
        assert!(s.is_done());
    }

    #[test]
    fn oversized_datagram_is_flagged_truncated() {
        let data = vec![7u8; 2400];
        let mut s = staged(2400, 1200);
        let mut out = [0u8; 100];
        let m = s.deliver(&data, &mut out);
        assert_eq!((m.len, m.truncated), (100, true));
        assert_eq!(s.off, 1200, "only the cut datagram is consumed");
    }
}
