//! Duplicated, replayed, reordered, corrupted and truncated datagrams are never delivered twice
//! or wrongly, and each kind of refusal is counted.

mod support;

use std::{cell::RefCell, rc::Rc, time::Duration};

use support::{Pair, link};
use wavry_rift::session::{Event, FrameMeta};

#[test]
fn impaired_path_delivers_each_frame_once_and_intact() {
    let l = link(Duration::from_millis(20), 0.0, 0.0)
        .with_jitter(Duration::from_millis(4))
        .with_reorder(0.05)
        .with_duplicate(0.05)
        .with_corrupt(0.02);
    let mut p = Pair::new(99, l.clone(), l);
    // Also: truncate 1 % of datagrams and keep copies to replay later.
    let captured: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let cap = captured.clone();
    let mut n = 0u64;
    p.filter = Some(Box::new(move |_to_host, d| {
        n += 1;
        if n % 97 == 0 && d.len() > 40 {
            d.truncate(d.len() / 2);
        }
        if n % 50 == 0 {
            cap.borrow_mut().push(d.clone());
        }
        true
    }));
    assert!(p.connect(Duration::from_secs(10)));
    let interval = Duration::from_micros(16_667);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut next = p.now;
    let end = p.now + Duration::from_secs(5);
    p.run_until(end, |p| {
        while p.now >= next && sent.len() < 240 {
            let i = sent.len();
            let data: Vec<u8> = (0..20_000 + i * 13).map(|k| (k ^ i) as u8).collect();
            p.host
                .as_mut()
                .unwrap()
                .send_frame(
                    p.now,
                    &data,
                    FrameMeta {
                        timestamp_us: i as u64 * 16_667,
                        ..FrameMeta::default()
                    },
                    interval,
                )
                .unwrap();
            sent.push(data);
            next += interval;
        }
    });
    // Replay everything captured, to both sides.
    let replays = captured.borrow().clone();
    let (ca, ha) = (p.client_addr, p.host_addr);
    for d in &replays {
        let mut a = d.clone();
        p.client.handle_datagram(p.now, ha, &mut a);
        let mut b = d.clone();
        p.host.as_mut().unwrap().handle_datagram(p.now, ca, &mut b);
    }
    p.run_for(Duration::from_millis(200));

    let mut seen = std::collections::HashSet::new();
    for (_, e) in &p.client_events {
        if let Event::Frame(f) = e {
            assert!(
                seen.insert(f.frame_id),
                "frame {} delivered twice",
                f.frame_id
            );
            assert_eq!(
                f.data, sent[f.frame_id as usize],
                "frame {} corrupted",
                f.frame_id
            );
        }
    }
    let c = p.client.stats();
    let h = p.host.as_ref().unwrap().stats();
    println!("client {c:?}\nhost {h:?}\nframes {}", seen.len());
    assert!(seen.len() >= 230, "only {} of 240 frames", seen.len());
    assert!(c.replayed > 0, "duplicates and replays must be counted");
    assert!(
        c.rejected > 0,
        "corrupted and truncated datagrams must be counted"
    );
    assert!(h.replayed > 0);
}
