//! `compare` installs nothing unless asked: a missing broker stops it with
//! the command that would install it.

use std::process::Command;

#[test]
fn a_missing_broker_stops_compare_with_what_to_install() {
    let empty =
        std::env::temp_dir().join(format!("corecast-bench-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("an empty directory");
    let out = Command::new(env!("CARGO_BIN_EXE_corecast-bench"))
        .args(["compare", "--quick", "--brokers", "nats,redis"])
        .env("PATH", &empty)
        .current_dir(&empty)
        .output()
        .expect("run corecast-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for said in [
        "nats-server and redis-server not installed",
        "apt-get install -y --no-install-recommends nats-server redis-server",
        "--install",
    ] {
        assert!(stderr.contains(said), "{said:?} missing in {stderr}");
    }
    assert!(!stderr.contains("corecast-bench: apt-get"), "nothing was run: {stderr}");
    let _ = std::fs::remove_dir_all(&empty);
}
