//! `wavry-bench net` (arrives with its issue).

/// Options of `wavry-bench net`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("wavry-bench net is not part of this build yet")
}
