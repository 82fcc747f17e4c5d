//! X11 edges over a pure-Rust connection (`x11rb`): capture of a display's root window
//! (`GetImage`, converted to I420 with BT.601 limited-range coefficients) and input injection
//! through the XTEST extension.
//! Tested against Xvfb; `GetImage` copies the whole screen through the X socket per frame, so
//! this backend suits test displays and modest sizes (MIT-SHM would remove that copy).

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt as _, ImageFormat};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;

use crate::{InputEvent, InputSink, MediaError, RawFrame, VideoFormat, VideoSource};

fn x11_err(context: &'static str) -> impl FnOnce(Box<dyn std::error::Error>) -> MediaError {
    move |e| MediaError::Unavailable("X11", format!("{context}: {e}"))
}

/// Connects to `display` (`:N`; `$DISPLAY` when `None`); returns the connection, the root
/// window and its size.
fn connect(display: Option<&str>) -> Result<(RustConnection, u32, u16, u16), MediaError> {
    let (conn, screen) = RustConnection::connect(display)
        .map_err(|e| x11_err("connecting to the X server")(Box::new(e)))?;
    let s = conn
        .setup()
        .roots
        .get(screen)
        .ok_or_else(|| MediaError::Unavailable("X11", format!("no screen {screen}")))?;
    let (root, w, h) = (s.root, s.width_in_pixels, s.height_in_pixels);
    Ok((conn, root, w, h))
}

/// Captures the root window of an X display.
pub struct X11Source {
    conn: RustConnection,
    root: u32,
    format: VideoFormat,
}

impl std::fmt::Debug for X11Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X11Source")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl X11Source {
    /// Opens `display` for capture at `fps` (the size is the screen's, cut to even).
    pub fn open(display: Option<&str>, fps: u32) -> Result<Self, MediaError> {
        crate::init()?;
        let (conn, root, w, h) = connect(display)?;
        let depth_ok = conn
            .setup()
            .pixmap_formats
            .iter()
            .any(|f| f.depth == conn.setup().roots[0].root_depth && f.bits_per_pixel == 32);
        if !depth_ok {
            return Err(MediaError::Unavailable(
                "X11 capture",
                "the root window's pixels are not 32-bit (depth 24/32 expected)".into(),
            ));
        }
        let format = VideoFormat {
            width: u32::from(w) & !1,
            height: u32::from(h) & !1,
            fps,
        };
        format.validate()?;
        Ok(Self { conn, root, format })
    }
}

impl VideoSource for X11Source {
    fn name(&self) -> &'static str {
        "x11"
    }

    fn format(&self) -> VideoFormat {
        self.format
    }

    fn capture(&mut self, frame: &mut RawFrame) -> Result<(), MediaError> {
        let (w, h) = (self.format.width as usize, self.format.height as usize);
        let capture_us = crate::wall_clock_us();
        let reply = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.root,
                0,
                0,
                w as u16,
                h as u16,
                !0,
            )
            .map_err(|e| x11_err("GetImage")(Box::new(e)))?
            .reply()
            .map_err(|e| x11_err("GetImage")(Box::new(e)))?;
        if reply.data.len() < w * h * 4 {
            return Err(MediaError::invalid(
                "X11 image",
                format!("{} bytes for {w}x{h}", reply.data.len()),
            ));
        }
        frame.reshape(self.format.width, self.format.height);
        bgrx_to_i420(&reply.data, w, h, frame);
        frame.capture_us = capture_us;
        Ok(())
    }
}

/// Injects input into an X display through XTEST (keys as evdev codes + 8, the X server's
/// evdev keycode mapping; pointer positions scaled to the screen).
pub struct XTestSink {
    conn: RustConnection,
    root: u32,
    width: u16,
    height: u16,
}

impl std::fmt::Debug for XTestSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XTestSink").finish_non_exhaustive()
    }
}

impl XTestSink {
    /// Connects to `display` and checks the XTEST extension is there.
    pub fn open(display: Option<&str>) -> Result<Self, MediaError> {
        let (conn, root, width, height) = connect(display)?;
        conn.xtest_get_version(2, 2)
            .map_err(|e| x11_err("XTEST")(Box::new(e)))?
            .reply()
            .map_err(|e| x11_err("the XTEST extension")(Box::new(e)))?;
        Ok(Self {
            conn,
            root,
            width,
            height,
        })
    }

    fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) -> Result<(), MediaError> {
        self.conn
            .xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, x, y, 0)
            .map_err(|e| x11_err("XTEST FakeInput")(Box::new(e)))?;
        Ok(())
    }
}

impl InputSink for XTestSink {
    fn name(&self) -> &'static str {
        "xtest"
    }

    fn inject(&mut self, event: &InputEvent) -> Result<(), MediaError> {
        let press = |p: bool, down: u8, up: u8| if p { down } else { up };
        match *event {
            InputEvent::Key { code, pressed } => {
                let Ok(keycode) = u8::try_from(code + 8) else {
                    return Err(MediaError::invalid("key code", format!("{code}")));
                };
                let kind = press(pressed, xproto::KEY_PRESS_EVENT, xproto::KEY_RELEASE_EVENT);
                self.fake(kind, keycode, 0, 0)?;
            }
            InputEvent::MouseMove { x, y } => {
                let px = (x.clamp(0.0, 1.0) * f32::from(self.width.saturating_sub(1))) as i16;
                let py = (y.clamp(0.0, 1.0) * f32::from(self.height.saturating_sub(1))) as i16;
                self.fake(xproto::MOTION_NOTIFY_EVENT, 0, px, py)?;
            }
            InputEvent::MouseButton { button, pressed } => {
                let kind = press(
                    pressed,
                    xproto::BUTTON_PRESS_EVENT,
                    xproto::BUTTON_RELEASE_EVENT,
                );
                self.fake(kind, u8::try_from(button).unwrap_or(1), 0, 0)?;
            }
            InputEvent::Scroll { dy, dx } => {
                // X wheel buttons: 4 up, 5 down, 6 left, 7 right; one click per whole step.
                for (steps, neg, pos) in [(dy, 4u8, 5u8), (dx, 6, 7)] {
                    let button = if steps < 0.0 { neg } else { pos };
                    for _ in 0..(steps.abs().round() as u32).min(20) {
                        self.fake(xproto::BUTTON_PRESS_EVENT, button, 0, 0)?;
                        self.fake(xproto::BUTTON_RELEASE_EVENT, button, 0, 0)?;
                    }
                }
            }
            InputEvent::GamepadAxis { .. } | InputEvent::GamepadButton { .. } => {
                tracing::debug!("X11 has no gamepads; event dropped: {event:?}");
            }
        }
        // Round trip so the event is applied before the next call returns.
        self.conn
            .get_input_focus()
            .map_err(|e| x11_err("sync")(Box::new(e)))?
            .reply()
            .map_err(|e| x11_err("sync")(Box::new(e)))?;
        Ok(())
    }
}

/// Converts packed BGRx rows (`w * 4` bytes each) into `out`'s I420 planes (BT.601, limited
/// range; chroma from the mean of each 2x2 block).
pub fn bgrx_to_i420(src: &[u8], w: usize, h: usize, out: &mut RawFrame) {
    let [(y, ys), (u, cs), (v, _)] = out.planes_mut();
    let luma = |b: i32, g: i32, r: i32| ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    for row in 0..h {
        let line = &src[row * w * 4..(row + 1) * w * 4];
        for (x, px) in line.chunks_exact(4).enumerate() {
            let (b, g, r) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
            y[row * ys + x] = luma(b, g, r) as u8;
        }
    }
    for cy in 0..h / 2 {
        for cx in 0..w / 2 {
            let (mut b, mut g, mut r) = (0i32, 0i32, 0i32);
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let o = ((cy * 2 + dy) * w + cx * 2 + dx) * 4;
                b += i32::from(src[o]);
                g += i32::from(src[o + 1]);
                r += i32::from(src[o + 2]);
            }
            let (b, g, r) = (b / 4, g / 4, r / 4);
            u[cy * cs + cx] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
            v[cy * cs + cx] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_black_and_red_convert_to_their_bt601_values() {
        let (w, h) = (4, 2);
        let mut src = Vec::new();
        for x in 0..w * h {
            let px: [u8; 4] = match x % 4 {
                0 | 1 => [255, 255, 255, 0],
                _ => [0, 0, 0, 0],
            };
            src.extend_from_slice(&px);
        }
        let mut f = RawFrame::new(w as u32, h as u32);
        bgrx_to_i420(&src, w, h, &mut f);
        assert_eq!(&f.y()[..4], &[235, 235, 16, 16]);
        let [_, (u, _), (v, _)] = f.planes();
        assert_eq!((u[0], v[0], u[1], v[1]), (128, 128, 128, 128));
        let red = [0u8, 0, 255, 0].repeat(w * h);
        bgrx_to_i420(&red, w, h, &mut f);
        assert_eq!(f.y()[0], 82);
        let [_, (u, _), (v, _)] = f.planes();
        assert_eq!((u[0], v[0]), (90, 240));
    }
}
