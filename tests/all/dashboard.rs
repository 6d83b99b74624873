//! The dashboard in a real browser: headless Chromium (Debian's `chromium`)
//! driven by playwright-core (npm, `tests/dashboard/`) against a running
//! `switchyard demo`. The page must show the demo's pool and show an
//! instance drained through the admin API as draining, live. The screenshot
//! is kept at `target/dashboard.png`.

use std::path::Path;
use std::process::Command;

use switchyard_tests::process::Switchyard;

use crate::BINARY;

#[test]
fn the_dashboard_shows_pools_and_a_drain_live_in_chromium() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let harness = workspace.join("tests/dashboard");
    if !harness.join("node_modules/playwright-core").is_dir() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&harness)
            .status()
            .expect("npm (Debian: apt-get install nodejs npm)");
        assert!(status.success(), "npm ci in {}", harness.display());
    }
    let demo = Switchyard::run(
        BINARY,
        &["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
    );
    let proxy = demo
        .wait_for_log("URL:")
        .split("URL:")
        .nth(1)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let line = demo.wait_for_log("dashboard:");
    let admin = line
        .split("dashboard:")
        .nth(1)
        .map(|s| s.trim().trim_end_matches("/dashboard").to_string())
        .unwrap_or_default();
    let screenshot = workspace.join("target/dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = Command::new("node")
        .arg(harness.join("check.mjs"))
        .args([admin.as_str(), "demo"])
        .arg(&screenshot)
        .arg(&proxy)
        .output()
        .expect("node (Debian: apt-get install nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser check failed:\n{stdout}\n{}\nswitchyard log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        demo.log().join("\n")
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(
        seen["instances"].as_array().map(Vec::len),
        Some(3),
        "{seen}"
    );
    assert_eq!(seen["before"], "fit", "{seen}");
    assert_eq!(seen["after"], "draining", "{seen}");
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 0));
}
