//! Compiles the example plugins and the test fixtures to `wasm32-wasip2`
//! components and writes their paths as constants (`fixtures.rs` in OUT_DIR).

use std::fmt::Write as _;
use std::path::Path;

const COMPONENTS: &[&str] = &[
    "plugins/canary-split",
    "plugins/latency-p2c",
    "plugins/label-affinity",
    "plugins/json-health",
    "plugins/retry-schedule",
    "plugins/mcp-federation",
    "plugins/api-version-router",
    "plugins/mcp-redactor",
    "tests/fixtures/hostile-balancer",
    "tests/fixtures/hostile-health",
    "tests/fixtures/hostile-failover",
    "tests/fixtures/failover-static",
    "tests/fixtures/resolver-first",
    "tests/fixtures/hostile-resolver",
    "tests/fixtures/legacy-balancer",
    "tests/fixtures/legacy-failover",
    "tests/fixtures/test-filter",
];

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let workspace = Path::new(&manifest_dir).join("..");
    let built = COMPONENTS
        .iter()
        .fold(
            switchyard_sdk_build::Components::new(&workspace),
            |c, dir| c.package(dir),
        )
        .build();
    let built = match built {
        Ok(built) => built,
        Err(e) => {
            println!("cargo:warning={e}");
            std::process::exit(1);
        }
    };
    let mut out = String::new();
    for component in built {
        let _ = writeln!(
            out,
            "/// The `{}` component.\npub const {}: &str = {:?};",
            component.package,
            component.package.to_uppercase().replace('-', "_"),
            component.path.display().to_string()
        );
    }
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    if let Err(e) = std::fs::write(Path::new(&out_dir).join("fixtures.rs"), out) {
        println!("cargo:warning=cannot write fixtures.rs: {e}");
        std::process::exit(1);
    }
}
