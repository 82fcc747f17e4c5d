//! A counting global allocator proves that a steady encrypted video stream through two sessions
//! allocates nothing per packet: 10 000+ datagrams (chunks, parity, feedback) after warm-up,
//! with frame buffers handed back through `Session::recycle`; and the same for a file
//! transfer's chunks, written from a fixed buffer and recycled with `recycle_file_data`.

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use wavry_rift::{
    session::{Event, FrameMeta, Session},
    transfer::Resume,
};

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

struct Rig {
    now: Instant,
    client: Session,
    host: Session,
    ca: SocketAddr,
    ha: SocketAddr,
    buf: Vec<u8>,
    frame: Vec<u8>,
    next_frame: Instant,
    datagrams: u64,
    frames: u64,
    /// File mode: the transfer the host is sending, and how much it wrote.
    file: Option<u64>,
    written: u64,
    file_bytes: u64,
}

impl Rig {
    /// One millisecond of virtual time: frames at 60 fps, zero-latency lossless exchange.
    fn step(&mut self) {
        let interval = Duration::from_micros(16_667);
        if self.file.is_none() && self.now >= self.next_frame {
            let meta = FrameMeta {
                timestamp_us: self.frames * 16_667,
                ..FrameMeta::default()
            };
            self.host
                .send_frame(self.now, &self.frame, meta, interval)
                .unwrap();
            self.frames += 1;
            self.next_frame += interval;
        }
        for _ in 0..4 {
            while let Some(t) = self.host.poll_transmit(self.now, &mut self.buf, 1) {
                self.datagrams += 1;
                self.client
                    .handle_datagram(self.now, self.ha, &mut self.buf[..t.len]);
            }
            while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf, 1) {
                self.datagrams += 1;
                self.host
                    .handle_datagram(self.now, self.ca, &mut self.buf[..t.len]);
            }
        }
        while let Some(e) = self.client.poll_event() {
            match e {
                Event::Frame(f) => self.client.recycle(f),
                Event::FileOffered(o) => self
                    .client
                    .accept_file(self.now, o.file_id, Resume::Start)
                    .unwrap(),
                Event::FileData { data, .. } => {
                    self.file_bytes += data.len() as u64;
                    self.client.recycle_file_data(data);
                }
                _ => {}
            }
        }
        while let Some(e) = self.host.poll_event() {
            if matches!(e, Event::FileAccepted { .. } | Event::FileWritable { .. }) {
                // The file's bytes are `frame` over and over (the test never finishes it).
                let id = self.file.unwrap();
                loop {
                    let at = (self.written % self.frame.len() as u64) as usize;
                    let n = self
                        .host
                        .write_file(self.now, id, &self.frame[at..])
                        .unwrap();
                    self.written += n as u64;
                    if n == 0 {
                        break;
                    }
                }
            }
        }
        self.now += Duration::from_millis(1);
        if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
            self.client.handle_timeout(self.now);
        }
        if self.host.poll_timeout().is_some_and(|t| t <= self.now) {
            self.host.handle_timeout(self.now);
        }
    }
}

fn rig() -> Rig {
    let (ca, ha): (SocketAddr, SocketAddr) =
        ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
    let t0 = Instant::now();
    let (client, host) = support::direct_pair(t0, (2, 1), (ca, ha), |_| {});
    let buf = vec![0u8; 2048];
    Rig {
        now: t0,
        client,
        host,
        ca,
        ha,
        buf,
        frame: vec![0x42; 30_000],
        next_frame: t0 + Duration::from_millis(100),
        datagrams: 0,
        frames: 0,
        file: None,
        written: 0,
        file_bytes: 0,
    }
}

#[test]
fn steady_stream_allocates_nothing_per_packet() {
    let mut rig = rig();
    // Warm-up: connect and stream for 3 s so pools, queues and codecs reach their sizes.
    for _ in 0..3000 {
        rig.step();
    }
    assert!(rig.client.is_connected() && rig.host.is_connected());
    let (d0, f0) = (rig.datagrams, rig.frames);
    let allocs = support::alloc::during(|| {
        while rig.datagrams - d0 < 10_000 {
            rig.step();
        }
    });
    let delivered = rig.client.stats().frames_delivered;
    println!(
        "{} datagrams, {} frames, {allocs} allocations",
        rig.datagrams - d0,
        rig.frames - f0
    );
    assert!(delivered >= rig.frames - 2);
    assert_eq!(allocs, 0, "steady-state packets allocated");
}

#[test]
fn steady_file_transfer_allocates_nothing_per_chunk() {
    let mut rig = rig();
    // No video here: frames' buffers would drain from the NACK history into the pools
    // during the measurement, growing the pools' free lists (a one-off, not per packet).
    rig.file = Some(0);
    for _ in 0..200 {
        rig.step();
    }
    assert!(rig.client.is_connected() && rig.host.is_connected());
    let now = rig.now;
    rig.file = Some(
        rig.host
            .send_file(now, "big.bin", 1 << 30, [7; 32])
            .unwrap(),
    );
    // Warm-up: the transfer reaches its window, pools and queues their sizes.
    for _ in 0..3000 {
        rig.step();
    }
    let (d0, b0) = (rig.datagrams, rig.file_bytes);
    assert!(b0 > 100_000, "the transfer is running ({b0} bytes)");
    let allocs = support::alloc::during(|| {
        while rig.datagrams - d0 < 10_000 {
            rig.step();
        }
    });
    println!(
        "{} datagrams, {} file bytes, {allocs} allocations",
        rig.datagrams - d0,
        rig.file_bytes - b0
    );
    assert!(rig.file_bytes - b0 > 5_000_000);
    assert_eq!(allocs, 0, "steady-state file chunks allocated");
}
