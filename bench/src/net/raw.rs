//! Raw Linux calls the packet benchmark needs and `wavry-net` does not expose: thread pinning,
//! timer slack, process CPU time, `sendmmsg`/`recvmmsg`, and a blocking GSO `sendmsg` / GRO `recvmsg` pair
//! (the ceiling probe). Each wrapper is safe; the `unsafe` stays in this module.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use socket2::SockAddr;
use wavry_net::cmsg::{self, CONTROL_LEN, ControlBuf, Encoder};

/// Most messages per `sendmmsg` / `recvmmsg` call.
pub(crate) const MMSG_BATCH: usize = 32;
/// Receive slot for `recvmmsg` (one plain datagram each).
pub(crate) const MMSG_SLOT: usize = 2048;

/// Pins the calling thread to one CPU, as two-thread loopback figures swing 2x unpinned.
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    pin_thread(0, cpu)
}

/// Pins every thread of this process whose name starts with `prefix` to `cpu` (threads the
/// bench did not spawn itself, such as the drivers' I/O threads); returns how many it pinned.
pub(crate) fn pin_threads_named(prefix: &str, cpu: usize) -> io::Result<usize> {
    let mut pinned = 0;
    for t in std::fs::read_dir("/proc/self/task")?.filter_map(Result::ok) {
        let Ok(comm) = std::fs::read_to_string(t.path().join("comm")) else {
            continue;
        };
        let Some(tid) = t
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if comm.trim_end().starts_with(prefix) {
            pin_thread(tid, cpu)?;
            pinned += 1;
        }
    }
    Ok(pinned)
}

/// Pins thread `tid` of this process (0: the calling thread) to `cpu`.
fn pin_thread(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    // SAFETY: `cpu_set_t` is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    // SAFETY: CPU_SET writes one bit inside `set` (it bounds-checks `cpu`).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `tid` is 0 or a thread of this process; `set` is a valid cpu_set_t of the size
    // passed.
    let rc = unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &raw const set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the calling thread's timer slack (`PR_SET_TIMERSLACK`) so that its sleeps end within
/// `ns` of their deadline instead of the default 50 us: a paced load generator then sleeps
/// between sends instead of spinning on a core the forwarder under test needs.
pub(crate) fn set_timer_slack(ns: u64) -> io::Result<()> {
    let ns = libc::c_ulong::try_from(ns.max(1)).unwrap_or(libc::c_ulong::MAX);
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// User + system CPU time of the whole process so far (getrusage RUSAGE_SELF).
pub(crate) fn process_cpu_time() -> Duration {
    // SAFETY: `rusage` is plain data; all-zero is valid and getrusage overwrites it.
    let mut ru: libc::rusage = unsafe { zeroed() };
    // SAFETY: RUSAGE_SELF with a valid, writable `rusage`.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Clock ticks per second of /proc's utime/stime.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1)
}

/// Splits a `/proc/…/stat` line into (comm, utime + stime in ticks).
fn stat_ticks(stat: &str) -> Option<(&str, u64)> {
    // "tid (comm) state ppid …": comm may hold spaces, so split at the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = &stat[open + 1..close];
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `fields` starts at field 3.
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((comm, get(11) + get(12)))
}

/// CPU time (user + system) of this process's threads whose name starts with one of
/// `prefixes`, from `/proc/self/task/*/stat` (clock-tick resolution).
pub(crate) fn threads_cpu_time(prefixes: &[&str]) -> Duration {
    let hz = clock_ticks();
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for t in tasks.filter_map(Result::ok) {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        if let Some((comm, n)) = stat_ticks(&stat) {
            if prefixes.iter().any(|p| comm.starts_with(p)) {
                ticks += n;
            }
        }
    }
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// CPU time (user + system, all threads) of process `pid`, from `/proc/<pid>/stat`.
pub(crate) fn pid_cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, ticks) = stat_ticks(&stat).ok_or_else(|| io::Error::other("bad /proc stat"))?;
    Ok(Duration::from_micros(ticks * 1_000_000 / clock_ticks()))
}

/// Sends `n` (≤ [`MMSG_BATCH`]) copies of `payload` to `dst` with one `sendmmsg`; returns how
/// many the kernel took.
pub(crate) fn send_mmsg(
    sock: &UdpSocket,
    dst: &SockAddr,
    payload: &[u8],
    n: usize,
) -> io::Result<usize> {
    send_mmsg_each(sock, dst, std::iter::repeat_n(payload, n.min(MMSG_BATCH)))
}

/// Sends each of `payloads` (the first [`MMSG_BATCH`]) to `dst` as its own datagram with one
/// `sendmmsg`; returns how many the kernel took.
pub(crate) fn send_mmsg_each<'a>(
    sock: &UdpSocket,
    dst: &SockAddr,
    payloads: impl IntoIterator<Item = &'a [u8]>,
) -> io::Result<usize> {
    // SAFETY: all-zero iovecs / mmsghdrs are valid (null pointers, zero lengths).
    let mut iovs: [libc::iovec; MMSG_BATCH] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MMSG_BATCH] = unsafe { zeroed() };
    let mut n = 0;
    for (iov, p) in iovs.iter_mut().zip(payloads) {
        iov.iov_base = p.as_ptr().cast_mut().cast();
        iov.iov_len = p.len();
        n += 1;
    }
    for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()).take(n) {
        h.msg_hdr.msg_name = dst.as_ptr().cast_mut().cast();
        h.msg_hdr.msg_namelen = dst.len();
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `hdrs[..n]` point at `dst`, `iovs` and the payloads, all alive for the call; the
    // kernel only reads them (sendmmsg writes msg_len into `hdrs`, which we own).
    let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Receives up to [`MMSG_BATCH`] datagrams with one `recvmmsg(MSG_WAITFORONE)` into `slots`;
/// returns (datagrams, bytes). A blocking socket's SO_RCVTIMEO bounds the wait.
pub(crate) fn recv_mmsg(sock: &UdpSocket, slots: &mut [u8]) -> io::Result<(usize, usize)> {
    // SAFETY: all-zero iovecs / mmsghdrs are valid.
    let mut iovs: [libc::iovec; MMSG_BATCH] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MMSG_BATCH] = unsafe { zeroed() };
    let mut n = 0;
    for (i, chunk) in slots.chunks_mut(MMSG_SLOT).take(MMSG_BATCH).enumerate() {
        iovs[i].iov_base = chunk.as_mut_ptr().cast();
        iovs[i].iov_len = chunk.len();
        n += 1;
    }
    for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()).take(n) {
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: each header points at one iovec describing a disjoint chunk of `slots`, all
    // borrowed mutably for the duration of the call.
    let rc = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as u32,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let k = rc as usize;
    Ok((k, hdrs[..k].iter().map(|h| h.msg_len as usize).sum()))
}

/// One blocking `sendmsg` of `payload` cut into `segment`-byte datagrams by the kernel (GSO).
pub(crate) fn send_gso(
    sock: &UdpSocket,
    dst: &SockAddr,
    payload: &[u8],
    segment: u16,
) -> io::Result<()> {
    let mut ctrl = ControlBuf::default();
    let mut enc = Encoder::new(&mut ctrl);
    cmsg::push_gso(&mut enc, segment);
    let ctrl_len = enc.len();
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: all-zero msghdr is valid.
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    hdr.msg_name = dst.as_ptr().cast_mut().cast();
    hdr.msg_namelen = dst.len();
    hdr.msg_iov = &raw mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = ctrl.0.as_mut_ptr().cast();
    hdr.msg_controllen = ctrl_len as _;
    // SAFETY: every pointer in `hdr` refers to a local or borrowed buffer alive for the call.
    let rc = unsafe { libc::sendmsg(sock.as_raw_fd(), &raw const hdr, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One blocking `recvmsg` into `buf` on a UDP_GRO socket; returns (bytes, datagrams).
pub(crate) fn recv_gro(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, usize)> {
    let (len, stride) = recv_gro_stride(sock, buf)?;
    Ok((len, len.div_ceil(stride)))
}

/// One blocking `recvmsg` into `buf` on a UDP_GRO socket; returns (bytes, segment size): the
/// datagrams are `buf[..bytes]` cut every `segment size` bytes (the last may be shorter).
pub(crate) fn recv_gro_stride(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, usize)> {
    recv_gro_stamped(sock, buf).map(|(len, stride, _)| (len, stride))
}

/// [`recv_gro_stride`] plus the kernel's receive time of the datagram (batch) in nanoseconds
/// since the Unix epoch, when `SO_TIMESTAMPNS` is on (`enable_rx_timestamps`): when it reached
/// the socket, before this thread woke up to read it.
pub(crate) fn recv_gro_stamped(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, usize, Option<u64>)> {
    let mut ctrl = ControlBuf::default();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero msghdr is valid.
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    hdr.msg_iov = &raw mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = ctrl.0.as_mut_ptr().cast();
    hdr.msg_controllen = CONTROL_LEN as _;
    // SAFETY: `hdr` points at `iov` (describing `buf`) and `ctrl`, both alive and writable.
    let rc = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut hdr, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = rc as usize;
    let used = (hdr.msg_controllen as usize).min(CONTROL_LEN);
    let control = &ctrl.0[..used];
    let stride = cmsg::decode(control).gro_size.unwrap_or(len).max(1);
    let stamp = cmsg::iter(control).find_map(|(level, ty, data)| {
        (level == libc::SOL_SOCKET && ty == libc::SCM_TIMESTAMPNS && data.len() >= 16).then(|| {
            let sec = i64::from_ne_bytes(data[..8].try_into().unwrap_or_default());
            let nsec = i64::from_ne_bytes(data[8..16].try_into().unwrap_or_default());
            u64::try_from(sec)
                .unwrap_or(0)
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::try_from(nsec).unwrap_or(0))
        })
    });
    Ok((len, stride, stamp))
}

/// Turns on the kernel's software receive timestamps (`SO_TIMESTAMPNS`) for `sock`.
pub(crate) fn enable_rx_timestamps(sock: &UdpSocket) -> io::Result<()> {
    cmsg::set_int(sock.as_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}
