//! The Prometheus text exposition format (version 0.0.4) of metric families.

use super::{Family, Kind, Value};
use std::fmt::Write as _;

/// A label value as the format wants it: backslash, quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: backslash and newline escaped (quotes are fine there).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: integers without a fraction, others in Rust's shortest round-trip form.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn labels(out: &mut String, labels: &[(String, String)], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra)
    {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
    }
    out.push('}');
}

/// Append the families to `out`.
pub fn write(families: &[Family], out: &mut String) {
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for s in &f.series {
            match &s.value {
                Value::Number(v) => {
                    out.push_str(&f.name);
                    labels(out, &s.labels, None);
                    let _ = writeln!(out, " {}", number(*v));
                }
                Value::Histogram(h) => {
                    let mut cumulative = 0u64;
                    for (b, c) in h.bounds.iter().zip(&h.counts) {
                        cumulative += c;
                        let _ = write!(out, "{}_bucket", f.name);
                        labels(out, &s.labels, Some(("le", &number(*b))));
                        let _ = writeln!(out, " {cumulative}");
                    }
                    let _ = write!(out, "{}_bucket", f.name);
                    labels(out, &s.labels, Some(("le", "+Inf")));
                    let _ = writeln!(out, " {}", h.count);
                    let _ = write!(out, "{}_sum", f.name);
                    labels(out, &s.labels, None);
                    let _ = writeln!(out, " {}", number(h.sum));
                    let _ = write!(out, "{}_count", f.name);
                    labels(out, &s.labels, None);
                    let _ = writeln!(out, " {}", h.count);
                }
            }
        }
    }
}

pub fn to_text(families: &[Family]) -> String {
    let mut out = String::with_capacity(256 * families.len().max(1));
    write(families, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Histogram, Series};

    #[test]
    fn histogram_is_cumulative_with_inf_sum_and_count() {
        let f = Family {
            name: "lat_seconds".into(),
            help: "Latency.".into(),
            kind: Kind::Histogram,
            unit: "seconds".into(),
            series: vec![Series {
                labels: vec![("comm".into(), "a\"b".into())],
                value: Value::Histogram(Histogram::log2(&[1, 0, 2], 1.0)),
            }],
        };
        let text = to_text(&[f]);
        assert_eq!(
            text,
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{comm=\"a\\\"b\",le=\"2\"} 1\n\
             lat_seconds_bucket{comm=\"a\\\"b\",le=\"4\"} 1\n\
             lat_seconds_bucket{comm=\"a\\\"b\",le=\"8\"} 3\n\
             lat_seconds_bucket{comm=\"a\\\"b\",le=\"+Inf\"} 3\n\
             lat_seconds_sum{comm=\"a\\\"b\"} 13\n\
             lat_seconds_count{comm=\"a\\\"b\"} 3\n"
        );
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(2e-6), "0.000002");
    }
}
