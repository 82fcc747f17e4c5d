//! GRO and TX checksum offload through the ethtool ioctl (`SIOCETHTOOL`), so that no
//! `ethtool` binary is needed.
//!
//! On veth, GRO is what gives a receive queue its NAPI instance (without an XDP program), and
//! only an interface with NAPI instances can run them in threads.

use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

/// `ETHTOOL_GGRO` from `<linux/ethtool.h>`: read the GRO flag.
const ETHTOOL_GGRO: u32 = 0x2b;
/// `ETHTOOL_SGRO` from `<linux/ethtool.h>`: set the GRO flag.
const ETHTOOL_SGRO: u32 = 0x2c;

/// `ETHTOOL_GTXCSUM`: read the TX checksum offload flag.
const ETHTOOL_GTXCSUM: u32 = 0x16;
/// `ETHTOOL_STXCSUM`: set the TX checksum offload flag.
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `ETHTOOL_GTSO`: read the TCP segmentation offload flags.
const ETHTOOL_GTSO: u32 = 0x1e;
/// `ETHTOOL_STSO`: set the TCP segmentation offload flags.
const ETHTOOL_STSO: u32 = 0x1f;

/// `struct ethtool_value` from `<linux/ethtool.h>`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Sets GRO on `ifname` in the calling thread's network namespace and checks that it took.
pub(crate) fn set_gro(ifname: &str, on: bool) -> io::Result<()> {
    set_flag(ifname, ETHTOOL_GGRO, ETHTOOL_SGRO, on, "GRO")
}

/// Sets TX checksum offload on `ifname` (calling thread's namespace) and checks that it took.
///
/// Off on a veth makes the kernel write complete UDP checksums into the frames it sends, as
/// frames that arrive from a wire carry: with offload on, a veth hands the peer a frame whose
/// checksum field holds only the pseudo-header sum, which an AF_XDP forwarder that updates
/// checksums incrementally would pass on unfinished.
pub(crate) fn set_tx_checksum(ifname: &str, on: bool) -> io::Result<()> {
    set_flag(
        ifname,
        ETHTOOL_GTXCSUM,
        ETHTOOL_STXCSUM,
        on,
        "TX checksum offload",
    )
}

/// Sets TCP segmentation offload on `ifname` (calling thread's namespace).
///
/// A veth with TSO on hands its peer only socket-built skbs through the peer's NAPI (GRO)
/// path; everything else (forwarded frames, AF_XDP copy-mode transmits) goes to the backlog of
/// the sending CPU, which would charge the receiver's stack to the sender. Off, every frame
/// takes the peer's NAPI, whose threads can be pinned.
pub(crate) fn set_tso(ifname: &str, on: bool) -> io::Result<()> {
    set_flag(
        ifname,
        ETHTOOL_GTSO,
        ETHTOOL_STSO,
        on,
        "TCP segmentation offload",
    )
}

fn set_flag(ifname: &str, get_cmd: u32, set_cmd: u32, on: bool, what: &str) -> io::Result<()> {
    // Any socket of the namespace will do: the ioctl looks the interface up in the socket's.
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    let mut set = EthtoolValue {
        cmd: set_cmd,
        data: u32::from(on),
    };
    ethtool_ioctl(&socket, ifname, &mut set)?;
    let mut get = EthtoolValue {
        cmd: get_cmd,
        data: 0,
    };
    ethtool_ioctl(&socket, ifname, &mut get)?;
    if (get.data != 0) == on {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the kernel left {what} {} on {ifname}",
            if on { "off" } else { "on" }
        )))
    }
}

/// One `SIOCETHTOOL` ioctl on `socket` for interface `ifname` with `value` as its argument.
#[allow(unsafe_code, clippy::unnecessary_cast)]
fn ethtool_ioctl(socket: &UdpSocket, ifname: &str, value: &mut EthtoolValue) -> io::Result<()> {
    if ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {ifname:?}"),
        ));
    }
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, &src) in name.iter_mut().zip(ifname.as_bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    let mut request = libc::ifreq {
        ifr_name: name,
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_data: std::ptr::from_mut(value).cast(),
        },
    };
    // SAFETY: `request` is a valid, NUL-terminated `struct ifreq` whose `ifr_data` points to a
    // live `struct ethtool_value` (`EthtoolValue` is `repr(C)` with the same layout); both
    // outlive the call, and SIOCETHTOOL with ETHTOOL_[GS]GRO / [GS]TXCSUM / [GS]TSO reads and writes only those 8
    // bytes. The fd is an open socket borrowed for the duration of the call.
    let rc = unsafe {
        libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCETHTOOL as libc::Ioctl,
            &raw mut request,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
