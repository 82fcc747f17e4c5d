//! AF_XDP sockets on `xdpilone`: one UMEM (anonymous memory shared with the kernel) for every
//! receive queue of every interface given, one socket per queue with its own fill, completion,
//! RX and TX rings, and the XDP program that steers the forwarder's UDP port to them.
//!
//! A received frame is lent to the caller in place ([`XdpPorts::process`]); the caller either
//! drops it or rewrites it and names the interface to send it on, and the same UMEM frame goes
//! onto that interface's TX ring: no copy in user space, in zero-copy mode none at all. Frames
//! come back through the completion rings to one free list that refills the fill rings.
//! Nothing here allocates after [`XdpPorts::open`].

use std::ffi::CString;
use std::io;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::time::Duration;

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig};

use super::program::Program;
use super::{Action, Interface, XdpCounters, XdpError, XdpMode, XdpOptions};

/// Bytes per UMEM frame: one page-aligned half page, enough for a 1500-byte MTU frame.
const FRAME_SIZE: u32 = 2048;

/// Anonymous, page-aligned memory for the UMEM; unmapped on drop (after the sockets).
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        Ok(Self { ptr, len })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`; nothing refers to it any more (the UMEM
        // and sockets that shared it with the kernel are fields dropped before this one).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// One receive queue's socket and rings.
struct Queue {
    iface: usize,
    device: DeviceQueue,
    rx: RingRx,
    tx: RingTx,
    user: xdpilone::User,
    /// Frames on this queue's TX ring not yet completed.
    in_flight: u32,
}

/// AF_XDP ports on a set of interfaces, driven by one thread.
pub struct XdpPorts {
    // Drop order matters: detach the programs, close the sockets, then the UMEM, then the
    // memory the kernel wrote into.
    programs: Vec<Program>,
    queues: Vec<Queue>,
    // Held for the sockets: the kernel refers to it until they close.
    _umem: Umem,
    area: Area,
    interfaces: Vec<Interface>,
    /// First queue of each interface: where its transmits go.
    tx_queue: Vec<usize>,
    /// Frames owned by user space and not in use (UMEM offsets).
    free: Vec<u64>,
    /// Transmits gathered during one `process` call, per interface.
    pending: Vec<Vec<XdpDesc>>,
    batch: u32,
    counters: XdpCounters,
}

impl std::fmt::Debug for XdpPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPorts")
            .field("interfaces", &self.interfaces)
            .field("free", &self.free.len())
            .finish_non_exhaustive()
    }
}

// SAFETY: the raw pointers inside (UMEM area, ring mappings) are owned by this value and used
// only through `&mut self`; moving the whole set to another thread is sound.
unsafe impl Send for XdpPorts {}

/// `ETHTOOL_GCHANNELS` from `<linux/ethtool.h>`.
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// `struct ethtool_channels` from `<linux/ethtool.h>`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

fn if_err(iface: &str, why: String) -> XdpError {
    XdpError::Interface {
        iface: iface.to_owned(),
        why,
    }
}

/// A `struct ifreq` naming `iface`.
fn ifreq(iface: &str) -> Result<libc::ifreq, XdpError> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ || iface.contains('\0') {
        return Err(if_err(iface, "not an interface name".into()));
    }
    // SAFETY: `ifreq` is plain old data for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(iface.as_bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    Ok(req)
}

/// One ioctl on a throwaway UDP socket of the calling thread's network namespace (which is
/// where the interface is looked up; /sys shows the namespace that mounted it instead).
fn ioctl(iface: &str, request: libc::Ioctl, req: &mut libc::ifreq) -> Result<(), XdpError> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")
        .map_err(|e| if_err(iface, format!("a socket for ioctl: {e}")))?;
    // SAFETY: `req` is a valid, NUL-terminated ifreq that outlives the call; the kernel reads
    // and writes only within it (and, for SIOCETHTOOL, within the struct its data points to,
    // which the caller keeps alive); the fd is open for the duration of the call.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            request,
            std::ptr::from_mut(req),
        )
    };
    if rc < 0 {
        return Err(if_err(
            iface,
            format!("ioctl: {}", io::Error::last_os_error()),
        ));
    }
    Ok(())
}

/// The interface's Ethernet address (SIOCGIFHWADDR).
fn hw_addr(iface: &str) -> Result<[u8; 6], XdpError> {
    let mut req = ifreq(iface)?;
    ioctl(iface, libc::SIOCGIFHWADDR as libc::Ioctl, &mut req)?;
    // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d.to_ne_bytes()[0];
    }
    Ok(mac)
}

/// Receive queues: the driver's RX plus combined channels (ETHTOOL_GCHANNELS), or 1 when it
/// does not say.
fn rx_queues(iface: &str) -> u32 {
    let Ok(mut req) = ifreq(iface) else { return 1 };
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    req.ifr_ifru.ifru_data = std::ptr::from_mut(&mut ch).cast();
    if ioctl(iface, libc::SIOCETHTOOL as libc::Ioctl, &mut req).is_err() {
        return 1;
    }
    (ch.rx_count + ch.combined_count).clamp(1, 256)
}

fn sock_err(iface: &str, what: &str, e: &xdpilone::Errno) -> XdpError {
    XdpError::Socket {
        iface: iface.to_owned(),
        why: format!("{what}: {e}"),
    }
}

impl XdpPorts {
    /// Opens AF_XDP sockets on every receive queue of `ifaces` and attaches the program that
    /// redirects UDP to `port` on `addrs` to them; everything else still reaches the kernel.
    pub fn open(
        ifaces: &[String],
        port: u16,
        addrs: &[IpAddr],
        opts: &XdpOptions,
    ) -> Result<Self, XdpError> {
        match opts.mode {
            // Every socket sharing a UMEM inherits the first one's mode, so the whole set is
            // opened in one mode: zero-copy first, and copy when any socket refuses it.
            XdpMode::Auto => match Self::open_with(ifaces, port, addrs, opts, true) {
                Err(XdpError::Socket { .. }) => Self::open_with(ifaces, port, addrs, opts, false),
                r => r,
            },
            XdpMode::ZeroCopy => Self::open_with(ifaces, port, addrs, opts, true),
            XdpMode::Copy => Self::open_with(ifaces, port, addrs, opts, false),
        }
    }

    fn open_with(
        ifaces: &[String],
        port: u16,
        addrs: &[IpAddr],
        opts: &XdpOptions,
        zero_copy: bool,
    ) -> Result<Self, XdpError> {
        if ifaces.is_empty() {
            return Err(XdpError::NoInterface);
        }
        let mut interfaces = Vec::with_capacity(ifaces.len());
        for name in ifaces {
            let mac = hw_addr(name)?;
            interfaces.push(Interface {
                name: name.clone(),
                mac,
                queues: rx_queues(name),
                zero_copy,
            });
        }
        let total_queues: u32 = interfaces.iter().map(|i| i.queues).sum();
        let ring = opts.ring_size.next_power_of_two().clamp(64, 16_384);
        let per_queue = opts.frames_per_queue.max(ring * 2);
        let frames = per_queue.saturating_mul(total_queues);
        let area = Area::new(frames as usize * FRAME_SIZE as usize)
            .map_err(|e| XdpError::Memory(e.to_string()))?;
        let config = UmemConfig {
            fill_size: ring,
            complete_size: ring,
            frame_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is a fresh page-aligned mapping of `frames * FRAME_SIZE` bytes that
        // outlives the UMEM (field order in `XdpPorts`).
        let umem = unsafe { Umem::new(config, area.as_slice_ptr()) }
            .map_err(|e| sock_err(&ifaces[0], "registering the UMEM", &e))?;
        let mut programs = Vec::with_capacity(interfaces.len());
        let mut queues = Vec::new();
        let mut tx_queue = Vec::with_capacity(interfaces.len());
        for (i, iface) in interfaces.iter().enumerate() {
            let mut program = Program::load(&iface.name, port, addrs)?;
            tx_queue.push(queues.len());
            for q in 0..iface.queues {
                let first = queues.is_empty();
                let queue = open_queue(&umem, i, &iface.name, q, ring, first, zero_copy)?;
                program.register(q, queue.rx.as_raw_fd())?;
                queues.push(queue);
            }
            program.attach()?;
            programs.push(program);
        }
        let mut ports = Self {
            programs,
            queues,
            _umem: umem,
            area,
            pending: interfaces
                .iter()
                .map(|_| Vec::with_capacity(opts.batch as usize * total_queues as usize))
                .collect(),
            interfaces,
            tx_queue,
            free: (0..u64::from(frames))
                .map(|f| f * u64::from(FRAME_SIZE))
                .collect(),
            batch: opts.batch.max(1),
            counters: XdpCounters::default(),
        };
        ports.refill();
        Ok(ports)
    }

    /// The interfaces, in the order given to [`XdpPorts::open`].
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// "zero-copy" when every socket runs zero-copy, else "copy".
    pub fn mode(&self) -> &'static str {
        if self.interfaces.iter().all(|i| i.zero_copy) {
            "zero-copy"
        } else {
            "copy"
        }
    }

    /// Counters since the ports opened (the program's and the kernel's included).
    pub fn counters(&self) -> XdpCounters {
        let mut c = self.counters;
        for p in &self.programs {
            let [redirected, passed, unmatched] = p.counters();
            c.program_redirected += redirected;
            c.program_passed += passed + unmatched;
        }
        for q in &self.queues {
            if let Ok(s) = q.user.statistics_v2() {
                c.kernel_rx_dropped += s.rx_dropped + s.rx_ring_full + s.rx_fill_ring_empty_descs;
            }
        }
        c
    }

    /// Waits until a frame is ready on any socket, `extra` (another descriptor the caller
    /// serves, such as the kernel socket of the same port) is readable, or `timeout` passes;
    /// returns whether `extra` is readable.
    pub fn wait(&mut self, timeout: Duration, extra: Option<RawFd>) -> io::Result<bool> {
        let mut fds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; 65];
        let mut n = 0;
        for q in self.queues.iter().take(64) {
            fds[n] = libc::pollfd {
                fd: q.rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            n += 1;
        }
        if let Some(fd) = extra {
            fds[n] = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            n += 1;
        }
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds[..n]` are initialised pollfd entries owned by this frame.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            return Ok(false);
        }
        Ok(extra.is_some() && fds[n - 1].revents & libc::POLLIN != 0)
    }

    /// Reads up to one batch per queue, lends each frame to `f` (interface index, frame bytes)
    /// and carries out its [`Action`]; returns how many frames were read.
    pub fn process(&mut self, mut f: impl FnMut(usize, &mut [u8]) -> Action) -> usize {
        self.reclaim();
        let base = self.area.ptr;
        let area_len = self.area.len as u64;
        let mut read = 0usize;
        for qi in 0..self.queues.len() {
            let iface = self.queues[qi].iface;
            let mut rx = self.queues[qi].rx.receive(self.batch);
            while let Some(desc) = rx.read() {
                read += 1;
                let chunk = desc.addr & !u64::from(FRAME_SIZE - 1);
                let end = desc.addr.saturating_add(u64::from(desc.len));
                if end > area_len || end > chunk + u64::from(FRAME_SIZE) {
                    self.free.push(chunk);
                    continue;
                }
                // SAFETY: the kernel handed this frame to user space through the RX ring; it
                // lies inside the mapping (checked above), within one chunk, and no other
                // reference to it exists until it is given back (fill or TX ring).
                let data = unsafe {
                    std::slice::from_raw_parts_mut(
                        base.as_ptr().add(desc.addr as usize),
                        desc.len as usize,
                    )
                };
                match f(iface, data) {
                    Action::Transmit { iface: to, len }
                        if to < self.pending.len()
                            && len <= (chunk + u64::from(FRAME_SIZE) - desc.addr) as usize =>
                    {
                        self.pending[to].push(XdpDesc {
                            addr: desc.addr,
                            len: len as u32,
                            options: 0,
                        });
                    }
                    _ => self.free.push(chunk),
                }
            }
            rx.release();
        }
        self.counters.rx_frames += read as u64;
        self.transmit();
        self.refill();
        read
    }

    /// Puts the gathered transmits on each interface's TX ring and kicks the kernel.
    fn transmit(&mut self) {
        for to in 0..self.pending.len() {
            if self.pending[to].is_empty() {
                continue;
            }
            let q = &mut self.queues[self.tx_queue[to]];
            let want = u32::try_from(self.pending[to].len()).unwrap_or(u32::MAX);
            let mut w = q.tx.transmit(want);
            let room = w.capacity() as usize;
            let mut sent = 0u32;
            for d in self.pending[to].iter().take(room) {
                if w.insert_once(*d) {
                    sent += 1;
                }
            }
            w.commit();
            drop(w);
            q.in_flight += sent;
            self.counters.tx_frames += u64::from(sent);
            for d in self.pending[to].drain(..).skip(sent as usize) {
                self.counters.tx_ring_full += 1;
                self.free.push(d.addr & !u64::from(FRAME_SIZE - 1));
            }
            self.pending[to].clear();
            // Copy mode sends inside this syscall, a bounded number per call: kick until the
            // ring is drained (or the kernel stops taking).
            for _ in 0..64 {
                if q.tx.pending() == 0 {
                    break;
                }
                if q.tx.needs_wakeup() || !self.interfaces[to].zero_copy {
                    q.tx.wake();
                } else {
                    break;
                }
            }
        }
    }

    /// Moves completed transmits back to the free list.
    fn reclaim(&mut self) {
        for q in &mut self.queues {
            if q.in_flight == 0 {
                continue;
            }
            let mut c = q.device.complete(q.in_flight);
            while let Some(addr) = c.read() {
                self.free.push(addr & !u64::from(FRAME_SIZE - 1));
                q.in_flight = q.in_flight.saturating_sub(1);
            }
            c.release();
        }
    }

    /// Tops the fill rings up from the free list.
    fn refill(&mut self) {
        for q in &mut self.queues {
            if self.free.is_empty() {
                break;
            }
            let want = u32::try_from(self.free.len()).unwrap_or(u32::MAX);
            let mut w = q.device.fill(want);
            let room = w.capacity();
            for _ in 0..room {
                let Some(addr) = self.free.pop() else { break };
                if !w.insert_once(addr) {
                    self.free.push(addr);
                    break;
                }
            }
            w.commit();
            drop(w);
            if q.device.needs_wakeup() {
                q.device.wake();
            }
        }
    }
}

/// Opens one queue's socket. The first socket owns the UMEM and sets the mode; the others
/// share the UMEM (each with its own fill and completion rings) and inherit it.
fn open_queue(
    umem: &Umem,
    iface_index: usize,
    name: &str,
    queue: u32,
    ring: u32,
    first: bool,
    zero_copy: bool,
) -> Result<Queue, XdpError> {
    let cname = CString::new(name).map_err(|_| XdpError::Interface {
        iface: name.to_owned(),
        why: "the name holds a NUL byte".into(),
    })?;
    let mut info = IfInfo::invalid();
    info.from_name(&cname)
        .map_err(|e| sock_err(name, "looking up the interface", &e))?;
    info.set_queue(queue);
    let sock = if first {
        Socket::with_shared(&info, umem)
    } else {
        Socket::new(&info)
    }
    .map_err(|e| sock_err(name, "socket", &e))?;
    let device = umem
        .fq_cq(&sock)
        .map_err(|e| sock_err(name, "fill and completion rings", &e))?;
    // The kernel refuses mode flags on sockets that share a UMEM: they take the first's.
    let bind_flags = match (first, zero_copy) {
        (false, _) => 0,
        (true, true) => SocketConfig::XDP_BIND_ZEROCOPY | SocketConfig::XDP_BIND_NEED_WAKEUP,
        (true, false) => SocketConfig::XDP_BIND_COPY | SocketConfig::XDP_BIND_NEED_WAKEUP,
    };
    let user = umem
        .rx_tx(
            &sock,
            &SocketConfig {
                rx_size: NonZeroU32::new(ring),
                tx_size: NonZeroU32::new(ring),
                bind_flags,
            },
        )
        .map_err(|e| sock_err(name, "RX and TX rings", &e))?;
    let rx = user
        .map_rx()
        .map_err(|e| sock_err(name, "mapping the RX ring", &e))?;
    let tx = user
        .map_tx()
        .map_err(|e| sock_err(name, "mapping the TX ring", &e))?;
    umem.bind(&user).map_err(|e| {
        if e.get_raw() == libc::EPERM {
            XdpError::NoPrivilege(format!("binding an AF_XDP socket on {name}: {e}"))
        } else {
            let how = if zero_copy { "zero-copy" } else { "copy" };
            sock_err(name, &format!("binding queue {queue} in {how} mode"), &e)
        }
    })?;
    Ok(Queue {
        iface: iface_index,
        device,
        rx,
        tx,
        user,
        in_flight: 0,
    })
}
