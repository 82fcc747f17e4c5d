//! `wavry-bench`: load generators and measurement tools. Each subcommand prints a table and
//! can write JSON; ratios are always against a baseline measured in the same run.

use clap::{Parser, Subcommand};

mod child;
mod control;
mod e2e;
mod net;
mod plot;
#[cfg(target_os = "linux")]
mod relay;
mod spread;
mod stack;

#[derive(Parser, Debug)]
#[command(
    name = "wavry-bench",
    version,
    about = "Wavry load tools and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Packet I/O: std, sendmmsg, portable and io_uring backends, GSO/GRO ceiling.
    Net(net::Args),
    /// Control plane: logins/s, lease issuances/s, WebSocket fan-out.
    Control(control::Args),
    /// Glass to glass through wavry-server and wavry-client on loopback, against the same
    /// pipeline over an in-process channel.
    E2e(e2e::Args),
    /// The whole stack on loopback (master, gateway, two relays, host, client): direct, then
    /// relayed with a relay killed mid-way; live stats, a table per path, recording, plot.
    Stack(stack::Args),
    /// Relay: wavry-relay vs a naive forwarder vs the raw forward ceiling, same run.
    #[cfg(target_os = "linux")]
    Relay(relay::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Net(a) => net::run(&a),
        Command::Control(a) => control::run(&a),
        Command::E2e(a) => e2e::run(&a),
        Command::Stack(a) => stack::run(&a),
        #[cfg(target_os = "linux")]
        Command::Relay(a) => relay::run(&a),
    }
}
