//! One prepared `sendmsg` at a stable address: what the batched sends and the forward sends
//! of the io_uring backend point the kernel at.

use std::net::SocketAddr;

use socket2::SockAddr;

use crate::cmsg::{self, ControlBuf, Encoder};
use crate::socket::map_dst;

/// One prepared `sendmsg`: header and everything it points at, at a stable address.
#[repr(C)]
pub(super) struct SendSlot {
    /// Whether this send carries a UDP_SEGMENT (GSO) control message.
    pub(super) gso: bool,
    pub(super) hdr: libc::msghdr,
    iov: libc::iovec,
    name: SockAddr,
    ctrl: ControlBuf,
}

impl SendSlot {
    pub(super) fn new(local: SocketAddr) -> Self {
        Self {
            gso: false,
            // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
            hdr: unsafe { std::mem::zeroed() },
            // SAFETY: all-zero is a valid iovec.
            iov: unsafe { std::mem::zeroed() },
            name: SockAddr::from(local),
            ctrl: ControlBuf::default(),
        }
    }

    /// Points this slot at one datagram (or GSO batch) of `contents` to `dst`, with a TOS
    /// control message when `tos` is given. `contents` must stay valid and unchanged until the
    /// send using this slot has completed.
    pub(super) fn fill(
        &mut self,
        dst: SocketAddr,
        v6: bool,
        contents: &[u8],
        seg: Option<usize>,
        tos: Option<u8>,
    ) {
        self.name = SockAddr::from(map_dst(dst, v6));
        self.iov = libc::iovec {
            iov_base: contents.as_ptr().cast_mut().cast(),
            iov_len: contents.len(),
        };
        self.gso = seg.is_some();
        let mut enc = Encoder::new(&mut self.ctrl);
        if let Some(s) = seg {
            cmsg::push_gso(&mut enc, s as u16);
        }
        if let Some(tos) = tos {
            cmsg::push_tos(&mut enc, !dst.is_ipv4(), tos);
        }
        let ctrl_len = enc.len();
        self.hdr.msg_name = self.name.as_ptr().cast_mut().cast();
        self.hdr.msg_namelen = self.name.len();
        self.hdr.msg_iov = &raw mut self.iov;
        self.hdr.msg_iovlen = 1;
        self.hdr.msg_control = if ctrl_len == 0 {
            std::ptr::null_mut()
        } else {
            self.ctrl.0.as_mut_ptr().cast()
        };
        self.hdr.msg_controllen = ctrl_len as _;
        self.hdr.msg_flags = 0;
    }
}
