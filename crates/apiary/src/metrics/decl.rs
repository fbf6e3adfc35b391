//! Metric declarations: which maps a program's metrics come from and how their entries become
//! Prometheus/OpenTelemetry series. Written as YAML (`prog.metrics.yaml` next to the source, or
//! `--metrics-config FILE`), carried in a package's metadata and in a loaded program's metadata
//! (key [`METADATA_KEY`]) as JSON.
//!
//! ```yaml
//! maps:
//!   - map: counts            # the BPF map
//!     labels: [pid, comm]    # key members that become labels; a scalar key: one label name
//!     metrics:
//!       - name: syscalls     # `_total` is added to counters
//!         type: counter      # counter | gauge | histogram
//!         field: count       # value member (dotted for nesting); omitted: the whole value
//!         help: Syscalls entered, by process.
//!   - map: hist              # an array indexed by log2 slot, or a value with `slots[N]`
//!     metrics:
//!       - name: read_size
//!         type: histogram
//!         unit: bytes        # nanoseconds/microseconds/milliseconds are scaled to seconds
//! ```

use super::MetricsError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Where a loaded program keeps its declarations, so the daemon can export them.
pub const METADATA_KEY: &str = "apiary.dev/metrics";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decls {
    /// Put in front of every metric name (sanitized), e.g. the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    pub maps: Vec<MapDecl>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapDecl {
    pub map: String,
    /// Key members (by BTF member name, dotted for nested structs) that become labels, in
    /// order. A scalar key takes exactly one entry: the label's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    pub metrics: Vec<MetricDecl>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDecl {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Value member; absent: the whole value (a scalar, or for a histogram an array of slots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The unit of the map's numbers; added to the name. Time units are scaled to seconds, the
    /// Prometheus base unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A declaration's unit as exported: its name suffix and the factor map numbers are multiplied
/// by to reach it.
pub(crate) fn base_unit(unit: &str) -> (String, f64) {
    match unit.to_ascii_lowercase().as_str() {
        "ns" | "nsec" | "nanosecond" | "nanoseconds" => ("seconds".into(), 1e-9),
        "us" | "usec" | "microsecond" | "microseconds" => ("seconds".into(), 1e-6),
        "ms" | "msec" | "millisecond" | "milliseconds" => ("seconds".into(), 1e-3),
        "s" | "sec" | "second" | "seconds" => ("seconds".into(), 1.0),
        "kb" | "kbytes" | "kilobytes" | "kib" => ("bytes".into(), 1024.0),
        "b" | "byte" | "bytes" => ("bytes".into(), 1.0),
        other => (sanitize_name(other), 1.0),
    }
}

/// A metric name following Prometheus rules: `[a-zA-Z_:][a-zA-Z0-9_:]*`, with anything else
/// (dashes, dots, spaces) turned into `_`, runs of `_` collapsed, and camelCase split.
pub fn sanitize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev_lower = false;
    for c in name.chars() {
        let c2 = if c.is_ascii_alphanumeric() { c } else { '_' };
        if c2.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c2.is_ascii_lowercase() || c2.is_ascii_digit();
        let c2 = c2.to_ascii_lowercase();
        if c2 == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c2);
    }
    let trimmed = out.trim_matches('_').to_string();
    match trimmed.chars().next() {
        None => "_".into(),
        Some(c) if c.is_ascii_digit() => format!("_{trimmed}"),
        Some(_) => trimmed,
    }
}

/// A label name: like a metric name but without `:`, and never starting with `__` (reserved).
pub fn sanitize_label(name: &str) -> String {
    let s = sanitize_name(&name.replace('.', "_"));
    let t = s.trim_start_matches('_');
    match t.chars().next() {
        None => "label".into(),
        Some(c) if c.is_ascii_digit() => format!("_{t}"),
        Some(_) => t.to_string(),
    }
}

impl MetricDecl {
    /// The exported family name: prefix, name, unit, and `_total` for counters.
    pub fn family_name(&self, prefix: Option<&str>) -> String {
        let mut name = sanitize_name(&self.name);
        if let Some(p) = prefix.map(sanitize_name) {
            if !name.starts_with(&format!("{p}_")) {
                name = format!("{p}_{name}");
            }
        }
        if self.kind == Kind::Counter {
            name = name.strip_suffix("_total").unwrap_or(&name).to_string();
        }
        if let Some(u) = &self.unit {
            let (suffix, _) = base_unit(u);
            if !name.ends_with(&format!("_{suffix}")) {
                name = format!("{name}_{suffix}");
            }
        }
        if self.kind == Kind::Counter {
            name.push_str("_total");
        }
        name
    }

    pub fn scale(&self) -> f64 {
        self.unit.as_deref().map_or(1.0, |u| base_unit(u).1)
    }
}

impl Decls {
    /// Parse YAML (JSON is YAML too) and check it; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Decls, MetricsError> {
        let d: Decls = serde_yaml_ng::from_str(text).map_err(|e| MetricsError::Config {
            origin: origin.to_string(),
            reason: e.to_string(),
        })?;
        d.check(origin)?;
        Ok(d)
    }

    pub fn read(path: &std::path::Path) -> Result<Decls, MetricsError> {
        let text = std::fs::read_to_string(path).map_err(|error| MetricsError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Decls::parse(&text, &path.display().to_string())
    }

    /// The form kept in metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Names that would collide on an endpoint, and labels histograms reserve, are refused
    /// here rather than producing an exposition Prometheus rejects.
    pub fn check(&self, origin: &str) -> Result<(), MetricsError> {
        let bad = |reason: String| MetricsError::Config {
            origin: origin.to_string(),
            reason,
        };
        if self.maps.is_empty() {
            return Err(bad("no maps declared".into()));
        }
        let mut families = BTreeSet::new();
        for m in &self.maps {
            if m.metrics.is_empty() {
                return Err(bad(format!("map {}: no metrics declared", m.map)));
            }
            let mut labels = BTreeSet::new();
            for l in &m.labels {
                let name = sanitize_label(l);
                if !labels.insert(name.clone()) {
                    return Err(bad(format!("map {}: label {name} appears twice", m.map)));
                }
            }
            for metric in &m.metrics {
                let f = metric.family_name(self.prefix.as_deref());
                if metric.kind == Kind::Histogram && labels.contains("le") {
                    return Err(bad(format!(
                        "map {}: histogram {f} cannot have a label named le (Prometheus reserves it for bucket bounds)",
                        m.map
                    )));
                }
                for suffix in ["_bucket", "_sum", "_count"] {
                    if metric.kind == Kind::Histogram && f.ends_with(suffix) {
                        return Err(bad(format!(
                            "histogram {f}: a name ending in {suffix} collides with its series"
                        )));
                    }
                }
                if !families.insert(f.clone()) {
                    return Err(bad(format!("metric {f} is declared twice")));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_rules() {
        assert_eq!(sanitize_name("syscalls-by.Pid"), "syscalls_by_pid");
        assert_eq!(sanitize_name("readBytes"), "read_bytes");
        assert_eq!(sanitize_name("2xx"), "_2xx");
        assert_eq!(sanitize_label("key.pid"), "key_pid");
        assert_eq!(sanitize_label("__x"), "x");
        let c = MetricDecl {
            name: "syscalls".into(),
            kind: Kind::Counter,
            field: None,
            help: None,
            unit: None,
        };
        assert_eq!(c.family_name(Some("tool")), "tool_syscalls_total");
        let t = MetricDecl {
            name: "run_time_total".into(),
            unit: Some("ns".into()),
            ..c.clone()
        };
        assert_eq!(t.family_name(None), "run_time_seconds_total");
        assert_eq!(t.scale(), 1e-9);
        let h = MetricDecl {
            name: "latency".into(),
            kind: Kind::Histogram,
            unit: Some("microseconds".into()),
            ..c
        };
        assert_eq!(h.family_name(Some("biolat")), "biolat_latency_seconds");
    }

    #[test]
    fn config_is_parsed_and_checked() {
        let d = Decls::parse(
            "maps:\n  - map: counts\n    labels: [pid, comm]\n    metrics:\n      - {name: syscalls, type: counter, field: count}\n",
            "t.yaml",
        )
        .expect("valid");
        assert_eq!(d.maps[0].labels, ["pid", "comm"]);
        assert_eq!(Decls::parse(&d.to_json(), "json").expect("json"), d);
        let err = Decls::parse(
            "maps:\n  - map: h\n    labels: [le]\n    metrics: [{name: lat, type: histogram}]\n",
            "t.yaml",
        )
        .expect_err("le refused");
        assert!(err.to_string().contains("reserves"), "{err}");
        let err = Decls::parse(
            "maps:\n  - map: a\n    metrics: [{name: x, type: gauge}, {name: x, type: gauge}]\n",
            "t.yaml",
        )
        .expect_err("duplicate");
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(Decls::parse("maps: []\nbogus: 1\n", "t").is_err());
    }
}
