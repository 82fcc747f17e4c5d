//! The XDP program (bpf/udp_to_xsk.bpf.c, built by build.rs): loaded with `aya`, configured
//! through its maps, attached in native (driver) mode to one interface. Dropping a
//! [`Program`] detaches it; so does the death of the process, since aya attaches through a
//! BPF link whose file descriptor the kernel closes with it.

use std::net::IpAddr;
use std::os::fd::RawFd;

use aya::Ebpf;
use aya::maps::{Array, HashMap, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};

use super::XdpError;

/// The compiled object, aligned as aya's ELF parser wants it.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/udp_to_xsk.o"));

/// Name of the program's function in the object.
const ENTRY: &str = "udp_to_xsk";

/// The program attached to one interface, with its maps.
pub(crate) struct Program {
    ebpf: Ebpf,
    iface: String,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("iface", &self.iface)
            .finish_non_exhaustive()
    }
}

fn map_err(iface: &str, what: &str, e: impl std::fmt::Display) -> XdpError {
    XdpError::Program {
        iface: iface.to_owned(),
        why: format!("{what}: {e}"),
    }
}

impl Program {
    /// Loads the program for `iface`: UDP to `port` on `addrs` will be redirected.
    pub(crate) fn load(iface: &str, port: u16, addrs: &[IpAddr]) -> Result<Self, XdpError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| {
            let text = crate::error_chain(&e);
            if text.contains("Operation not permitted") || text.contains("EPERM") {
                XdpError::NoPrivilege(text)
            } else {
                map_err(iface, "loading the object", text)
            }
        })?;
        {
            let mut config: Array<_, u32> = Array::try_from(
                ebpf.map_mut("config")
                    .ok_or_else(|| map_err(iface, "map", "config missing"))?,
            )
            .map_err(|e| map_err(iface, "config map", e))?;
            config
                .set(0, u32::from(port), 0)
                .map_err(|e| map_err(iface, "setting the port", e))?;
        }
        {
            let mut v4: HashMap<_, u32, u8> = HashMap::try_from(
                ebpf.map_mut("addrs4")
                    .ok_or_else(|| map_err(iface, "map", "addrs4 missing"))?,
            )
            .map_err(|e| map_err(iface, "addrs4 map", e))?;
            for a in addrs {
                if let IpAddr::V4(a) = a {
                    // The program compares the header's bytes as a native u32.
                    v4.insert(u32::from_ne_bytes(a.octets()), 1, 0)
                        .map_err(|e| map_err(iface, "adding an IPv4 address", e))?;
                }
            }
        }
        {
            let mut v6: HashMap<_, [u8; 16], u8> = HashMap::try_from(
                ebpf.map_mut("addrs6")
                    .ok_or_else(|| map_err(iface, "map", "addrs6 missing"))?,
            )
            .map_err(|e| map_err(iface, "addrs6 map", e))?;
            for a in addrs {
                if let IpAddr::V6(a) = a {
                    v6.insert(a.octets(), 1, 0)
                        .map_err(|e| map_err(iface, "adding an IPv6 address", e))?;
                }
            }
        }
        let prog: &mut Xdp = ebpf
            .program_mut(ENTRY)
            .ok_or_else(|| map_err(iface, "program", "entry missing"))?
            .try_into()
            .map_err(|e| map_err(iface, "program type", e))?;
        prog.load().map_err(|e| {
            let text = crate::error_chain(&e);
            if text.contains("Operation not permitted") {
                XdpError::NoPrivilege(text)
            } else {
                map_err(iface, "verifying the program", text)
            }
        })?;
        Ok(Self {
            ebpf,
            iface: iface.to_owned(),
        })
    }

    /// Puts the AF_XDP socket `fd` in the slot of receive queue `queue`.
    pub(crate) fn register(&mut self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        let iface = self.iface.clone();
        let mut xsks = XskMap::try_from(
            self.ebpf
                .map_mut("xsks")
                .ok_or_else(|| map_err(&iface, "map", "xsks missing"))?,
        )
        .map_err(|e| map_err(&iface, "xsks map", e))?;
        xsks.set(queue, fd, 0)
            .map_err(|e| map_err(&iface, "registering a socket", e))
    }

    /// Attaches the program in native mode: generic (skb) mode would put the work back on
    /// the kernel's slow path, so a driver without native XDP is an error.
    pub(crate) fn attach(&mut self) -> Result<(), XdpError> {
        let iface = self.iface.clone();
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(ENTRY)
            .ok_or_else(|| map_err(&iface, "program", "entry missing"))?
            .try_into()
            .map_err(|e| map_err(&iface, "program type", e))?;
        prog.attach(&iface, XdpMode::Driver).map_err(|e| {
            let text = crate::error_chain(&e);
            if text.contains("not supported") {
                XdpError::GenericOnly(iface.clone())
            } else if text.contains("Operation not permitted") {
                XdpError::NoPrivilege(text)
            } else {
                map_err(&iface, "attaching in native mode", text)
            }
        })?;
        Ok(())
    }

    /// The program's counters summed over CPUs: redirected to a socket, passed to the
    /// kernel, matched with no socket on the queue.
    pub(crate) fn counters(&self) -> [u64; 3] {
        let mut out = [0u64; 3];
        let Some(map) = self.ebpf.map("counters") else {
            return out;
        };
        let Ok(counters) = PerCpuArray::<_, u64>::try_from(map) else {
            return out;
        };
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = counters.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }
}
