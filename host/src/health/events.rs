//! Health events: structured, with a severity, rate-limited per instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// How bad an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A recovery or a routine change.
    Info,
    /// Something to look at: a degrading trend, an ejection.
    Warning,
    /// Traffic is affected: an instance or a pool is down, panic mode.
    Critical,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Active checks passed `rise` times: back in rotation.
    Healthy,
    /// Active checks failed `fall` times: out of rotation.
    Unhealthy,
    /// Ejected by outlier detection.
    Ejected,
    /// Returned after an ejection.
    Returned,
    /// The pool entered panic mode.
    PanicOn,
    /// The pool left panic mode.
    PanicOff,
    /// The instance's trend turned degrading.
    Degrading,
    /// The instance's trend turned improving.
    Improving,
    /// The instance's trend turned stable.
    Stable,
    /// The trend predicts the instance unfit soon.
    Predicted,
    /// The instance's circuit breaker opened.
    BreakerOpen,
    /// The instance's circuit breaker is half-open (probing).
    BreakerHalfOpen,
    /// The instance's circuit breaker closed.
    BreakerClosed,
    /// A configuration change was applied (never rate-limited).
    ConfigChanged,
    /// A plugin faulted; the built-in served the decision.
    PluginFault,
    /// A plugin faulted repeatedly and is set aside for a while.
    PluginQuarantined,
    /// A health check judged an instance degraded (it is chosen last).
    Degraded,
    /// An MCP target failed a request fanned out to every target and was
    /// left out of the answer (`failure_mode = "open"`).
    McpTargetFailed,
    /// Several MCP targets list one name and `prefix = "never"`: it was
    /// left out.
    McpNameConflict,
    /// A pool's process was started.
    ProcessStarted,
    /// A pool's process exited or was stopped.
    ProcessExited,
    /// A pool's process was restarted.
    ProcessRestarted,
    /// A pool's process restarted too often and is left stopped.
    ProcessCrashLoop,
}

impl EventKind {
    /// The family of the kind, for filters: `health` (checks, ejections,
    /// panic mode, trends), `failover` (breakers), `plugin` (faults),
    /// `mcp` (MCP routes), `process` (managed upstreams) or `config`.
    pub fn category(self) -> &'static str {
        match self {
            EventKind::BreakerOpen | EventKind::BreakerHalfOpen | EventKind::BreakerClosed => {
                "failover"
            }
            EventKind::ConfigChanged => "config",
            EventKind::PluginFault | EventKind::PluginQuarantined => "plugin",
            EventKind::McpTargetFailed | EventKind::McpNameConflict => "mcp",
            EventKind::ProcessStarted
            | EventKind::ProcessExited
            | EventKind::ProcessRestarted
            | EventKind::ProcessCrashLoop => "process",
            _ => "health",
        }
    }
}

/// One health event.
#[derive(Debug, Clone, Serialize)]
pub struct HealthEvent {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    /// The pool.
    pub pool: String,
    /// The instance's URL, for instance events.
    pub instance: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// How bad it is.
    pub severity: Severity,
    /// A sentence for people.
    pub message: String,
}

impl HealthEvent {
    /// An event stamped now.
    pub fn new(
        pool: &str,
        instance: Option<&str>,
        kind: EventKind,
        severity: Severity,
        message: String,
    ) -> Self {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            at_ms,
            pool: pool.to_string(),
            instance: instance.map(str::to_string),
            kind,
            severity,
            message,
        }
    }
}

/// (pool, instance): whose events a cooldown merges.
type Subject = (String, Option<String>);

/// Publishes health events to the log and to subscribers.
///
/// The cooldown merges repeats: an event of the same kind as the last one
/// published for the same pool and instance, within `cooldown` of it, is
/// logged at debug level only and not published (an alert cooldown). Any
/// other kind — a change of state, better or worse — always goes through,
/// so the last event published for an instance always says its current
/// state (a flapping instance's last transition is never swallowed).
pub struct EventBus {
    tx: broadcast::Sender<HealthEvent>,
    cooldown: Duration,
    /// The last event published per subject: its kind and when.
    last: Mutex<HashMap<Subject, (EventKind, Instant)>>,
}

impl EventBus {
    /// A bus keeping up to `capacity` unread events per subscriber, with
    /// the given per-instance cooldown.
    pub fn new(capacity: usize, cooldown: Duration) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            cooldown,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.tx.subscribe()
    }

    /// Logs and publishes `event`, unless it repeats the last one of its
    /// subject within the cooldown.
    pub fn publish(&self, event: HealthEvent) {
        let subject = (event.pool.clone(), event.instance.clone());
        let now = Instant::now();
        {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if event.kind != EventKind::ConfigChanged
                && let Some((kind, at)) = last.get(&subject)
                && *kind == event.kind
                && now.duration_since(*at) < self.cooldown
            {
                tracing::debug!(pool = %event.pool, kind = ?event.kind, "repeated health event within cooldown: {}", event.message);
                return;
            }
            last.insert(subject, (event.kind, now));
        }
        let instance = event.instance.as_deref().unwrap_or("-");
        match event.severity {
            Severity::Info => {
                tracing::info!(pool = %event.pool, instance, kind = ?event.kind, "{}", event.message)
            }
            Severity::Warning => {
                tracing::warn!(pool = %event.pool, instance, kind = ?event.kind, "{}", event.message)
            }
            Severity::Critical => {
                tracing::error!(pool = %event.pool, instance, kind = ?event.kind, "{}", event.message)
            }
        }
        let _ = self.tx.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> HealthEvent {
        HealthEvent::new("p", Some("http://a"), kind, Severity::Info, String::new())
    }

    #[test]
    fn the_cooldown_merges_repeats_but_never_a_change_of_state() {
        let bus = EventBus::new(16, Duration::from_secs(60));
        let mut rx = bus.subscribe();
        for kind in [
            EventKind::Unhealthy,
            EventKind::Unhealthy,
            EventKind::Healthy,
            EventKind::Unhealthy,
            EventKind::Unhealthy,
        ] {
            bus.publish(event(kind));
        }
        let mut seen = Vec::new();
        while let Ok(e) = rx.try_recv() {
            seen.push(e.kind);
        }
        assert_eq!(
            seen,
            [
                EventKind::Unhealthy,
                EventKind::Healthy,
                EventKind::Unhealthy
            ],
            "the last event says the current state"
        );
    }
}
