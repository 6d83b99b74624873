//! A balancer plugin: ranks the candidates of each request, best first.

use switchyard_sdk::{Balancer, EndpointId, EndpointStats, PluginError, RequestInfo};

struct Plugin;

impl Balancer for Plugin {
    fn new(_config: &str) -> Result<Self, PluginError> {
        Ok(Plugin)
    }

    /// Fewest requests in flight first.
    fn pick(
        &mut self,
        _request: &RequestInfo,
        candidates: &[EndpointStats],
        limit: u32,
    ) -> Result<Vec<EndpointId>, PluginError> {
        let mut ranked: Vec<(u32, EndpointId)> = candidates.iter().map(|c| (c.in_flight, c.id)).collect();
        ranked.sort_unstable();
        Ok(ranked.into_iter().map(|(_, id)| id).take(limit as usize).collect())
    }
}

switchyard_sdk::export_balancer!(Plugin);
