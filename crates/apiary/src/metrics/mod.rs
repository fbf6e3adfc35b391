//! Map-derived metrics: declarations naming which maps become which metrics ([`decl`]), reading
//! them into families ([`collect`]), the Prometheus text format ([`render`]) and OTLP/HTTP
//! export ([`otlp`]). The daemon's `/metrics` and `apiary run --metrics` share all of it.

pub mod collect;
pub mod decl;
pub mod otlp;
mod programs;
mod proto;
pub mod render;

pub use collect::Collector;
pub use decl::{Decls, Kind, MapDecl, MetricDecl, METADATA_KEY};
pub use programs::program_families;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics config {origin}: {reason}")]
    Config { origin: String, reason: String },
    #[error("read metrics config {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("metrics: the program has no map {map}")]
    NoSuchMap { map: String },
    #[error("metrics: map {map}: {reason}")]
    Kernel { map: String, reason: String },
    #[error("metrics: map {map}, metric {metric}: {reason}")]
    Field {
        map: String,
        metric: String,
        reason: String,
    },
}

/// One metric family: every series of one name.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Sanitized, with unit and (for counters) `_total`.
    pub name: String,
    pub help: String,
    pub kind: Kind,
    /// The base unit (`seconds`, `bytes`), empty when none was declared.
    pub unit: String,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(Histogram),
}

impl Value {
    /// Two entries landing on the same labels add up.
    fn merge(&mut self, other: &Value) {
        match (self, other) {
            (Value::Number(a), Value::Number(b)) => *a += b,
            (Value::Histogram(a), Value::Histogram(b)) if a.bounds == b.bounds => {
                for (x, y) in a.counts.iter_mut().zip(&b.counts) {
                    *x += y;
                }
                a.sum += b.sum;
                a.count += b.count;
            }
            _ => {}
        }
    }
}

/// Explicit-bound buckets, per bucket (not cumulative): `counts[i]` observations at most
/// `bounds[i]` and above the bound before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    /// Estimated from bucket midpoints: the map keeps counts, not values.
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// The bcc/libbpf-tools log2 histogram: slot i counts values v with floor(log2 v) = i, i.e.
    /// in [2^i, 2^(i+1)) (slot 0 also holds 0), so its upper bound is 2^(i+1). `scale` turns
    /// the map's unit into the exported one.
    pub fn log2(slots: &[u64], scale: f64) -> Histogram {
        let mut sum = 0.0;
        let mut bounds = Vec::with_capacity(slots.len());
        for (i, c) in slots.iter().enumerate() {
            let lo = if i == 0 { 0.0 } else { (i as f64).exp2() };
            let hi = ((i + 1) as f64).exp2();
            bounds.push(hi * scale);
            sum += *c as f64 * (lo + hi) / 2.0 * scale;
        }
        Histogram {
            bounds,
            counts: slots.to_vec(),
            sum,
            count: slots.iter().sum(),
        }
    }
}

/// Families of several sources (programs) on one endpoint: same-named families become one
/// (their series kept apart by the sources' labels); a name declared with another type or by a
/// family already taken (`taken`) is left out with a note, since Prometheus rejects the clash.
pub fn merge(groups: Vec<Vec<Family>>, taken: &[&str], notes: &mut Vec<String>) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    for f in groups.into_iter().flatten() {
        if taken.contains(&f.name.as_str()) {
            notes.push(format!(
                "metric {} clashes with one of apiary's own: left out",
                f.name
            ));
            continue;
        }
        match out.iter_mut().find(|o| o.name == f.name) {
            Some(o) if o.kind == f.kind => o.series.extend(f.series),
            Some(_) => notes.push(format!(
                "metric {} is declared with different types by different programs: the later left out",
                f.name
            )),
            None => out.push(f),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fam(name: &str, kind: Kind, program: &str) -> Family {
        Family {
            name: name.into(),
            help: "h".into(),
            kind,
            unit: String::new(),
            series: vec![Series {
                labels: vec![("program".into(), program.into())],
                value: Value::Number(1.0),
            }],
        }
    }

    #[test]
    fn families_of_several_programs_merge_and_clashes_are_left_out() {
        let mut notes = Vec::new();
        let out = merge(
            vec![
                vec![
                    fam("x_total", Kind::Counter, "a"),
                    fam("apiary_programs", Kind::Gauge, "a"),
                ],
                vec![
                    fam("x_total", Kind::Counter, "b"),
                    fam("y", Kind::Gauge, "b"),
                ],
                vec![fam("y", Kind::Counter, "c")],
            ],
            &["apiary_programs"],
            &mut notes,
        );
        let names: Vec<&str> = out.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["x_total", "y"]);
        assert_eq!(out[0].series.len(), 2);
        assert_eq!(out[1].series.len(), 1);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn identical_labels_add_up() {
        let mut a = Value::Histogram(Histogram::log2(&[1, 2], 1.0));
        a.merge(&Value::Histogram(Histogram::log2(&[0, 1], 1.0)));
        match a {
            Value::Histogram(h) => {
                assert_eq!(h.counts, [1, 3]);
                assert_eq!(h.count, 4);
            }
            Value::Number(_) => panic!("still a histogram"),
        }
    }
}
