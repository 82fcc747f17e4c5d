//! Stand-ins where the XDP program was not built (not Linux, or no clang / libbpf headers at
//! build time): the same API, and [`XdpPorts::open`] says why it cannot run.

use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use super::{XdpError, XdpOptions};

/// What to do with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Return the frame to the free list.
    Drop,
    /// Send the frame's first `len` bytes on interface `iface`.
    Transmit {
        /// Interface index.
        iface: usize,
        /// Frame length to send.
        len: usize,
    },
}

/// One interface the ports run on.
#[derive(Debug, Clone)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its hardware address.
    pub mac: [u8; 6],
    /// Its receive queues.
    pub queues: u32,
    /// Whether its sockets run in zero-copy mode.
    pub zero_copy: bool,
}

/// Counters of the ports since they opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Frames read from RX rings.
    pub rx_frames: u64,
    /// Frames put on TX rings.
    pub tx_frames: u64,
    /// Frames to send that found a full TX ring.
    pub tx_ring_full: u64,
    /// Frames the kernel dropped for want of room.
    pub kernel_rx_dropped: u64,
    /// Frames the program redirected to a socket.
    pub program_redirected: u64,
    /// Frames the program passed to the kernel.
    pub program_passed: u64,
}

/// AF_XDP ports: never constructed in this build.
#[derive(Debug)]
pub struct XdpPorts {
    never: Infallible,
}

impl XdpPorts {
    /// Always fails with [`XdpError::NotBuilt`].
    pub fn open(
        _ifaces: &[String],
        _port: u16,
        _addrs: &[IpAddr],
        _opts: &XdpOptions,
    ) -> Result<Self, XdpError> {
        Err(XdpError::NotBuilt)
    }

    /// The interfaces.
    pub fn interfaces(&self) -> &[Interface] {
        match self.never {}
    }

    /// The socket mode.
    pub fn mode(&self) -> &'static str {
        match self.never {}
    }

    /// Counters.
    pub fn counters(&self) -> XdpCounters {
        match self.never {}
    }

    /// Waits for frames.
    pub fn wait(&mut self, _timeout: Duration, _extra: Option<i32>) -> io::Result<bool> {
        match self.never {}
    }

    /// Processes frames.
    pub fn process(&mut self, _f: impl FnMut(usize, &mut [u8]) -> Action) -> usize {
        match self.never {}
    }
}
