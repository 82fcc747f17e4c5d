//! Stand-ins where the XDP program was not built (not Linux, or no clang / libbpf headers at
//! build time): the same API, and [`XdpPorts::open`] says why it cannot run.

use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use super::{Action, Interface, XdpCounters, XdpError, XdpOptions};

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
