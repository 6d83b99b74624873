//! Compiles the example plugins to components: `canary-split` is embedded for
//! `switchyard demo`; all are named by `SWITCHYARD_<NAME>_WASM` for the benches.

use std::path::Path;

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let workspace = Path::new(&manifest_dir).join("..");
    match switchyard_sdk_build::Components::new(&workspace)
        .package("plugins/canary-split")
        .package("plugins/latency-p2c")
        .package("plugins/label-affinity")
        .package("plugins/mcp-federation")
        .build()
    {
        Ok(built) => {
            for component in built {
                println!(
                    "cargo:rustc-env=SWITCHYARD_{}_WASM={}",
                    component.package.to_uppercase().replace('-', "_"),
                    component.path.display()
                );
            }
        }
        Err(e) => {
            println!("cargo:warning={e}");
            std::process::exit(1);
        }
    }
}
