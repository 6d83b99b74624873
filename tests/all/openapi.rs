//! The admin API does what its OpenAPI document says: Schemathesis
//! generates requests from `/openapi.json` (examples, boundary cases,
//! random data, and request sequences) against a real `switchyard` and
//! checks every answer — no server error, only documented statuses,
//! bodies and content types as documented, valid data accepted, invalid
//! data refused — with the exceptions justified in
//! `tests/schemathesis/schemathesis.toml`.

use std::process::Command;

use switchyard_tests::schemathesis;

use crate::{instances, serve, upstreams};

#[test]
fn the_admin_api_does_what_its_openapi_document_says() {
    let st = schemathesis::st();
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [[routes]]\npool = \"p\"\n\
             [pools.p]\ninstances = {}\n",
            instances(&ups)
        ),
    );
    // Run in the temporary directory: Schemathesis and Hypothesis keep
    // their caches in the working directory.
    let output = Command::new(st)
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(schemathesis::dir().join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/openapi.json", proxy.admin_url()))
        .args(["--max-examples", "5", "--workers", "2", "--seed", "1"])
        .args(["--no-color"])
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every operation but the plugin upload was tried.
    let tested: usize = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(tested >= 28, "{report}");
}
