//! A real gRPC server (tonic) serving the standard health service
//! (`grpc.health.v1.Health`: `Check`, and the server-streaming `Watch`),
//! on its own thread and runtime, plaintext HTTP/2 on `127.0.0.1:0`.

use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};
use tonic_health::ServingStatus;

/// A running gRPC server; stopped when dropped.
pub struct GrpcServer {
    addr: SocketAddr,
    status: mpsc::UnboundedSender<(String, ServingStatus)>,
    _stop: oneshot::Sender<()>,
}

impl GrpcServer {
    /// Starts a server whose health service reports `service` serving.
    ///
    /// # Panics
    /// When the thread, runtime or socket cannot be created (test set-up).
    pub fn start(service: &str) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (status, mut statuses) = mpsc::unbounded_channel::<(String, ServingStatus)>();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = service.to_string();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("gRPC runtime");
            runtime.block_on(async move {
                let (reporter, health) = tonic_health::server::health_reporter();
                reporter
                    .set_service_status(&service, ServingStatus::Serving)
                    .await;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind gRPC");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                tokio::spawn(async move {
                    while let Some((name, status)) = statuses.recv().await {
                        reporter.set_service_status(&name, status).await;
                    }
                });
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                tokio::select! {
                    served = tonic::transport::Server::builder()
                        .add_service(health)
                        .serve_with_incoming(incoming) => served.expect("gRPC server"),
                    _ = stopped => {},
                }
            });
        });
        Self {
            addr: addr_rx.recv().expect("gRPC address"),
            status,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes the health service report `status` for `service`.
    pub fn set_status(&self, service: &str, status: ServingStatus) {
        self.status
            .send((service.to_string(), status))
            .expect("the gRPC server runs");
    }
}
