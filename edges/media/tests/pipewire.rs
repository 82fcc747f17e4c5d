//! PipeWire capture against a real, private PipeWire daemon: a GStreamer `videotestsrc !
//! pipewiresink` producer offers a solid-colour `Video/Source` node, the source links itself to
//! it (no session manager runs) and its frames carry that colour.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

#[path = "support/pw_daemon.rs"]
mod pw_daemon;

use std::path::Path;
use std::time::{Duration, Instant};

use pw_daemon::Daemon;

use wavry_media::pipewire::{PipeWireSource, PipeWireTarget};
use wavry_media::{RawFrame, VideoSource, x11::bgrx_to_i420};

/// What `bgrx_to_i420` makes of one colour: (Y, U, V).
fn yuv_of(b: u8, g: u8, r: u8) -> (u8, u8, u8) {
    let px: Vec<u8> = [b, g, r, 0].repeat(4);
    let mut f = RawFrame::new(2, 2);
    bgrx_to_i420(&px, 2, 2, &mut f);
    let [(y, _), (u, _), (v, _)] = f.planes();
    (y[0], u[0], v[0])
}

fn centre(frame: &RawFrame) -> (u8, u8, u8) {
    let [(y, ys), (u, cs), (v, _)] = frame.planes();
    let (w, h) = (frame.width as usize, frame.height as usize);
    let c = (h / 4) * cs + w / 4;
    (y[(h / 2) * ys + w / 2], u[c], v[c])
}

fn capture_colour(d: &Daemon, name: &str) -> (PipeWireSource, RawFrame) {
    let remote = d.socket();
    let mut src = PipeWireSource::open(
        &PipeWireTarget::Name(name.into()),
        Some(path_str(&remote)),
        30,
    )
    .expect("the source links to the producer and gets a frame");
    let f = src.format();
    assert_eq!((f.width, f.height, f.fps), (320, 240, 30));
    let mut frame = RawFrame::new(f.width, f.height);
    src.capture(&mut frame).unwrap();
    assert!(frame.capture_us > 0);
    (src, frame)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn frames_from_a_pipewire_video_source_carry_its_pixels() {
    let mut d = Daemon::start();
    // Green in BGRx (taken as is) and red in RGBx (bytes swapped on the way): a swap in the
    // wrong place turns red into blue.
    d.produce("wavry-test-green", 0xff00_ff00, "BGRx");
    d.produce("wavry-test-red", 0xffff_0000, "RGBx");

    let (mut green, mut frame) = capture_colour(&d, "wavry-test-green");
    assert_eq!(centre(&frame), yuv_of(0, 255, 0), "green");
    // Later captures follow the stream (the capture time moves on with new buffers).
    let first = frame.capture_us;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        green.capture(&mut frame).unwrap();
        if frame.capture_us > first {
            break;
        }
        assert!(Instant::now() < deadline, "no newer frame arrived");
        std::thread::yield_now();
    }
    assert_eq!(centre(&frame), yuv_of(0, 255, 0));
    drop(green);

    let (_red, frame) = capture_colour(&d, "wavry-test-red");
    assert_eq!(centre(&frame), yuv_of(0, 0, 255), "red, not blue");
}
