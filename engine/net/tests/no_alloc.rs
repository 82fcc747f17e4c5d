//! After warm-up, moving 10 000 datagrams through a backend makes zero heap allocations.
//!
//! A counting global allocator counts per thread (the test harness allocates on other threads);
//! sender and receiver backends run on the test's own thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wavry_net::{Backend, Config, IoMode, NetSocket, RecvMeta, Transmit};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the only
// extra work is bumping a const-initialised thread-local counter, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

const DGRAM: usize = 1200;
const BATCH: usize = 20;
const SLOT: usize = 1 << 16;

/// Sends `packets` datagrams from `a` to `b` in batches (GSO batches of `BATCH` when `gso`)
/// and receives every one of them; panics if one goes missing.
/// How the receiver takes its datagrams.
#[derive(Debug, Clone, Copy)]
enum Rx {
    /// `recv` into caller buffers.
    Copy,
    /// `recv_with`, borrowing the backend's buffers.
    Borrowed,
    /// `forward_with` on to a third socket, which takes them with `recv_with`: singles go
    /// through the copy queue, GSO batches straight from the receive buffer (uring).
    Forward,
}

fn pump(
    a: &mut NetSocket,
    (b, c): (&mut NetSocket, &mut NetSocket),
    packets: usize,
    (gso, rx): (bool, Rx),
    payload: &[u8],
    storage: &mut [u8],
) {
    let dst: SocketAddr = b.local_addr().expect("addr");
    let onward: SocketAddr = c.local_addr().expect("addr");
    let singles: [Transmit<'_>; BATCH] = std::array::from_fn(|i| Transmit {
        dst,
        segment_size: None,
        ecn: None,
        contents: &payload[i * DGRAM..(i + 1) * DGRAM],
    });
    let batch = [Transmit {
        dst,
        segment_size: Some(DGRAM),
        ecn: None,
        contents: payload,
    }];
    let mut sent = 0;
    while sent < packets {
        let tx: &[Transmit<'_>] = if gso { &batch } else { &singles };
        a.send(tx).expect("send");
        sent += BATCH;
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(3);
        while got < BATCH {
            assert!(
                Instant::now() < deadline,
                "lost datagrams: {got} of {BATCH}"
            );
            let timeout = Some(Duration::from_secs(1));
            match rx {
                Rx::Copy => {
                    let mut chunks = storage.chunks_mut(SLOT);
                    let mut iovs: [IoSliceMut<'_>; 4] =
                        std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
                    let mut meta = [RecvMeta::default(); 4];
                    let n = b.recv(&mut iovs, &mut meta, timeout).expect("recv");
                    got += meta[..n].iter().map(RecvMeta::datagrams).sum::<usize>();
                }
                Rx::Borrowed => {
                    b.recv_with(timeout, &mut |m, _| got += m.datagrams())
                        .expect("recv_with");
                }
                Rx::Forward => {
                    let short = Some(Duration::from_millis(1));
                    b.forward_with(short, &mut |m, bytes, fw| {
                        let stride = m.stride.max(1);
                        for (i, d) in bytes.chunks(stride).enumerate() {
                            assert!(fw.push(onward, i * stride..i * stride + d.len()));
                        }
                    })
                    .expect("forward_with");
                    c.recv_with(short, &mut |m, _| got += m.datagrams())
                        .expect("recv_with");
                }
            }
        }
        assert_eq!(got, BATCH);
    }
}

fn zero_allocations(mode: IoMode) {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut a = wavry_net::bind(addr, mode, &Config::default()).expect("backend starts");
    let mut b = wavry_net::bind(addr, mode, &Config::default()).expect("backend starts");
    let mut c = wavry_net::bind(addr, mode, &Config::default()).expect("backend starts");
    let mut storage = vec![0u8; SLOT * 4];
    let payload = vec![0x5au8; DGRAM * BATCH];
    assert!(
        allocs() > 0,
        "the counting allocator sees this thread's allocations"
    );
    for how in [
        (false, Rx::Copy),
        (true, Rx::Copy),
        (false, Rx::Borrowed),
        (true, Rx::Borrowed),
        (false, Rx::Forward),
        (true, Rx::Forward),
    ] {
        pump(&mut a, (&mut b, &mut c), 1_000, how, &payload, &mut storage);
        let before = allocs();
        let packets = if matches!(how.1, Rx::Forward) {
            100_000
        } else {
            10_000
        };
        pump(
            &mut a,
            (&mut b, &mut c),
            packets,
            how,
            &payload,
            &mut storage,
        );
        let n = allocs() - before;
        assert_eq!(
            n, 0,
            "{mode} {how:?}: {n} heap allocations for {packets} datagrams"
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn uring_path_does_not_allocate() {
    zero_allocations(IoMode::Uring);
}

#[test]
fn portable_path_does_not_allocate() {
    zero_allocations(IoMode::Portable);
}
