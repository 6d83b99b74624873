//! A real nginx (Debian's package) serving HTTPS with HTTP/2, as an
//! instance behind Switchyard.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::pki::Issued;

/// A running nginx; stopped when dropped.
pub struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    /// Starts nginx (one worker) under `dir` on a free port of 127.0.0.1,
    /// speaking TLS with `cert` (which should name `127.0.0.1`) and HTTP/2
    /// or HTTP/1.1 by ALPN; it answers every request `nginx PROTOCOL`.
    ///
    /// # Panics
    /// When nginx is missing or does not listen within a minute (test set-up).
    pub fn start_tls(dir: &Path, cert: &Issued) -> Self {
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).expect("nginx dir");
        // A free port: bound, read, released for nginx.
        let port = crate::free_port();
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1; user root; daemon off; pid {pid}; error_log {log};\n\
                 events {{ worker_connections 256; }}\n\
                 http {{ access_log off;\n\
                   server {{ listen 127.0.0.1:{port} ssl http2;\n\
                     ssl_certificate {cert}; ssl_certificate_key {key};\n\
                     location / {{ return 200 \"nginx $server_protocol\"; }} }} }}\n",
                pid = prefix.join("nginx.pid").display(),
                log = prefix.join("logs/error.log").display(),
                cert = cert.cert_file.display(),
                key = cert.key_file.display(),
            ),
        )
        .expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx)");
        crate::wait_listening(port, "nginx");
        Self { child, port }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
