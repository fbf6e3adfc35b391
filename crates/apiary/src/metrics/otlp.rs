//! OTLP/HTTP export with protobuf bodies: metric families pushed every interval to
//! `URL/v1/metrics`, and (for `apiary run`) decoded events as log records to `URL/v1/logs`.
//!
//! All network work happens on one exporter thread. Events reach it through a bounded queue
//! that the event path only ever `try_send`s into: a slow or absent collector costs dropped
//! records (counted), never a stalled ring buffer.

use super::proto::{self, any_value, metric, number_data_point};
use super::{Family, Kind, Value};
use prost::Message as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Events waiting for the exporter; beyond this they are dropped and counted.
const QUEUE: usize = 8192;
/// Log records per request.
const BATCH: usize = 512;
/// Events are sent at least this often, whatever the metrics interval.
const LOG_FLUSH: Duration = Duration::from_millis(500);
/// Attempts per request, with doubling pauses starting here.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Base URL; `/v1/metrics` and `/v1/logs` are appended.
    pub endpoint: String,
    pub interval: Duration,
    /// The resource's `service.name`.
    pub service: String,
}

/// What the exporter has done, for the run's own metrics and its summary.
#[derive(Debug, Default)]
pub struct OtlpStats {
    pub requests_sent: AtomicU64,
    pub requests_failed: AtomicU64,
    pub logs_dropped: AtomicU64,
}

enum Msg {
    Event { map: String, json: String, at: u64 },
    Stop,
}

/// The families to push, collected on the exporter thread when an interval is due.
pub type Source = Box<dyn Fn() -> Vec<Family> + Send>;

pub struct Exporter {
    tx: SyncSender<Msg>,
    stats: Arc<OtlpStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    pub fn start(mut cfg: OtlpConfig, source: Source) -> Exporter {
        // A zero interval would push in a busy loop.
        cfg.interval = cfg.interval.max(MIN_INTERVAL);
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let stats = Arc::new(OtlpStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("otlp".into())
            .spawn(move || Worker::new(cfg, source, st).run(rx))
            .ok();
        Exporter { tx, stats, thread }
    }

    pub fn stats(&self) -> Arc<OtlpStats> {
        self.stats.clone()
    }

    /// Queue one decoded event (its JSON object) as a log record; never blocks.
    pub fn event(&self, map: &str, json: String) {
        let msg = Msg::Event {
            map: map.to_string(),
            json,
            at: now_nanos(),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(msg) {
            self.stats.logs_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Send what is queued and the metrics one last time, then stop.
    pub fn finish(mut self) {
        // The queue may be full; the exporter drains it, so waiting here is bounded.
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    cfg: OtlpConfig,
    source: Source,
    stats: Arc<OtlpStats>,
    agent: ureq::Agent,
    start: u64,
    resource: proto::Resource,
    scope: proto::InstrumentationScope,
}

impl Worker {
    fn new(cfg: OtlpConfig, source: Source, stats: Arc<OtlpStats>) -> Worker {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let resource = proto::Resource {
            attributes: vec![kv("service.name", string(&cfg.service))],
        };
        Worker {
            cfg,
            source,
            stats,
            agent,
            start: now_nanos(),
            resource,
            scope: proto::InstrumentationScope {
                name: "apiary".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut next_metrics = Instant::now() + self.cfg.interval;
        let mut batch: Vec<proto::LogRecord> = Vec::new();
        let mut next_logs = Instant::now() + LOG_FLUSH;
        loop {
            let wake = next_metrics.min(next_logs);
            let msg = rx.recv_timeout(wake.saturating_duration_since(Instant::now()));
            match msg {
                Ok(Msg::Event { map, json, at }) => {
                    batch.push(log_record(&map, &json, at));
                    if batch.len() >= BATCH {
                        self.send_logs(&mut batch);
                    }
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    while let Ok(Msg::Event { map, json, at }) = rx.try_recv() {
                        batch.push(log_record(&map, &json, at));
                    }
                    self.send_logs(&mut batch);
                    self.send_metrics();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if now >= next_logs {
                self.send_logs(&mut batch);
                next_logs = now + LOG_FLUSH;
            }
            if now >= next_metrics {
                self.send_metrics();
                next_metrics = now + self.cfg.interval;
            }
        }
    }

    fn send_metrics(&mut self) {
        let families = (self.source)();
        let req = metrics_request(
            &families,
            self.resource.clone(),
            self.scope.clone(),
            self.start,
        );
        self.post("/v1/metrics", req.encode_to_vec());
    }

    fn send_logs(&mut self, batch: &mut Vec<proto::LogRecord>) {
        if batch.is_empty() {
            return;
        }
        let req = proto::ExportLogsServiceRequest {
            resource_logs: vec![proto::ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![proto::ScopeLogs {
                    scope: Some(self.scope.clone()),
                    log_records: std::mem::take(batch),
                }],
            }],
        };
        self.post("/v1/logs", req.encode_to_vec());
    }

    /// POST with a bounded number of attempts; 5xx, 429 and transport errors are retried.
    fn post(&self, path: &str, body: Vec<u8>) {
        let url = format!("{}{path}", self.cfg.endpoint.trim_end_matches('/'));
        let mut pause = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let r = self
                .agent
                .post(&url)
                .header("Content-Type", "application/x-protobuf")
                .send(&body[..]);
            let retry = match r {
                Ok(resp) if resp.status().is_success() => {
                    self.stats.requests_sent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    s == 429 || s >= 500
                }
                Err(_) => true,
            };
            if !retry || attempt == ATTEMPTS {
                break;
            }
            std::thread::sleep(pause);
            pause *= 2;
        }
        self.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn string(s: &str) -> proto::AnyValue {
    proto::AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

fn kv(k: &str, v: proto::AnyValue) -> proto::KeyValue {
    proto::KeyValue {
        key: k.to_string(),
        value: Some(v),
    }
}

/// A decoded JSON value as an attribute value: integers as ints, objects as key-value lists.
fn any(v: &serde_json::Value) -> proto::AnyValue {
    use serde_json::Value as J;
    let value = match v {
        J::Null => None,
        J::Bool(b) => Some(any_value::Value::BoolValue(*b)),
        J::Number(n) => Some(match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            // u64 beyond i64 and floats.
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
        }),
        J::String(s) => Some(any_value::Value::StringValue(s.clone())),
        J::Array(a) => Some(any_value::Value::ArrayValue(proto::ArrayValue {
            values: a.iter().map(any).collect(),
        })),
        J::Object(o) => Some(any_value::Value::KvlistValue(proto::KeyValueList {
            values: o.iter().map(|(k, v)| kv(k, any(v))).collect(),
        })),
    };
    proto::AnyValue { value }
}

/// One event: its fields as attributes, the map as event name, the JSON text as body.
fn log_record(map: &str, json: &str, at: u64) -> proto::LogRecord {
    let attributes = match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(o)) => o
            .iter()
            .filter(|(k, _)| k.as_str() != "_map")
            .map(|(k, v)| kv(k, any(v)))
            .collect(),
        _ => Vec::new(),
    };
    proto::LogRecord {
        time_unix_nano: at,
        observed_time_unix_nano: at,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(string(json)),
        attributes,
        event_name: map.to_string(),
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<proto::KeyValue> {
    labels.iter().map(|(k, v)| kv(k, string(v))).collect()
}

/// Counters as monotonic cumulative sums, gauges as gauges, histograms with explicit bounds.
pub(crate) fn metrics_request(
    families: &[Family],
    resource: proto::Resource,
    scope: proto::InstrumentationScope,
    start: u64,
) -> proto::ExportMetricsServiceRequest {
    let now = now_nanos();
    let number = |labels: &[(String, String)], v: f64| proto::NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(if v.fract() == 0.0 && v.abs() < 9.0e15 {
            number_data_point::Value::AsInt(v as i64)
        } else {
            number_data_point::Value::AsDouble(v)
        }),
    };
    let metrics = families
        .iter()
        .map(|f| {
            let points = || {
                f.series
                    .iter()
                    .filter_map(|s| match &s.value {
                        Value::Number(v) => Some(number(&s.labels, *v)),
                        Value::Histogram(_) => None,
                    })
                    .collect()
            };
            let data = match f.kind {
                Kind::Counter => metric::Data::Sum(proto::Sum {
                    data_points: points(),
                    aggregation_temporality: proto::CUMULATIVE,
                    is_monotonic: true,
                }),
                Kind::Gauge => metric::Data::Gauge(proto::Gauge {
                    data_points: points(),
                }),
                Kind::Histogram => metric::Data::Histogram(proto::Histogram {
                    data_points: f
                        .series
                        .iter()
                        .filter_map(|s| match &s.value {
                            Value::Histogram(h) => Some(proto::HistogramDataPoint {
                                attributes: attributes(&s.labels),
                                start_time_unix_nano: start,
                                time_unix_nano: now,
                                count: h.count,
                                sum: Some(h.sum),
                                // One more bucket than bounds: the overflow above the last.
                                bucket_counts: h.counts.iter().copied().chain([0]).collect(),
                                explicit_bounds: h.bounds.clone(),
                            }),
                            Value::Number(_) => None,
                        })
                        .collect(),
                    aggregation_temporality: proto::CUMULATIVE,
                }),
            };
            proto::Metric {
                // OTLP names carry no `_total` and no unit: those are Prometheus conventions.
                name: otlp_name(f),
                description: f.help.clone(),
                unit: ucum(&f.unit).to_string(),
                data: Some(data),
            }
        })
        .collect();
    proto::ExportMetricsServiceRequest {
        resource_metrics: vec![proto::ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![proto::ScopeMetrics {
                scope: Some(scope),
                metrics,
            }],
        }],
    }
}

/// The Prometheus name without `_total` and the unit suffix, which OTLP carries separately.
fn otlp_name(f: &Family) -> String {
    let mut n = f.name.as_str();
    if f.kind == Kind::Counter {
        n = n.strip_suffix("_total").unwrap_or(n);
    }
    if !f.unit.is_empty() {
        n = n.strip_suffix(&format!("_{}", f.unit)).unwrap_or(n);
    }
    n.to_string()
}

fn ucum(unit: &str) -> &str {
    match unit {
        "seconds" => "s",
        "bytes" => "By",
        "" => "1",
        u => u,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Histogram, Series};

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        // No worker: the queue fills and every further event is dropped at once.
        let (tx, rx) = mpsc::sync_channel(4);
        let e = Exporter {
            tx,
            stats: Arc::new(OtlpStats::default()),
            thread: None,
        };
        for i in 0..10 {
            e.event("events", format!("{{\"i\":{i}}}"));
        }
        assert_eq!(e.stats.logs_dropped.load(Ordering::Relaxed), 6);
        assert_eq!(rx.try_iter().count(), 4);
        // A worker that is gone counts as a drop too.
        drop(rx);
        e.event("events", "{}".into());
        assert_eq!(e.stats.logs_dropped.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn families_become_otlp_metrics() {
        let fams = vec![
            Family {
                name: "x_syscalls_total".into(),
                help: "h".into(),
                kind: Kind::Counter,
                unit: String::new(),
                series: vec![Series {
                    labels: vec![("pid".into(), "7".into())],
                    value: Value::Number(3.0),
                }],
            },
            Family {
                name: "x_lat_seconds".into(),
                help: "h".into(),
                kind: Kind::Histogram,
                unit: "seconds".into(),
                series: vec![Series {
                    labels: vec![],
                    value: Value::Histogram(Histogram::log2(&[1, 2], 1.0)),
                }],
            },
        ];
        let req = metrics_request(&fams, proto::Resource::default(), Default::default(), 1);
        let bytes = req.encode_to_vec();
        let back = proto::ExportMetricsServiceRequest::decode(&bytes[..]).expect("decodes");
        let m = &back.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(m[0].name, "x_syscalls");
        match &m[0].data {
            Some(metric::Data::Sum(s)) => {
                assert!(s.is_monotonic);
                assert_eq!(
                    s.data_points[0].value,
                    Some(number_data_point::Value::AsInt(3))
                );
            }
            other => panic!("not a sum: {other:?}"),
        }
        assert_eq!(m[1].name, "x_lat");
        assert_eq!(m[1].unit, "s");
        match &m[1].data {
            Some(metric::Data::Histogram(h)) => {
                assert_eq!(h.data_points[0].bucket_counts, [1, 2, 0]);
                assert_eq!(h.data_points[0].explicit_bounds, [2.0, 4.0]);
            }
            other => panic!("not a histogram: {other:?}"),
        }
        let rec = log_record("events", r#"{"pid":5,"comm":"sh"}"#, 9);
        assert_eq!(rec.attributes.len(), 2);
        assert_eq!(rec.attributes[0].key, "pid");
    }
}
