//! The X11 edges against a real Xvfb: capture sees what was drawn on the root window, XTEST
//! moves the pointer and presses keys the server then reports.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use wavry_media::{
    InputEvent, InputSink, RawFrame, VideoSource,
    x11::{X11Source, XTestSink},
};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt as _};
use x11rb::rust_connection::RustConnection;

/// An Xvfb on a free display (it picks one and reports it through -displayfd), killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Self {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "320x240x24",
                "-br",
                "-noreset",
            ])
            .args(["-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is installed (cargo xtask test installs xvfb)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // Xvfb writes the display number once it accepts connections.
        let n: u32 = line.trim().parse().expect("display number from Xvfb");
        Self {
            child,
            display: format!(":{n}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn capture_sees_what_is_drawn_on_the_root_window() {
    let x = Xvfb::start();
    let (conn, screen) = RustConnection::connect(Some(&x.display)).unwrap();
    let s = &conn.setup().roots[screen];
    let root = s.root;
    let white = s.white_pixel;
    let gc = conn.generate_id().unwrap();
    conn.create_gc(
        gc,
        root,
        &xproto::CreateGCAux::new()
            .foreground(white)
            .subwindow_mode(xproto::SubwindowMode::INCLUDE_INFERIORS),
    )
    .unwrap();
    conn.poly_fill_rectangle(
        root,
        gc,
        &[xproto::Rectangle {
            x: 0,
            y: 0,
            width: 160,
            height: 120,
        }],
    )
    .unwrap();
    conn.get_input_focus().unwrap().reply().unwrap();

    let mut src = X11Source::open(Some(&x.display), 30).unwrap();
    assert_eq!((src.format().width, src.format().height), (320, 240));
    let mut f = RawFrame::new(2, 2);
    src.capture(&mut f).unwrap();
    let y = f.y();
    let at = |px: usize, py: usize| y[py * 320 + px];
    assert!(at(40, 30) > 200, "white drawn area reads {}", at(40, 30));
    assert!(at(280, 200) < 40, "black root reads {}", at(280, 200));
    assert!(f.capture_us > 0);
}

#[test]
fn xtest_moves_the_pointer_and_presses_keys() {
    let x = Xvfb::start();
    let (conn, screen) = RustConnection::connect(Some(&x.display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let mut sink = XTestSink::open(Some(&x.display)).unwrap();

    sink.inject(&InputEvent::MouseMove { x: 0.5, y: 0.25 })
        .unwrap();
    let p = conn.query_pointer(root).unwrap().reply().unwrap();
    assert_eq!((p.root_x, p.root_y), (159, 59));

    // evdev KEY_A (30) is X keycode 38.
    let pressed = |conn: &RustConnection| {
        let keys = conn.query_keymap().unwrap().reply().unwrap().keys;
        keys[38 / 8] & (1 << (38 % 8)) != 0
    };
    sink.inject(&InputEvent::Key {
        code: 30,
        pressed: true,
    })
    .unwrap();
    assert!(pressed(&conn), "A is down");
    sink.inject(&InputEvent::Key {
        code: 30,
        pressed: false,
    })
    .unwrap();
    assert!(!pressed(&conn), "A is up again");
}
