//! TLS: termination on listeners (SNI, ALPN, versions, mTLS, reloads) with
//! curl and `openssl s_client` as clients, and TLS to `https://` instances.
//! Certificates are made at test time (rcgen).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_tests::pki::{Issued, Pki, Usage};
use switchyard_tests::upstream::Upstream;

use crate::{client, serve};

/// The port of `url` (`https://127.0.0.1:PORT`).
pub fn port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// Runs `program args`; (exit status success, stdout, stderr).
async fn run(program: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the client finished")
        .expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl to `https://NAME:PORT/PATH` resolved to 127.0.0.1, trusting `ca`,
/// with `extra` arguments; prints the HTTP version, the status, and the
/// headers the upstream saw (`x-seen-*`) and the body.
pub async fn curl(
    name: &str,
    port: u16,
    path: &str,
    ca: &Path,
    extra: &[&str],
) -> (bool, String, String) {
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}{path}");
    let mut args = vec![
        "-sS",
        "--max-time",
        "30",
        "--resolve",
        &resolve,
        "--cacert",
        ca.to_str().unwrap(),
        "-D",
        "-",
        "-w",
        "\nversion=%{http_version}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    run("curl", &args, "").await
}

/// curl's arguments that show the client certificate `issued`.
pub fn client_cert(issued: &Issued) -> [&str; 4] {
    [
        "--cert",
        issued.cert_file.to_str().expect("a UTF-8 path"),
        "--key",
        issued.key_file.to_str().expect("a UTF-8 path"),
    ]
}

/// `[[listeners]]` with TLS `tls` (a TOML inline table) and one catch-all
/// route to pool `p` over `instances`.
fn tls_config(tls: &str, instances: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\ntls = {tls}\n[[routes]]\npool = \"p\"\n\
         [pools.p]\ninstances = {instances}\n"
    )
}

/// `issued` as a `certificates` entry of a listener's `tls`.
pub fn cert_table(issued: &Issued) -> String {
    format!(
        "{{ cert_file = \"{}\", key_file = \"{}\" }}",
        issued.cert_file.display(),
        issued.key_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_chooses_its_certificate_by_sni_speaks_h2_and_refuses_tls_1_1() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "site");
    let a = pki.issue("a", "a.test", &["a.test"], Usage::Server, false);
    let b = pki.issue("b", "b.test", &["*.b.test"], Usage::Server, false);
    let up = Upstream::start("plain");
    let tls = format!(
        "{{ certificates = [{}, {}] }}",
        cert_table(&a),
        cert_table(&b)
    );
    let proxy = serve(
        &dir,
        &tls_config(&tls, &format!("[{{ url = \"{}\" }}]", up.url())),
    );
    assert!(proxy.url.starts_with("https://"), "{}", proxy.url);
    let port = port(&proxy.url);
    let ca = pki.ca_file();

    // ALPN: curl offers h2 and gets it; HTTP/1.1 when it offers only that.
    let (ok, out, err) = curl("a.test", port, "/", &ca, &[]).await;
    assert!(ok, "{err}");
    assert!(out.contains("version=2"), "{out}");
    assert!(
        out.to_lowercase()
            .contains("x-seen-x-forwarded-proto: https"),
        "{out}"
    );
    assert!(out.contains("plain"), "{out}");
    let (ok, out, err) = curl("a.test", port, "/", &ca, &["--http1.1"]).await;
    assert!(ok && out.contains("version=1.1"), "{out}{err}");

    // SNI picks the wildcard certificate for x.b.test (curl checks the name).
    let (ok, out, err) = curl("x.b.test", port, "/", &ca, &[]).await;
    assert!(ok, "{out}{err}");
    // A name no certificate covers gets the first one.
    let connect = format!("127.0.0.1:{port}");
    let (_, out, _) = run(
        "openssl",
        &["s_client", "-connect", &connect, "-servername", "c.test"],
        "",
    )
    .await;
    assert!(out.contains("CN = a.test"), "{out}");
    let (_, out, _) = run(
        "openssl",
        &["s_client", "-connect", &connect, "-servername", "y.b.test"],
        "",
    )
    .await;
    assert!(out.contains("CN = b.test"), "{out}");

    // TLS 1.2 is accepted; TLS 1.1 is refused (the client allows it).
    let (_, out, _) = run(
        "openssl",
        &["s_client", "-connect", &connect, "-tls1_2"],
        "",
    )
    .await;
    assert!(
        out.contains("Protocol  : TLSv1.2") && !out.contains("Cipher is (NONE)"),
        "{out}"
    );
    let (ok, out, _) = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ],
        "",
    )
    .await;
    // (openssl prints the protocol it offered; the cipher says no session.)
    assert!(!ok && out.contains("Cipher is (NONE)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_client_certificate_forwards_its_identity_and_routes_by_its_san() {
    let dir = tempfile::tempdir().unwrap();
    let site = Pki::new(dir.path(), "site");
    let server = site.issue("server", "a.test", &["a.test"], Usage::Server, false);
    let clients = Pki::new(dir.path(), "clients");
    let alice = clients.issue(
        "alice",
        "alice",
        &["spiffe://test/alice"],
        Usage::Client,
        false,
    );
    let bob = clients.issue("bob", "bob", &["bob.clients.test"], Usage::Client, false);
    let (alice_up, others_up) = (
        Upstream::start("alice-pool"),
        Upstream::start("others-pool"),
    );
    let tls = |auth: &str| {
        format!(
            "{{ certificates = [{}], client_ca_file = \"{}\", client_auth = \"{auth}\" }}",
            cert_table(&server),
            clients.ca_file().display()
        )
    };
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\ntls = {}\n\
         [[listeners]]\nlisten = \"127.0.0.1:0\"\ntls = {}\n\
         [[routes]]\nmatch = {{ client_san = \"spiffe://test/alice\" }}\npool = \"alice\"\n\
         [[routes]]\npool = \"others\"\n\
         [pools.alice]\ninstances = [{{ url = \"{}\" }}]\n\
         [pools.others]\ninstances = [{{ url = \"{}\" }}]\n",
        tls("required"),
        tls("optional"),
        alice_up.url(),
        others_up.url()
    );
    let proxy = serve(&dir, &config);
    let required = port(&proxy.url);
    // The second listener's line, the one on another port.
    let optional = port(
        proxy
            .wait_for(
                |l| l.contains("listening on https://") && !l.ends_with(&format!(":{required}")),
                "the second listener",
            )
            .rsplit_once("listening on ")
            .map(|(_, url)| url.trim())
            .expect("url"),
    );
    let ca = site.ca_file();
    let alice_args = client_cert(&alice);
    let bob_args = client_cert(&bob);

    // No certificate: no connection.
    let (ok, out, _) = curl("a.test", required, "/", &ca, &[]).await;
    assert!(!ok, "served without a client certificate: {out}");
    // Alice's SPIFFE id routes to her pool; her identity reaches it, and
    // a header she forges does not.
    let mut extra = alice_args.to_vec();
    extra.extend(["-H", "x-forwarded-client-cert: By=forged"]);
    let (ok, out, err) = curl("a.test", required, "/", &ca, &extra).await;
    assert!(ok, "{err}");
    assert!(out.contains("alice-pool"), "{out}");
    let xfcc = out
        .lines()
        .find(|l| {
            l.to_lowercase()
                .starts_with("x-seen-x-forwarded-client-cert:")
        })
        .unwrap_or_else(|| panic!("no client cert header reached the instance: {out}"));
    assert!(xfcc.contains("URI=\"spiffe://test/alice\""), "{xfcc}");
    assert!(
        xfcc.contains("Subject=\"CN=alice\"") && xfcc.contains("Hash="),
        "{xfcc}"
    );
    assert!(!xfcc.contains("forged"), "{xfcc}");
    // Bob has no SPIFFE id: the next route.
    let (ok, out, err) = curl("a.test", required, "/", &ca, &bob_args).await;
    assert!(ok && out.contains("others-pool"), "{out}{err}");
    assert!(
        out.to_lowercase().contains("dns=\"bob.clients.test\""),
        "{out}"
    );
    // Optional: without a certificate, served with no identity.
    let (ok, out, err) = curl(
        "a.test",
        optional,
        "/",
        &ca,
        &["-H", "x-forwarded-client-cert: forged"],
    )
    .await;
    assert!(ok && out.contains("others-pool"), "{out}{err}");
    assert!(
        !out.to_lowercase()
            .contains("x-seen-x-forwarded-client-cert"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_speaks_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let site = Pki::new(dir.path(), "site");
    let server = site.issue("admin", "admin.test", &["admin.test"], Usage::Server, false);
    let operators = Pki::new(dir.path(), "operators");
    let operator = operators.issue("operator", "ops", &["ops.test"], Usage::Client, false);
    let up = Upstream::start("plain");
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
         [pools.p]\ninstances = [{{ url = \"{}\" }}]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntls = {{ certificates = [{}], client_ca_file = \"{}\" }}\n",
        up.url(),
        cert_table(&server),
        operators.ca_file().display()
    );
    let proxy = serve(&dir, &config);
    let admin = proxy.admin_url();
    assert!(admin.starts_with("https://"), "{admin}");
    let port = port(&admin);
    let ca = site.ca_file();
    let (ok, _, _) = curl("admin.test", port, "/ready", &ca, &[]).await;
    assert!(!ok, "the admin API answered a client without a certificate");
    let with_cert = client_cert(&operator);
    let (ok, out, err) = curl("admin.test", port, "/v1/status", &ca, &with_cert).await;
    assert!(ok && out.contains("HTTP/2 200"), "{out}{err}");
    assert!(out.contains("\"pools\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_instances_are_verified_and_an_untrusted_one_is_a_connect_failure() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "upstreams");
    let cert = pki.issue("up", "127.0.0.1", &["127.0.0.1"], Usage::Server, false);
    let up = Upstream::start_tls("secure", &cert);
    assert!(up.url().starts_with("https://"));
    // One worker: idle connections are kept per worker thread, and the
    // reuse below is of one thread's.
    let config = format!(
        "[runtime]\nworker_threads = 1\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = {{ path_prefix = \"/trusted\" }}\npool = \"trusted\"\n\
         [[routes]]\npool = \"untrusted\"\n\
         [pools.trusted]\ninstances = [{{ url = \"{url}\" }}]\ntls = {{ ca_file = \"{ca}\" }}\n\
         [pools.untrusted]\ninstances = [{{ url = \"{url}\" }}]\n",
        url = up.url(),
        ca = pki.ca_file().display()
    );
    let proxy = serve(&dir, &config);
    let http = client();
    for _ in 0..3 {
        let response = http
            .get(format!("{}/trusted", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "secure");
    }
    // Kept alive: three requests, one TLS connection.
    assert_eq!(up.connections(), 1);
    // Mozilla's roots do not know the test CA: the handshake fails, which
    // is a connect failure (502, nothing was sent).
    let response = http
        .get(format!("{}/other", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "no_upstream", "{body}");
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_shows_its_client_certificate_to_instances_that_ask() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "upstreams");
    let cert = pki.issue("up", "127.0.0.1", &["127.0.0.1"], Usage::Server, false);
    let proxies = Pki::new(dir.path(), "proxies");
    let switchyard = proxies.issue(
        "sy",
        "switchyard",
        &["switchyard.test"],
        Usage::Client,
        false,
    );
    let up = Upstream::start_mtls("mutual", &cert, &proxies.ca_file());
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = {{ path_prefix = \"/with\" }}\npool = \"with\"\n\
         [[routes]]\npool = \"without\"\n\
         [pools.with]\ninstances = [{{ url = \"{url}\" }}]\n\
         tls = {{ ca_file = \"{ca}\", cert_file = \"{cert}\", key_file = \"{key}\" }}\n\
         [pools.without]\ninstances = [{{ url = \"{url}\" }}]\ntls = {{ ca_file = \"{ca}\" }}\n",
        url = up.url(),
        ca = pki.ca_file().display(),
        cert = switchyard.cert_file.display(),
        key = switchyard.key_file.display(),
    );
    let proxy = serve(&dir, &config);
    let http = client();
    let response = http
        .get(format!("{}/with", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "mutual");
    // Without a client certificate the instance ends the handshake.
    let response = http
        .get(format!("{}/other", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_offered_to_new_handshakes_while_open_connections_live_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "site");
    let first = pki.issue("site", "first", &["a.test"], Usage::Server, false);
    let up = Upstream::start("plain");
    let tls = format!("{{ certificates = [{}] }}", cert_table(&first));
    let proxy = serve(
        &dir,
        &tls_config(&tls, &format!("[{{ url = \"{}\" }}]", up.url())),
    );
    let port = port(&proxy.url);
    let roots = roots_of(&pki);
    let (mut open, first_der) = tls_connection(port, &roots).await;
    assert_eq!(send(&mut open).await, 200);

    // Replace both files (another key and subject, same name), as a
    // renewal does: written aside, then renamed over.
    let second = pki.issue("second", "second", &["a.test"], Usage::Server, false);
    std::fs::rename(&second.key_file, &first.key_file).unwrap();
    std::fs::rename(&second.cert_file, &first.cert_file).unwrap();
    proxy.wait_for_log("TLS certificates reloaded");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (mut fresh, der) = tls_connection(port, &roots).await;
        if der != first_der {
            assert_eq!(send(&mut fresh).await, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new handshakes still get the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before the change still serves.
    assert_eq!(send(&mut open).await, 200);
}

/// The roots a client trusts: `pki`'s CA.
fn roots_of(pki: &Pki) -> Arc<rustls::RootCertStore> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.ca_file()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(roots)
}

/// An HTTP/1.1 connection over TLS to `a.test` on 127.0.0.1:`port`, and
/// the DER of the certificate the server showed.
async fn tls_connection(
    port: u16,
    roots: &Arc<rustls::RootCertStore>,
) -> (
    hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    Vec<u8>,
) {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(Arc::clone(roots))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let der = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    (sender, der)
}

/// GET / on `sender`; the status.
async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
) -> u16 {
    let request = http::Request::get("/")
        .header("host", "a.test")
        .body(http_body_util::Empty::new())
        .unwrap();
    sender
        .send_request(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_are_checked_at_load_and_an_expired_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "site");
    let a = pki.issue("a", "a.test", &["a.test"], Usage::Server, false);
    let b = pki.issue("b", "b.test", &["b.test"], Usage::Server, false);
    let old = pki.issue("old", "old.test", &["old.test"], Usage::Server, true);
    let up = Upstream::start("plain");
    let instances = format!("[{{ url = \"{}\" }}]", up.url());

    // A key that belongs to another certificate.
    let mismatched = format!(
        "{{ certificates = [{{ cert_file = \"{}\", key_file = \"{}\" }}] }}",
        a.cert_file.display(),
        b.key_file.display()
    );
    let path =
        switchyard_tests::process::write_config(dir.path(), &tls_config(&mismatched, &instances));
    let out = std::process::Command::new(crate::BINARY)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("listeners[0].tls.certificates[0].key_file"),
        "{text}"
    );
    assert!(text.contains("does not match the certificate"), "{text}");

    // An expired certificate is served, with a warning giving its date.
    let tls = format!("{{ certificates = [{}] }}", cert_table(&old));
    let proxy = serve(&dir, &tls_config(&tls, &instances));
    let line = proxy.wait_for_log("certificate has expired");
    assert!(line.contains("2020"), "{line}");
}

/// Replaces `issued`'s certificate and key with a new pair, as a renewal
/// does: written aside, then renamed over.
fn renew(pki: &Pki, issued: &Issued) {
    let next = pki.issue("renewed", "renewed", &["a.test"], Usage::Server, false);
    std::fs::rename(&next.key_file, &issued.key_file).unwrap();
    std::fs::rename(&next.cert_file, &issued.cert_file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replaced_certificate_is_one_reload_and_then_the_file_is_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "site");
    // Certificate and key in one file, so that a renewal is one change.
    let bundle = |issued: &Issued| {
        let mut pem = std::fs::read(&issued.cert_file).unwrap();
        pem.extend(std::fs::read(&issued.key_file).unwrap());
        pem
    };
    let site = dir.path().join("site-bundle.pem");
    let first = pki.issue("first", "first", &["a.test"], Usage::Server, false);
    std::fs::write(&site, bundle(&first)).unwrap();
    let up = Upstream::start("plain");
    let tls = format!(
        "{{ certificates = [{{ cert_file = \"{0}\", key_file = \"{0}\" }}] }}",
        site.display()
    );
    let proxy = serve(
        &dir,
        &tls_config(&tls, &format!("[{{ url = \"{}\" }}]", up.url())),
    );
    // Renewed as `cp new.pem c.tmp && mv c.tmp cert.pem` does it.
    let second = pki.issue("second", "second", &["a.test"], Usage::Server, false);
    let temp = dir.path().join("c.tmp");
    std::fs::write(&temp, bundle(&second)).unwrap();
    std::fs::rename(&temp, &site).unwrap();
    proxy.wait_for_log("TLS certificates reloaded");
    // Absence needs a wait: a watcher that took its own reads for changes
    // read the file again within every debounce period (250 ms).
    let before = proxy.bytes_read();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let read = proxy.bytes_read() - before;
    let changes: Vec<String> = proxy
        .log()
        .into_iter()
        .filter(|l| l.contains("TLS certificates reloaded") || l.contains("TLS files changed"))
        .collect();
    assert_eq!(changes.len(), 1, "one change, one reload: {changes:?}");
    let size = std::fs::metadata(&site).unwrap().len();
    assert!(
        read < size,
        "{read} bytes read in 2 s with no change and no traffic (the file holds {size})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_however_the_config_file_is_named() {
    let up = Upstream::start("plain");
    // The config as `site.toml` from its own folder, `./NAME/site.toml`
    // from the folder above, and by its absolute path; the files it names
    // relative to itself, as README writes them.
    for how in ["site.toml", "./NAME/site.toml", "ABSOLUTE"] {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "site");
        let site = pki.issue("site", "first", &["a.test"], Usage::Server, false);
        let config = dir.path().join("site.toml");
        std::fs::write(
            &config,
            tls_config(
                "{ certificates = [{ cert_file = \"site.pem\", key_file = \"site.key\" }] }",
                &format!("[{{ url = \"{}\" }}]", up.url()),
            ),
        )
        .unwrap();
        let parent = dir.path().parent().unwrap();
        let name = dir.path().file_name().unwrap().to_str().unwrap();
        let (cwd, arg) = match how {
            "site.toml" => (dir.path(), "site.toml".to_string()),
            "ABSOLUTE" => (Path::new("/"), config.display().to_string()),
            _ => (parent, how.replace("NAME", name)),
        };
        let mut command = std::process::Command::new(crate::BINARY);
        command
            .current_dir(cwd)
            .args(["serve", "--config", arg.as_str()]);
        let proxy = switchyard_tests::process::Switchyard::start(command).listening();
        let roots = roots_of(&pki);
        let (_, before) = tls_connection(port(&proxy.url), &roots).await;
        renew(&pki, &site);
        proxy.wait_for(
            |l| l.contains("TLS certificates reloaded"),
            &format!("a reload with --config {arg} from {}", cwd.display()),
        );
        let (mut fresh, after) = tls_connection(port(&proxy.url), &roots).await;
        assert_ne!(
            before, after,
            "--config {arg}: the old certificate is still offered"
        );
        assert_eq!(send(&mut fresh).await, 200);
    }
}
