//! A window presenter (`minifb`, X11): shows decoded frames, converted from I420 to RGB
//! (BT.601 limited range). Windows stay on the thread that opened them.

use std::cell::RefCell;
use std::rc::Rc;

use minifb::{InputCallback, Key, MouseButton, MouseMode, ScaleMode, Window, WindowOptions};

use crate::{InputEvent, MediaError, Presenter, RawFrame};

/// Shows frames in an X11 window of the stream's size at the top-left of the screen.
pub struct WindowPresenter {
    window: Window,
    rgb: Vec<u32>,
    /// Size of the last picture shown (the pointer is normalised to it).
    size: (u32, u32),
    /// Last pointer position sent, normalised.
    pointer: Option<(f32, f32)>,
    /// Left, middle, right: down at the last poll.
    buttons: [bool; 3],
    /// Every key press and release, in order, as the window's events are read: a key
    /// pressed and released between two pictures is not lost (minifb's key state would).
    keys: Rc<RefCell<Vec<(Key, bool)>>>,
}

/// Collects key events from minifb's callback.
struct KeyLog(Rc<RefCell<Vec<(Key, bool)>>>);

impl InputCallback for KeyLog {
    fn add_char(&mut self, _uni_char: u32) {}

    fn set_key_state(&mut self, key: Key, state: bool) {
        let mut log = self.0.borrow_mut();
        // Bounded: a window nobody polls cannot grow it.
        if log.len() < 4096 {
            log.push((key, state));
        }
    }
}

impl std::fmt::Debug for WindowPresenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowPresenter").finish_non_exhaustive()
    }
}

impl WindowPresenter {
    /// Opens a `width` x `height` window titled `title` on `$DISPLAY`.
    pub fn open(title: &str, width: u32, height: u32) -> Result<Self, MediaError> {
        let mut window = Window::new(
            title,
            width as usize,
            height as usize,
            // 1:1 pixels from the top-left: a window manager (or none) may hand back a
            // window of another size, and a remote desktop should not be resampled.
            WindowOptions {
                scale_mode: ScaleMode::UpperLeft,
                ..WindowOptions::default()
            },
        )
        .map_err(|e| MediaError::Unavailable("a window", e.to_string()))?;
        window.set_position(0, 0);
        // minifb sleeps in every update to hold 250 updates per second by default: a picture
        // shown 2 ms after an input poll would wait 2 ms more. Pictures come at the stream's
        // rate and polls at the caller's.
        window.set_target_fps(0);
        let keys = Rc::new(RefCell::new(Vec::new()));
        window.set_input_callback(Box::new(KeyLog(keys.clone())));
        Ok(Self {
            keys,
            window,
            rgb: Vec::new(),
            size: (width, height),
            pointer: None,
            buttons: [false; 3],
        })
    }
}

/// Converts an I420 frame to 0RGB pixels (BT.601, limited range).
pub fn i420_to_rgb(frame: &RawFrame, rgb: &mut Vec<u32>) {
    let (w, h) = (frame.width as usize, frame.height as usize);
    rgb.resize(w * h, 0);
    let [(y, ys), (u, cs), (v, _)] = frame.planes();
    for row in 0..h {
        for x in 0..w {
            let c = 298 * (i32::from(y[row * ys + x]) - 16);
            let d = i32::from(u[(row / 2) * cs + x / 2]) - 128;
            let e = i32::from(v[(row / 2) * cs + x / 2]) - 128;
            let clamp = |n: i32| ((n + 128) >> 8).clamp(0, 255) as u32;
            let r = clamp(c + 409 * e);
            let g = clamp(c - 100 * d - 208 * e);
            let b = clamp(c + 516 * d);
            rgb[row * w + x] = (r << 16) | (g << 8) | b;
        }
    }
}

impl Presenter for WindowPresenter {
    fn name(&self) -> &'static str {
        "window"
    }

    fn present(&mut self, frame: &RawFrame) -> Result<bool, MediaError> {
        i420_to_rgb(frame, &mut self.rgb);
        self.size = (frame.width, frame.height);
        self.window
            .update_with_buffer(&self.rgb, frame.width as usize, frame.height as usize)
            .map_err(|e| MediaError::Unavailable("the window", e.to_string()))?;
        Ok(self.window.is_open())
    }

    fn poll(&mut self) -> bool {
        // Reads the window's events and keeps the last picture.
        self.window.update();
        self.window.is_open()
    }

    // minifb reads the window's events in `update_with_buffer` and `update` (`poll`).
    fn input(&mut self, out: &mut Vec<InputEvent>) {
        out.extend(self.keys.borrow_mut().drain(..).filter_map(|(k, pressed)| {
            Some(InputEvent::Key {
                code: evdev_code(k)?,
                pressed,
            })
        }));
        if let Some((x, y)) = self.window.get_mouse_pos(MouseMode::Discard) {
            let norm = |v: f32, n: u32| (v / n.saturating_sub(1).max(1) as f32).clamp(0.0, 1.0);
            let p = (norm(x, self.size.0), norm(y, self.size.1));
            if self.pointer != Some(p) {
                self.pointer = Some(p);
                out.push(InputEvent::MouseMove { x: p.0, y: p.1 });
            }
        }
        for (i, b) in [MouseButton::Left, MouseButton::Middle, MouseButton::Right]
            .into_iter()
            .enumerate()
        {
            let down = self.window.get_mouse_down(b);
            if down != self.buttons[i] {
                self.buttons[i] = down;
                out.push(InputEvent::MouseButton {
                    button: i as u32 + 1,
                    pressed: down,
                });
            }
        }
        if let Some((dx, dy)) = self.window.get_scroll_wheel() {
            // minifb: positive y is up; the sinks' positive dy is down.
            out.push(InputEvent::Scroll { dx, dy: -dy });
        }
    }
}

/// The Linux evdev code of a key (`linux/input-event-codes.h`); `None` for keys without one.
pub fn evdev_code(key: Key) -> Option<u32> {
    #[allow(clippy::enum_glob_use)] // a table of every key
    use Key::*;
    const LETTERS: [(Key, u32); 26] = [
        (Q, 16),
        (W, 17),
        (E, 18),
        (R, 19),
        (T, 20),
        (Y, 21),
        (U, 22),
        (I, 23),
        (O, 24),
        (P, 25),
        (A, 30),
        (S, 31),
        (D, 32),
        (F, 33),
        (G, 34),
        (H, 35),
        (J, 36),
        (K, 37),
        (L, 38),
        (Z, 44),
        (X, 45),
        (C, 46),
        (V, 47),
        (B, 48),
        (N, 49),
        (M, 50),
    ];
    if let Some(&(_, c)) = LETTERS.iter().find(|(k, _)| *k == key) {
        return Some(c);
    }
    Some(match key {
        Key1 => 2,
        Key2 => 3,
        Key3 => 4,
        Key4 => 5,
        Key5 => 6,
        Key6 => 7,
        Key7 => 8,
        Key8 => 9,
        Key9 => 10,
        Key0 => 11,
        Escape => 1,
        Minus => 12,
        Equal => 13,
        Backspace => 14,
        Tab => 15,
        LeftBracket => 26,
        RightBracket => 27,
        Enter => 28,
        LeftCtrl => 29,
        Semicolon => 39,
        Apostrophe => 40,
        Backquote => 41,
        LeftShift => 42,
        Backslash => 43,
        Comma => 51,
        Period => 52,
        Slash => 53,
        RightShift => 54,
        NumPadAsterisk => 55,
        LeftAlt => 56,
        Space => 57,
        CapsLock => 58,
        F1 => 59,
        F2 => 60,
        F3 => 61,
        F4 => 62,
        F5 => 63,
        F6 => 64,
        F7 => 65,
        F8 => 66,
        F9 => 67,
        F10 => 68,
        NumLock => 69,
        ScrollLock => 70,
        NumPad7 => 71,
        NumPad8 => 72,
        NumPad9 => 73,
        NumPadMinus => 74,
        NumPad4 => 75,
        NumPad5 => 76,
        NumPad6 => 77,
        NumPadPlus => 78,
        NumPad1 => 79,
        NumPad2 => 80,
        NumPad3 => 81,
        NumPad0 => 82,
        NumPadDot => 83,
        F11 => 87,
        F12 => 88,
        NumPadEnter => 96,
        RightCtrl => 97,
        NumPadSlash => 98,
        RightAlt => 100,
        Home => 102,
        Up => 103,
        PageUp => 104,
        Left => 105,
        Right => 106,
        End => 107,
        Down => 108,
        PageDown => 109,
        Insert => 110,
        Delete => 111,
        Pause => 119,
        LeftSuper => 125,
        RightSuper => 126,
        Menu => 127,
        F13 => 183,
        F14 => 184,
        F15 => 185,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_evdev_codes() {
        assert_eq!(evdev_code(Key::A), Some(30));
        assert_eq!(evdev_code(Key::Key1), Some(2));
        assert_eq!(evdev_code(Key::Enter), Some(28));
        assert_eq!(evdev_code(Key::Up), Some(103));
        assert_eq!(evdev_code(Key::Unknown), None);
        let letters = [
            Key::A,
            Key::B,
            Key::C,
            Key::D,
            Key::E,
            Key::F,
            Key::G,
            Key::H,
            Key::I,
            Key::J,
            Key::K,
            Key::L,
            Key::M,
            Key::N,
            Key::O,
            Key::P,
            Key::Q,
            Key::R,
            Key::S,
            Key::T,
            Key::U,
            Key::V,
            Key::W,
            Key::X,
            Key::Y,
            Key::Z,
        ];
        let mut codes: Vec<u32> = letters.iter().filter_map(|&k| evdev_code(k)).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 26);
    }

    #[test]
    fn black_white_and_red_come_back_from_bt601() {
        let mut f = RawFrame::new(2, 2);
        f.y_mut().copy_from_slice(&[16, 235, 82, 82]);
        let mut rgb = Vec::new();
        i420_to_rgb(&f, &mut rgb);
        assert_eq!(rgb[0], 0);
        assert_eq!(rgb[1], 0x00FF_FFFF);
        let [_, (u, _), (v, _)] = f.planes_mut();
        u[0] = 90;
        v[0] = 240;
        i420_to_rgb(&f, &mut rgb);
        let r = rgb[2] >> 16;
        let (g, b) = ((rgb[2] >> 8) & 0xff, rgb[2] & 0xff);
        assert!(r > 245 && g < 10 && b < 10, "{r} {g} {b}");
    }
}
