//! The real `wavry` binary: keygen, show-id, overwrite protection, errors, version.

use std::{path::Path, process::Command};

fn wavry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wavry"))
        .args(args)
        .output()
        .unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("wavry-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn keygen_then_show_id_agree_and_secret_is_private() {
    let dir = temp_dir("keygen");
    let prefix = dir.join("host");
    let out = wavry(&["keygen", "--output", prefix.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(id.len(), 43);
    let pub_path = dir.join("host.pub");
    let key_path = dir.join("host.key");
    assert_eq!(std::fs::read(&pub_path).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    for p in [&pub_path, &key_path] {
        let show = wavry(&["show-id", "--key", p.to_str().unwrap()]);
        assert!(show.status.success());
        assert_eq!(String::from_utf8(show.stdout).unwrap().trim(), id);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keygen_refuses_to_overwrite_without_force() {
    let dir = temp_dir("force");
    let prefix = dir.join("k");
    let p = prefix.to_str().unwrap();
    assert!(wavry(&["keygen", "-o", p]).status.success());
    let before = std::fs::read(dir.join("k.key")).unwrap();
    let again = wavry(&["keygen", "-o", p]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read(dir.join("k.key")).unwrap(), before);
    assert!(wavry(&["keygen", "-o", p, "--force"]).status.success());
    assert_ne!(std::fs::read(dir.join("k.key")).unwrap(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn show_id_explains_bad_files() {
    let dir = temp_dir("bad");
    let f = dir.join("x.pub");
    std::fs::write(&f, b"short").unwrap();
    let out = wavry(&["show-id", "--key", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("32-byte") && err.contains("wavry keygen"),
        "{err}"
    );
    let missing = wavry(&[
        "show-id",
        "--key",
        Path::new("/nonexistent/x.pub").to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn version_names_commit_and_protocols() {
    let out = wavry(&["version"]);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        s.contains(env!("CARGO_PKG_VERSION")) && s.contains("commit:") && s.contains("Noise_XX")
    );
    let help = wavry(&["--help"]);
    let h = String::from_utf8(help.stdout).unwrap();
    for cmd in ["keygen", "show-id", "version"] {
        assert!(h.contains(cmd));
    }
}
