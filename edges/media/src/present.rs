//! The headless presenter: counts frames, shows nothing.

use crate::{MediaError, Presenter, RawFrame};

/// Stands in for a window where there is no display: counts what it was given.
#[derive(Debug, Default)]
pub struct HeadlessPresenter {
    /// Frames presented so far.
    pub frames: u64,
}

impl Presenter for HeadlessPresenter {
    fn name(&self) -> &'static str {
        "headless"
    }

    fn present(&mut self, _frame: &RawFrame) -> Result<bool, MediaError> {
        self.frames += 1;
        Ok(true)
    }
}
