//! The dashboard in a real browser: headless Chromium (Debian's `chromium`)
//! driven by playwright-core (npm, `tests/dashboard/`, `check.mjs` says what
//! it checks) against a running `switchyard demo` with traffic. The
//! screenshots are kept in `target/dashboard/`; with
//! `SWITCHYARD_DASHBOARD_PNG=PATH` the wide one is also copied to PATH
//! (how README's `docs/dashboard.png` is made:
//! `SWITCHYARD_DASHBOARD_PNG=docs/dashboard.png cargo test -p switchyard --test all -- dashboard`).

use std::path::Path;
use std::process::Command;

/// `tests/dashboard/`, the browser scripts, with playwright-core installed
/// (`npm ci` the first time).
///
/// # Panics
/// When npm is missing or fails (test set-up).
pub fn browser_harness() -> std::path::PathBuf {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/dashboard");
    if !harness.join("node_modules/playwright-core").is_dir() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&harness)
            .status()
            .expect("npm (Debian: apt-get install nodejs npm)");
        assert!(status.success(), "npm ci in {}", harness.display());
    }
    harness
}

#[test]
fn the_dashboard_charts_traffic_shows_the_canary_split_health_and_drains_in_chromium() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let harness = browser_harness();
    let (demo, proxy) = crate::demo();
    let line = demo.wait_for_log("dashboard:");
    let admin = line
        .split("dashboard:")
        .nth(1)
        .map(|s| s.trim().trim_end_matches("/dashboard").to_string())
        .unwrap_or_default();
    let shots = workspace.join("target/dashboard");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("target/dashboard");
    let output = Command::new("node")
        .arg(harness.join("check.mjs"))
        .args([admin.as_str(), "demo"])
        .arg(&shots)
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
    assert_eq!(
        seen["routeRow"], "0demo–",
        "route 0, pool demo, no filters: {seen}"
    );
    assert_eq!(seen["after"], "draining", "{seen}");
    assert_eq!(seen["drainedInApi"], true, "{seen}");
    assert_eq!(seen["killedState"], "unhealthy", "{seen}");
    let share = seen["canaryShare"].as_f64().unwrap_or_default();
    assert!((share - 20.0).abs() <= 6.0, "{seen}");
    assert!(
        seen["chartPoints"]
            .as_object()
            .is_some_and(|c| c.values().any(|p| p.as_u64() >= Some(3))),
        "{seen}"
    );
    assert!(
        seen["bannerText"]
            .as_str()
            .is_some_and(|b| b.contains("unreachable")),
        "{seen}"
    );
    for shot in ["dashboard.png", "dashboard-narrow.png"] {
        assert!(
            std::fs::metadata(shots.join(shot)).is_ok_and(|m| m.len() > 0),
            "{shot}"
        );
    }
    if let Some(path) = std::env::var_os("SWITCHYARD_DASHBOARD_PNG") {
        std::fs::copy(shots.join("dashboard.png"), workspace.join(path))
            .expect("copy the screenshot");
    }
}
