//! Memory across plugin reloads: builds a pool on the `canary-split` plugin
//! through the control plane and reloads it (recompile, re-instantiate,
//! swap) again and again, printing the process's resident set size.
//!
//! Run: `cargo run --release -p switchyard --example reload_memory -- 1000`

use std::path::Path;

use switchyard::config::Config;
use switchyard::control::Control;
use switchyard::plugin::PluginHost;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let reloads: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let dir = tempfile::tempdir()?;
    let plugin = dir.path().join("canary_split.wasm");
    std::fs::write(&plugin, switchyard::demo::CANARY_SPLIT_WASM)?;
    let text = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n[pools.p]\n\
         strategy = {{ kind = \"plugin\", plugin = {{ path = {:?}, config = {{ percent = 10 }} }} }}\n\
         instances = [{{ url = \"http://127.0.0.1:9001\", labels = {{ track = \"stable\" }} }}, \
         {{ url = \"http://127.0.0.1:9002\", labels = {{ track = \"canary\" }} }}]\n",
        plugin.display().to_string()
    );
    let config = Config::parse(
        &text,
        Path::new("reload.toml"),
        dir.path(),
        &switchyard::loaders::Loaders,
    )?;
    let control = Control::new(
        config,
        PluginHost::new()?,
        switchyard::store::Store::File(None),
        0,
    )?;
    println!("reloads | RSS (MiB) | per reload (ms)");
    println!("---|---|---");
    let started = std::time::Instant::now();
    let mut last = (0, started);
    for i in 0..=reloads {
        if i > 0 {
            control.reload_plugin(&plugin)?;
        }
        if [0, 1, 10, 100, 250, 500, 750, 1_000, 2_000, 5_000].contains(&i) || i == reloads {
            let per = if i > last.0 {
                last.1.elapsed().as_secs_f64() * 1000.0 / (i - last.0) as f64
            } else {
                0.0
            };
            println!("{i} | {:.1} | {per:.1}", rss_kib() as f64 / 1024.0);
            last = (i, std::time::Instant::now());
        }
    }
    Ok(())
}
