//! AF_XDP kernel bypass for forwarders (Linux): an XDP program steers UDP to one port on the
//! forwarder's addresses into AF_XDP sockets and passes everything else to the kernel; frames
//! are parsed and rewritten in place ([`frame`]) and sent from the memory they arrived in
//! ([`XdpPorts`]).
//!
//! The program is built from bpf/udp_to_xsk.bpf.c by build.rs (clang, libbpf headers) and
//! loaded with `aya`, a pure-Rust loader that needs no C library at run time; the sockets and
//! rings come from `xdpilone`, a small crate with no dependencies beyond `libc`. [`frame`]
//! builds everywhere (the fuzz target uses it); the rest is Linux only.

pub mod frame;
#[cfg(all(target_os = "linux", not(wavry_no_bpf)))]
mod port;
#[cfg(all(target_os = "linux", not(wavry_no_bpf)))]
mod program;
#[cfg(not(all(target_os = "linux", not(wavry_no_bpf))))]
mod stub;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[cfg(all(target_os = "linux", not(wavry_no_bpf)))]
pub use port::XdpPorts;
#[cfg(not(all(target_os = "linux", not(wavry_no_bpf))))]
pub use stub::XdpPorts;

/// What to do with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Return the frame to the free list; nothing is sent.
    Drop,
    /// Send the (rewritten) frame's first `len` bytes on interface `iface` (an index into
    /// `XdpPorts::interfaces`).
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
    /// Its hardware address (the source MAC of what it sends).
    pub mac: [u8; 6],
    /// Its receive queues (one AF_XDP socket each).
    pub queues: u32,
    /// Whether its sockets run in zero-copy mode (else copy mode).
    pub zero_copy: bool,
}

/// Counters of the ports since they opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Frames read from RX rings.
    pub rx_frames: u64,
    /// Frames put on TX rings.
    pub tx_frames: u64,
    /// Frames to send that found a full TX ring (dropped).
    pub tx_ring_full: u64,
    /// Frames the kernel dropped for want of room (RX ring full or fill ring empty).
    pub kernel_rx_dropped: u64,
    /// Frames the program redirected to a socket.
    pub program_redirected: u64,
    /// Frames the program passed to the kernel (ARP, ICMP, other ports and addresses).
    pub program_passed: u64,
}

/// Why AF_XDP could not start; the forwarder says it in one line and, unless AF_XDP was
/// asked for explicitly, runs on io_uring instead.
#[derive(Debug, Clone, thiserror::Error)]
pub enum XdpError {
    /// The build had no clang or libbpf headers, or this is not Linux.
    #[error(
        "this build has no XDP program (it needs Linux, and Debian's clang and libbpf-dev when building)"
    )]
    NotBuilt,
    /// Loading programs or binding AF_XDP sockets needs root (CAP_NET_ADMIN, CAP_BPF).
    #[error("no privilege for XDP (run as root, or with CAP_NET_ADMIN and CAP_BPF): {0}")]
    NoPrivilege(String),
    /// No interface was named.
    #[error("no interface given for XDP (--xdp-iface)")]
    NoInterface,
    /// The interface is missing or unusable.
    #[error("interface {iface}: {why}")]
    Interface {
        /// Interface name.
        iface: String,
        /// What went wrong.
        why: String,
    },
    /// The driver runs XDP only in generic (skb) mode, which gains nothing over the kernel path.
    #[error("interface {0}: the driver has no native XDP (generic mode only)")]
    GenericOnly(String),
    /// Loading, configuring or attaching the program failed.
    #[error("XDP program on {iface}: {why}")]
    Program {
        /// Interface name.
        iface: String,
        /// What went wrong.
        why: String,
    },
    /// An AF_XDP socket or ring could not be made or bound.
    #[error("AF_XDP socket on {iface}: {why}")]
    Socket {
        /// Interface name.
        iface: String,
        /// What went wrong.
        why: String,
    },
    /// The UMEM could not be mapped.
    #[error("AF_XDP memory: {0}")]
    Memory(String),
}

/// Copy or zero-copy sockets (`--xdp-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Zero-copy where every interface's driver allows it, else copy.
    #[default]
    Auto,
    /// Copy mode (the kernel copies frames between the driver and the UMEM).
    Copy,
    /// Zero-copy or an error.
    ZeroCopy,
}

impl FromStr for XdpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "copy" => Ok(Self::Copy),
            "zero-copy" | "zerocopy" | "zc" => Ok(Self::ZeroCopy),
            other => Err(format!(
                "unknown XDP mode {other:?} (auto, copy, zero-copy)"
            )),
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Copy => "copy",
            Self::ZeroCopy => "zero-copy",
        })
    }
}

/// Sizes of the AF_XDP ports.
#[derive(Debug, Clone)]
pub struct XdpOptions {
    /// Socket mode.
    pub mode: XdpMode,
    /// Entries per ring (fill, completion, RX, TX); rounded to a power of two.
    pub ring_size: u32,
    /// UMEM frames per receive queue (2 KiB each); at least twice the ring size.
    pub frames_per_queue: u32,
    /// Most frames read per queue per [`XdpPorts::process`] call.
    pub batch: u32,
}

impl Default for XdpOptions {
    fn default() -> Self {
        Self {
            mode: XdpMode::Auto,
            ring_size: 2048,
            frames_per_queue: 4096,
            batch: 256,
        }
    }
}

/// The IP addresses configured on `iface` (for a forwarder bound to an unspecified address).
pub fn interface_addrs(iface: &str) -> Result<Vec<IpAddr>, XdpError> {
    #[cfg(target_os = "linux")]
    {
        linux_addrs(iface)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = iface;
        Err(XdpError::NotBuilt)
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn linux_addrs(iface: &str) -> Result<Vec<IpAddr>, XdpError> {
    use std::ffi::CStr;
    use std::net::{Ipv4Addr, Ipv6Addr};
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(XdpError::Interface {
            iface: iface.to_owned(),
            why: format!("getifaddrs: {}", std::io::Error::last_os_error()),
        });
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() != iface.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family says its type.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: family AF_INET means a sockaddr_in; read unaligned, since the list only
            // promises sockaddr's alignment.
            let sin = unsafe { ifa.ifa_addr.cast::<libc::sockaddr_in>().read_unaligned() };
            out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))));
        } else if family == libc::AF_INET6 {
            // SAFETY: family AF_INET6 means a sockaddr_in6 (read unaligned, as above).
            let sin6 = unsafe { ifa.ifa_addr.cast::<libc::sockaddr_in6>().read_unaligned() };
            out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}
