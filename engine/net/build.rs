//! Builds the XDP program of the AF_XDP backend (bpf/udp_to_xsk.bpf.c) from source with clang
//! and libbpf's headers (Debian: clang, libbpf-dev). Where they are missing, the crate still
//! builds: the program is left out (`cfg(wavry_no_bpf)`) and opening an AF_XDP port fails
//! with an error that names the packages.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(wavry_no_bpf)");
    println!("cargo::rerun-if-changed=bpf/udp_to_xsk.bpf.c");
    println!("cargo::rerun-if-env-changed=CLANG");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" {
        println!("cargo::rustc-cfg=wavry_no_bpf");
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("udp_to_xsk.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // <asm/types.h> lives under the multiarch include directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => other,
    };
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "bpf/udp_to_xsk.bpf.c", "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => skip(&format!("{clang} failed ({s})")),
        Err(e) => skip(&format!("{clang} could not run: {e}")),
    }
}

fn skip(why: &str) {
    println!(
        "cargo::warning=the XDP program was not built ({why}); AF_XDP (--io xdp) is unavailable. \
         Install Debian's clang and libbpf-dev and rebuild."
    );
    println!("cargo::rustc-cfg=wavry_no_bpf");
}
