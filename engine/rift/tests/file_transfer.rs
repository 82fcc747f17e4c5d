//! In-band file transfer and clipboard (spec RIFT §11) between two sessions on the netsim:
//! integrity under loss, the bitrate share beside live video, resume, pause, refusal,
//! cancellation, checksum failures and clipboard sync.

mod support;

use std::time::{Duration, Instant};

use support::{Pair, link, stream::stream_with};
use wavry_rift::{
    session::{Event, Session, SessionConfig, SessionError},
    transfer::{FileError, FileHasher, FileOffer, Resume, TransferConfig, sha256},
};

fn file(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// What the receiving application does with an offer.
#[derive(Clone)]
enum Answer {
    Accept,
    /// Resume after `n` chunks the receiver already holds (their bytes are `data[..]`).
    Resume(u32),
    Refuse(&'static str),
}

/// A tiny application on both ends: the host sends `data`, the client stores what arrives.
struct App {
    data: Vec<u8>,
    file_id: u64,
    /// Next offset the host writes from.
    written: usize,
    host_seen: usize,
    client_seen: usize,
    received: Vec<u8>,
    offers: Vec<FileOffer>,
    answer: Answer,
    host_done: Option<Result<(), FileError>>,
    client_done: Option<Result<(), FileError>>,
    done_at: Option<Instant>,
    accepted_offset: Option<u64>,
}

impl App {
    fn start(p: &mut Pair, data: Vec<u8>, claimed_sha: Option<[u8; 32]>, answer: Answer) -> Self {
        let sha = claimed_sha.unwrap_or_else(|| sha256(&data));
        let now = p.now;
        let file_id = host(p)
            .send_file(now, "../../report.bin", data.len() as u64, sha)
            .unwrap();
        Self {
            data,
            file_id,
            written: 0,
            host_seen: p.host_events.len(),
            client_seen: p.client_events.len(),
            received: Vec::new(),
            offers: Vec::new(),
            answer,
            host_done: None,
            client_done: None,
            done_at: None,
            accepted_offset: None,
        }
    }

    fn write(&mut self, p: &mut Pair) {
        let now = p.now;
        let id = self.file_id;
        while self.written < self.data.len() {
            let n = host(p)
                .write_file(now, id, &self.data[self.written..])
                .unwrap();
            if n == 0 {
                break;
            }
            self.written += n;
        }
    }

    /// Reacts to the events both sides reported since the last call.
    fn pump(&mut self, p: &mut Pair) {
        while self.client_seen < p.client_events.len() {
            let e = p.client_events[self.client_seen].1.clone();
            self.client_seen += 1;
            let now = p.now;
            match e {
                Event::FileOffered(o) => {
                    self.offers.push(o.clone());
                    match self.answer.clone() {
                        Answer::Accept => p.client.accept_file(now, o.file_id, Resume::Start),
                        Answer::Resume(n) => {
                            let held = (o.offset_of(n) as usize).min(self.data.len());
                            self.received = self.data[..held].to_vec();
                            let mut hasher = FileHasher::new();
                            hasher.update(&self.received);
                            p.client.accept_file(now, o.file_id, Resume::at(n, hasher))
                        }
                        Answer::Refuse(why) => p.client.refuse_file(now, o.file_id, why),
                    }
                    .unwrap();
                }
                Event::FileData {
                    file_id,
                    offset,
                    data,
                } => {
                    assert_eq!(file_id, self.file_id);
                    assert_eq!(offset as usize, self.received.len(), "data out of order");
                    self.received.extend_from_slice(&data);
                    p.client.recycle_file_data(data);
                }
                Event::FileDone {
                    file_id, result, ..
                } if file_id == self.file_id => {
                    self.client_done = Some(result);
                }
                _ => {}
            }
        }
        while self.host_seen < p.host_events.len() {
            let e = p.host_events[self.host_seen].1.clone();
            self.host_seen += 1;
            match e {
                Event::FileAccepted { file_id, offset } if file_id == self.file_id => {
                    self.accepted_offset = Some(offset);
                    self.written = offset as usize;
                    self.write(p);
                }
                Event::FileWritable { file_id } if file_id == self.file_id => self.write(p),
                Event::FileDone {
                    file_id, result, ..
                } if file_id == self.file_id => {
                    self.host_done = Some(result);
                    self.done_at = Some(p.now);
                }
                _ => {}
            }
        }
    }

    fn finished(&self) -> bool {
        self.host_done.is_some() && self.client_done.is_some()
    }
}

fn host(p: &mut Pair) -> &mut Session {
    p.host.as_mut().unwrap()
}

/// Runs the pair in 10 ms steps, the application reacting, until `done(app)` or `limit`.
fn run_while(p: &mut Pair, app: &mut App, limit: Duration, done: impl Fn(&App) -> bool) {
    let until = p.now + limit;
    while !done(app) && p.now < until {
        let step = p.now + Duration::from_millis(10);
        p.run_until(step, |p| app.pump(p));
        app.pump(p);
    }
}

/// Runs until both sides reported the transfer's end.
fn run(p: &mut Pair, app: &mut App, limit: Duration) {
    run_while(p, app, limit, App::finished);
}

fn pair(seed: u64, loss: f64, cfg: impl Fn(bool, &mut SessionConfig)) -> Pair {
    let l = link(Duration::from_millis(20), loss, 0.0);
    let mut p = Pair::with(seed, l.clone(), l, cfg);
    assert!(p.connect(Duration::from_secs(10)));
    p
}

#[test]
fn a_file_arrives_intact_through_five_percent_loss_within_its_share() {
    let mut p = pair(11, 0.05, |_, _| {});
    let data = file(600_000);
    let start = p.now;
    let mut app = App::start(&mut p, data.clone(), None, Answer::Accept);
    run(&mut p, &mut app, Duration::from_secs(60));
    assert_eq!(app.client_done, Some(Ok(())));
    assert_eq!(app.host_done, Some(Ok(())));
    assert_eq!(app.received, data);
    assert_eq!(
        app.offers[0].name, "report.bin",
        "path components are stripped"
    );
    // The budget is at most max_kbps: the file may not go faster than that.
    let secs = (app.done_at.unwrap() - start).as_secs_f64();
    let rate = data.len() as f64 * 8.0 / secs;
    let max = f64::from(TransferConfig::default().max_kbps) * 1000.0;
    assert!(
        rate <= max * 1.05,
        "file ran at {rate} bit/s, budget ≤ {max}"
    );
    assert!(rate >= 0.25 * max, "file crawled at {rate} bit/s");
    println!(
        "figure 600 kB file at 5 % loss, 40 ms RTT: {secs:.2} s, {:.2} Mbit/s, {} retransmissions",
        rate / 1e6,
        p.host.as_ref().unwrap().stats().reliable_retransmits
    );
    let h = p.host.as_ref().unwrap().stats();
    let c = p.client.stats();
    assert_eq!(
        c.file_chunks_received,
        u64::from(app.offers[0].total_chunks),
        "every chunk delivered exactly once"
    );
    assert!(h.file_chunks_sent >= c.file_chunks_received);
    assert!(
        h.reliable_retransmits > 0,
        "5 % loss must have cost retransmissions"
    );
}

#[test]
fn video_keeps_its_deadlines_while_a_file_shares_the_path() {
    let l = link(Duration::from_millis(20), 0.01, 0.0);
    let mut p = Pair::new(12, l.clone(), l);
    assert!(p.connect(Duration::from_secs(10)));
    let data = file(1_500_000);
    let mut app = App::start(&mut p, data.clone(), None, Answer::Accept);
    let r = stream_with(&mut p, 6, 60, 12_000_000, Duration::from_millis(40), |p| {
        app.pump(p);
    });
    run(&mut p, &mut app, Duration::from_secs(30));
    assert_eq!(app.client_done, Some(Ok(())));
    assert_eq!(app.received, data);
    assert!(
        r.on_time_ratio() >= 0.99,
        "video on time {:.4} beside a file transfer",
        r.on_time_ratio()
    );
    println!(
        "figure 12 Mbit/s video beside a 1.5 MB file, 1 % loss: {:.2} % frames on time",
        r.on_time_ratio() * 100.0
    );
    let budget_told = p
        .host_events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::TargetBitrate { bps, .. } => Some(*bps),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert!(
        budget_told.len() >= 2,
        "the encoder is told its share when the transfer starts and ends"
    );
}

#[test]
fn a_receiver_resumes_a_partial_file_and_only_the_rest_is_sent() {
    let mut p = pair(13, 0.0, |_, _| {});
    let data = file(250_000);
    let mut app = App::start(&mut p, data.clone(), None, Answer::Resume(100));
    run(&mut p, &mut app, Duration::from_secs(30));
    assert_eq!(app.client_done, Some(Ok(())));
    assert_eq!(app.received, data);
    let o = &app.offers[0];
    assert_eq!(app.accepted_offset, Some(o.offset_of(100)));
    assert_eq!(
        p.host.as_ref().unwrap().stats().reliable_retransmits,
        0,
        "on a clean path no chunk is retransmitted (acks never race the timer)"
    );
    assert_eq!(
        p.host.as_ref().unwrap().stats().file_chunks_sent,
        u64::from(o.total_chunks - 100)
    );
}

#[test]
fn a_wrong_checksum_fails_on_both_sides() {
    let mut p = pair(14, 0.0, |_, _| {});
    let data = file(20_000);
    let mut app = App::start(&mut p, data, Some(sha256(b"not this")), Answer::Accept);
    run(&mut p, &mut app, Duration::from_secs(10));
    assert_eq!(app.client_done, Some(Err(FileError::Checksum)));
    assert_eq!(
        app.host_done,
        Some(Err(FileError::Peer("checksum mismatch".into())))
    );
}

#[test]
fn refusals_reach_the_sender_with_their_reason() {
    let mut p = pair(15, 0.0, |_, _| {});
    let mut app = App::start(&mut p, file(5000), None, Answer::Refuse("no\u{7}thanks"));
    run_while(&mut p, &mut app, Duration::from_secs(5), |a| {
        a.host_done.is_some()
    });
    assert_eq!(
        app.host_done,
        Some(Err(FileError::Refused("no thanks".into())))
    );
    assert_eq!(p.host.as_ref().unwrap().stats().file_chunks_sent, 0);
}

#[test]
fn offers_over_the_receivers_limits_are_refused_without_asking_the_application() {
    let mut p = pair(16, 0.0, |is_host, c| {
        if !is_host {
            c.files.max_file_bytes = 10_000;
        }
    });
    let mut app = App::start(&mut p, file(10_001), None, Answer::Accept);
    run_while(&mut p, &mut app, Duration::from_secs(5), |a| {
        a.host_done.is_some()
    });
    assert!(app.offers.is_empty());
    match app.host_done {
        Some(Err(FileError::Refused(why))) => assert!(why.contains("larger"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn pause_holds_chunks_back_and_resume_finishes_the_file() {
    let mut p = pair(17, 0.0, |_, _| {});
    let data = file(400_000);
    let mut app = App::start(&mut p, data.clone(), None, Answer::Accept);
    // Let it get going, then the receiver pauses.
    run_while(&mut p, &mut app, Duration::from_secs(10), |a| {
        a.received.len() >= 50_000
    });
    let now = p.now;
    let id = app.file_id;
    p.client.pause_file(now, id).unwrap();
    let step = p.now + Duration::from_millis(300);
    p.run_until(step, |p| app.pump(p));
    let sent = p.host.as_ref().unwrap().stats().file_chunks_sent;
    assert!(p.client.file_progress(id).unwrap().paused);
    assert!(p.host.as_ref().unwrap().file_progress(id).unwrap().paused);
    let step = p.now + Duration::from_secs(1);
    p.run_until(step, |p| app.pump(p));
    assert_eq!(
        p.host.as_ref().unwrap().stats().file_chunks_sent,
        sent,
        "no chunks while paused"
    );
    let now = p.now;
    p.client.resume_file(now, id).unwrap();
    run(&mut p, &mut app, Duration::from_secs(20));
    assert_eq!(app.client_done, Some(Ok(())));
    assert_eq!(app.received, data);
}

#[test]
fn a_cancel_ends_the_transfer_on_both_sides() {
    let mut p = pair(18, 0.0, |_, _| {});
    let mut app = App::start(&mut p, file(400_000), None, Answer::Accept);
    run_while(&mut p, &mut app, Duration::from_secs(10), |a| {
        a.received.len() >= 20_000
    });
    let now = p.now;
    let id = app.file_id;
    host(&mut p).cancel_file(now, id).unwrap();
    run(&mut p, &mut app, Duration::from_secs(5));
    p.run_for(Duration::from_secs(1));
    assert_eq!(app.host_done, Some(Err(FileError::CancelledLocally)));
    assert_eq!(app.client_done, Some(Err(FileError::CancelledByPeer)));
    let now = p.now;
    assert_eq!(
        host(&mut p).write_file(now, id, b"more"),
        Err(SessionError::UnknownTransfer(id))
    );
    assert_eq!(
        p.host.as_ref().unwrap().unacked(),
        0,
        "no chunk of it is retried"
    );
}

#[test]
fn an_empty_file_completes() {
    let mut p = pair(19, 0.0, |_, _| {});
    let mut app = App::start(&mut p, Vec::new(), None, Answer::Accept);
    run(&mut p, &mut app, Duration::from_secs(5));
    assert_eq!(app.client_done, Some(Ok(())));
    assert_eq!(app.host_done, Some(Ok(())));
}

#[test]
fn the_session_closing_ends_its_transfers() {
    let mut p = pair(20, 0.0, |_, _| {});
    let mut app = App::start(&mut p, file(400_000), None, Answer::Accept);
    run_while(&mut p, &mut app, Duration::from_secs(10), |a| {
        a.received.len() >= 20_000
    });
    let now = p.now;
    host(&mut p).close(now, "bye");
    run(&mut p, &mut app, Duration::from_secs(5));
    assert_eq!(app.host_done, Some(Err(FileError::SessionClosed)));
    assert_eq!(app.client_done, Some(Err(FileError::SessionClosed)));
}

fn clipboards(events: &[(Instant, Event)]) -> Vec<String> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Clipboard(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn clipboard_text_of_any_size_up_to_the_limit_syncs_without_echo() {
    let mut p = pair(21, 0.02, |_, _| {});
    let now = p.now;
    assert_eq!(p.client.send_clipboard(now, "hello host"), Ok(true));
    p.run_for(Duration::from_millis(500));
    assert_eq!(clipboards(&p.host_events), ["hello host"]);
    // The host's clipboard now holds the text; offering it back is no change.
    let now = p.now;
    assert_eq!(host(&mut p).send_clipboard(now, "hello host"), Ok(false));

    // 300 KB of text is far beyond one datagram: it travels as a transfer the receiving
    // session collects itself.
    let big: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert_eq!(host(&mut p).send_clipboard(now, &big), Ok(true));
    p.run_for(Duration::from_secs(5));
    let got = clipboards(&p.client_events);
    assert_eq!(
        got.len(),
        1,
        "host {:?} client {:?}",
        p.host.as_ref().unwrap().stats(),
        p.client.stats()
    );
    assert!(got[0] == big, "large clipboard differs");
    assert!(
        !p.client_events
            .iter()
            .any(|(_, e)| matches!(e, Event::FileOffered(_) | Event::FileDone { .. })),
        "a clipboard transfer is not shown as a file"
    );
    assert!(
        !p.host_events
            .iter()
            .any(|(_, e)| matches!(e, Event::FileAccepted { .. } | Event::FileDone { .. }))
    );
    let now = p.now;
    assert_eq!(p.client.send_clipboard(now, &big), Ok(false), "no echo");
    let too_big = "x".repeat((1 << 20) + 1);
    assert!(matches!(
        p.client.send_clipboard(now, &too_big),
        Err(SessionError::MessageTooLarge { .. })
    ));
}
