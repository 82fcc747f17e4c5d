//! Builds the eBPF programs from source with clang and libbpf's headers (Debian: clang,
//! libbpf-dev): the XDP program of the AF_XDP backend (bpf/udp_to_xsk.bpf.c) and the
//! bound-peers socket filter (bpf/bound_peers.bpf.c). Where they are missing, the crate still
//! builds: the programs are left out (`cfg(wavry_no_bpf)`) and opening an AF_XDP port or
//! loading the filter fails with an error that names the packages.

use std::path::PathBuf;
use std::process::Command;

/// The programs under bpf/, each built to `$OUT_DIR/<name>.o`.
const PROGRAMS: [&str; 2] = ["udp_to_xsk", "bound_peers"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(wavry_no_bpf)");
    for name in PROGRAMS {
        println!("cargo::rerun-if-changed=bpf/{name}.bpf.c");
    }
    println!("cargo::rerun-if-env-changed=CLANG");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" {
        println!("cargo::rustc-cfg=wavry_no_bpf");
        return;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // <asm/types.h> lives under the multiarch include directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => other,
    };
    for name in PROGRAMS {
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(format!("bpf/{name}.bpf.c"))
            .arg("-o")
            .arg(out_dir.join(format!("{name}.o")))
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => return skip(&format!("{clang} failed on {name} ({s})")),
            Err(e) => return skip(&format!("{clang} could not run: {e}")),
        }
    }
}

fn skip(why: &str) {
    println!(
        "cargo::warning=the eBPF programs were not built ({why}); AF_XDP (--io xdp) and the \
         bound-peers socket filter are unavailable. Install Debian's clang and libbpf-dev and \
         rebuild."
    );
    println!("cargo::rustc-cfg=wavry_no_bpf");
}
