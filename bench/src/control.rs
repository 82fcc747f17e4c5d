//! `wavry-bench control` (arrives with its issue).

/// Options of `wavry-bench control`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("wavry-bench control is not part of this build yet")
}
