//! A window presenter (`minifb`, X11): shows decoded frames, converted from I420 to RGB
//! (BT.601 limited range). Windows stay on the thread that opened them.

use minifb::{ScaleMode, Window, WindowOptions};

use crate::{MediaError, Presenter, RawFrame};

/// Shows frames in an X11 window of the stream's size at the top-left of the screen.
pub struct WindowPresenter {
    window: Window,
    rgb: Vec<u32>,
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
        Ok(Self {
            window,
            rgb: Vec::new(),
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
        self.window
            .update_with_buffer(&self.rgb, frame.width as usize, frame.height as usize)
            .map_err(|e| MediaError::Unavailable("the window", e.to_string()))?;
        Ok(self.window.is_open())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
