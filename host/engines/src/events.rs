//! Events: what happened to pools, instances, breakers, plugins, processes
//! and the configuration, structured, with a severity, damped per instance.
//!
//! # The cooldown, and flapping
//!
//! An alert feed that repeats itself, or that follows an instance through
//! every flip of a failing check, is one operators learn to ignore. Within
//! `event_cooldown_ms` the [`EventBus`] therefore does two things, as
//! monitoring systems do (Nagios/Icinga flap detection, Alertmanager's
//! grouping):
//!
//! - **repeats** of the last event published for the same pool and
//!   instance (the same kind) are logged at debug level only;
//! - **flapping**: once one instance changed health state
//!   ([`EventKind::is_health_state`]) [`FLAP_TRANSITIONS`] times within the
//!   cooldown, one `flapping` warning is published and its further
//!   transitions are held; once it has stayed in one state for the
//!   cooldown, that state is published (the trailing edge, so the last
//!   event of an instance always says what `/v1/status` says). A held
//!   transition into a state worse than any of the episode (a severity
//!   higher than all seen) is still published at once.
//!
//! The first transition into a worse state is never delayed: holding
//! starts only once an instance has flapped. Configuration and process
//! events are never merged or held (each restart of a crash loop is one).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// How bad an event is (ordered: `Info < Warning < Critical`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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
    /// The instance changed health state [`FLAP_TRANSITIONS`] times within
    /// the cooldown: its transitions are held until it is stable.
    Flapping,
    /// A route's filter refused a request (an error answer of its own, or
    /// a filter plugin's 4xx/5xx); the subject is the route and the filter,
    /// so the cooldown merges a burst into one.
    FilterRefused,
    /// A `rate-limit` filter's Redis stopped answering: its limits are
    /// enforced locally, each replica its share.
    RateLimitLocal,
    /// A `rate-limit` filter's Redis answers again: its limits are global.
    RateLimitGlobal,
}

impl EventKind {
    /// The family of the kind, for filters: `health` (checks, ejections,
    /// panic mode, trends), `failover` (breakers), `plugin` (faults),
    /// `mcp` (MCP routes), `process` (managed upstreams), `filter` (route
    /// filters' refusals) or `config`.
    pub fn category(self) -> &'static str {
        match self {
            EventKind::BreakerOpen | EventKind::BreakerHalfOpen | EventKind::BreakerClosed => {
                "failover"
            }
            EventKind::ConfigChanged => "config",
            EventKind::PluginFault | EventKind::PluginQuarantined => "plugin",
            EventKind::McpTargetFailed | EventKind::McpNameConflict => "mcp",
            EventKind::FilterRefused | EventKind::RateLimitLocal | EventKind::RateLimitGlobal => {
                "filter"
            }
            EventKind::ProcessStarted
            | EventKind::ProcessExited
            | EventKind::ProcessRestarted
            | EventKind::ProcessCrashLoop => "process",
            _ => "health",
        }
    }

    /// Whether the kind is a change of an instance's health state (what
    /// flap detection counts): healthy, unhealthy, degraded, ejected,
    /// returned.
    pub fn is_health_state(self) -> bool {
        matches!(
            self,
            EventKind::Healthy
                | EventKind::Unhealthy
                | EventKind::Degraded
                | EventKind::Ejected
                | EventKind::Returned
        )
    }

    /// Whether the cooldown never merges or holds the kind: configuration
    /// changes, flapping notices, and process events (each restart is news).
    fn is_never_damped(self) -> bool {
        matches!(self, EventKind::ConfigChanged | EventKind::Flapping)
            || self.category() == "process"
    }
}

/// Health-state changes of one instance within the cooldown that make it
/// flapping (two round trips, down-up-down-up).
pub const FLAP_TRANSITIONS: usize = 4;

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

/// What the cooldown remembers of one subject.
#[derive(Default)]
struct Track {
    /// The kind of the last event published, and when.
    last: Option<(EventKind, Instant)>,
    /// Its last health state reported (published or held).
    state: Option<EventKind>,
    /// When its health state changed within the cooldown, and how bad
    /// the new state was.
    transitions: VecDeque<(Instant, Severity)>,
    /// Set while it flaps.
    flap: Option<Flap>,
}

/// One flapping episode of an instance.
struct Flap {
    /// The latest transition, held until the instance is stable.
    held: Option<HealthEvent>,
    /// Counts held transitions: the trailing-edge timer that finds the
    /// count it started with publishes.
    generation: u64,
    /// The worst severity of the episode's transitions.
    worst: Severity,
}

/// Publishes health events to the log and to subscribers, damped by the
/// cooldown (see the [module docs](self)).
pub struct EventBus {
    tx: broadcast::Sender<HealthEvent>,
    cooldown: Duration,
    tracks: Arc<Mutex<HashMap<Subject, Track>>>,
}

impl EventBus {
    /// A bus keeping up to `capacity` unread events per subscriber, with
    /// the given per-instance cooldown (zero: every event published).
    pub fn new(capacity: usize, cooldown: Duration) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            cooldown,
            tracks: Arc::default(),
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.tx.subscribe()
    }

    /// Logs and publishes `event`, unless the cooldown merges or holds it.
    pub fn publish(&self, event: HealthEvent) {
        if event.kind.is_never_damped() || self.cooldown.is_zero() {
            return emit(&self.tx, event);
        }
        let subject = (event.pool.clone(), event.instance.clone());
        let now = Instant::now();
        let mut tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        let track = tracks.entry(subject.clone()).or_default();
        // Holding a transition needs a runtime for its trailing edge; off
        // one (a caller outside Tokio), events are only merged.
        if event.kind.is_health_state()
            && event.instance.is_some()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            track
                .transitions
                .retain(|(at, _)| now.duration_since(*at) < self.cooldown);
            if track.state.replace(event.kind) != Some(event.kind) {
                track.transitions.push_back((now, event.severity));
            }
            if let Some(flap) = &mut track.flap {
                flap.generation += 1;
                let generation = flap.generation;
                let news = if event.severity > flap.worst {
                    // Worse than anything of the episode: news at once.
                    flap.worst = event.severity;
                    flap.held = None;
                    track.last = Some((event.kind, now));
                    Some(event)
                } else {
                    tracing::debug!(pool = %event.pool, kind = ?event.kind, "flapping instance's transition held: {}", event.message);
                    flap.held = Some(event);
                    None
                };
                drop(tracks);
                if let Some(event) = news {
                    emit(&self.tx, event);
                }
                return self.publish_when_stable(&runtime, subject, generation);
            }
            if track.transitions.len() >= FLAP_TRANSITIONS {
                let flapping = HealthEvent::new(
                    &event.pool,
                    event.instance.as_deref(),
                    EventKind::Flapping,
                    Severity::Warning,
                    format!(
                        "flapping: {} health-state changes within {} ms; its transitions are held until it has kept one state for {} ms",
                        track.transitions.len(),
                        self.cooldown.as_millis(),
                        self.cooldown.as_millis()
                    ),
                );
                let worst = track.transitions.iter().map(|(_, s)| *s).max();
                track.flap = Some(Flap {
                    worst: worst.unwrap_or(event.severity),
                    held: Some(event),
                    generation: 0,
                });
                drop(tracks);
                emit(&self.tx, flapping);
                return self.publish_when_stable(&runtime, subject, 0);
            }
        }
        if let Some((kind, at)) = track.last
            && kind == event.kind
            && now.duration_since(at) < self.cooldown
        {
            tracing::debug!(pool = %event.pool, kind = ?event.kind, "repeated health event within cooldown: {}", event.message);
            return;
        }
        track.last = Some((event.kind, now));
        drop(tracks);
        emit(&self.tx, event);
    }

    /// After the cooldown (a task on `runtime`), publishes the held
    /// transition of `subject` if none came after the one numbered
    /// `generation`, and ends its episode.
    fn publish_when_stable(
        &self,
        runtime: &tokio::runtime::Handle,
        subject: Subject,
        generation: u64,
    ) {
        let (tracks, tx, cooldown) = (Arc::clone(&self.tracks), self.tx.clone(), self.cooldown);
        runtime.spawn(async move {
            tokio::time::sleep(cooldown).await;
            let mut all = tracks.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(track) = all.get_mut(&subject) else {
                return;
            };
            if track
                .flap
                .as_ref()
                .is_none_or(|f| f.generation != generation)
            {
                return;
            }
            let held = track.flap.take().and_then(|f| f.held);
            track.transitions.clear();
            if let Some(mut event) = held {
                track.last = Some((event.kind, Instant::now()));
                drop(all);
                event.message = format!(
                    "stable for {} ms after flapping: {}",
                    cooldown.as_millis(),
                    event.message
                );
                emit(&tx, event);
            }
        });
    }
}

/// Logs `event` at its severity's level and sends it to the subscribers.
fn emit(tx: &broadcast::Sender<HealthEvent>, event: HealthEvent) {
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
    let _ = tx.send(event);
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

    fn drain(rx: &mut broadcast::Receiver<HealthEvent>) -> Vec<EventKind> {
        let mut seen = Vec::new();
        while let Ok(e) = rx.try_recv() {
            seen.push(e.kind);
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_instance_gives_one_notice_then_its_state_once_stable() {
        use EventKind::{Flapping, Healthy, Unhealthy};
        let bus = EventBus::new(64, Duration::from_millis(2_500));
        let mut rx = bus.subscribe();
        let flip = |kind| {
            let severity = if kind == Healthy {
                Severity::Info
            } else {
                Severity::Critical
            };
            HealthEvent::new("p", Some("http://a"), kind, severity, String::new())
        };
        for kind in [
            Unhealthy, Healthy, Unhealthy, Healthy, Unhealthy, Healthy, Unhealthy,
        ] {
            bus.publish(flip(kind));
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        assert_eq!(drain(&mut rx), [Unhealthy, Healthy, Unhealthy, Flapping]);
        // Stable for the cooldown: its current state, once.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(drain(&mut rx), [Unhealthy]);
        // A new change after that is published at once.
        bus.publish(flip(Healthy));
        assert_eq!(drain(&mut rx), [Healthy]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worse_state_while_flapping_is_published_at_once() {
        use EventKind::{Degraded, Flapping, Healthy, Unhealthy};
        let bus = EventBus::new(64, Duration::from_secs(10));
        let mut rx = bus.subscribe();
        for (kind, severity) in [
            (Degraded, Severity::Warning),
            (Healthy, Severity::Info),
            (Degraded, Severity::Warning),
            (Healthy, Severity::Info),
            (Unhealthy, Severity::Critical),
        ] {
            bus.publish(HealthEvent::new(
                "p",
                Some("http://a"),
                kind,
                severity,
                String::new(),
            ));
        }
        assert_eq!(
            drain(&mut rx),
            [Degraded, Healthy, Degraded, Flapping, Unhealthy]
        );
    }

    #[test]
    fn process_events_are_never_merged() {
        let bus = EventBus::new(16, Duration::from_secs(60));
        let mut rx = bus.subscribe();
        for _ in 0..3 {
            bus.publish(HealthEvent::new(
                "p",
                None,
                EventKind::ProcessRestarted,
                Severity::Warning,
                String::new(),
            ));
        }
        assert_eq!(drain(&mut rx).len(), 3);
    }
}
