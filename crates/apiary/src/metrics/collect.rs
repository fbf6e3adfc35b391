//! Reading declared maps into metric families: each entry's key members become labels, its
//! value members numbers (summed over CPUs for per-CPU maps), and log2 slot arrays histograms.
//! Maps are decoded with the BTF the kernel holds for them, so this works the same for a
//! foreground `apiary run` and for the daemon's programs.

use super::decl::{Decls, Kind, MapDecl, MetricDecl};
use super::{Family, Histogram, MetricsError, Series, Value};
use apiary_core::btf::{self, Btf};
use apiary_kernel::{maps, sys};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

/// A map's entries beyond this are not read (a scrape must stay cheap and bounded).
pub const MAX_ENTRIES: usize = 100_000;
/// log2 of a 64-bit number has at most 64 slots.
const MAX_SLOTS: usize = 64;

struct Source {
    decl: MapDecl,
    fd: OwnedFd,
    /// What the kernel says of the map (type, sizes: fixed for its life), read once.
    info: sys::MapInfo,
    /// The map's BTF (shared by the maps of one object, parsed once) and key/value type ids.
    btf: Option<(Arc<Btf>, u32, u32)>,
}

/// Declared maps, each with its own descriptor, ready to be read from any thread.
pub struct Collector {
    prefix: Option<String>,
    sources: Vec<Source>,
    /// Added to every series (the daemon's program id and name).
    labels: Vec<(String, String)>,
}

impl Collector {
    /// `fd_of` opens a map by its declared name; a declared map the program lacks is an error.
    pub fn new(
        decls: &Decls,
        mut fd_of: impl FnMut(&str) -> Option<OwnedFd>,
        labels: Vec<(String, String)>,
    ) -> Result<Collector, MetricsError> {
        let mut sources = Vec::new();
        let mut parsed: HashMap<u32, Option<Arc<Btf>>> = HashMap::new();
        for m in &decls.maps {
            let fd = fd_of(&m.map).ok_or_else(|| MetricsError::NoSuchMap { map: m.map.clone() })?;
            let info = sys::map_info(fd.as_fd()).map_err(|e| MetricsError::Kernel {
                map: m.map.clone(),
                reason: e.to_string(),
            })?;
            let btf = if info.btf_id != 0 && info.btf_value_type_id != 0 {
                parsed
                    .entry(info.btf_id)
                    .or_insert_with(|| {
                        sys::btf_raw_by_id(info.btf_id)
                            .ok()
                            .and_then(|raw| Btf::parse(&raw).ok())
                            .map(Arc::new)
                    })
                    .clone()
                    .map(|b| (b, info.btf_key_type_id, info.btf_value_type_id))
            } else {
                None
            };
            sources.push(Source {
                decl: m.clone(),
                fd,
                info,
                btf,
            });
        }
        Ok(Collector {
            prefix: decls.prefix.clone(),
            sources,
            labels,
        })
    }

    /// Every declared family, and a message per map that could not be read (the others are
    /// still returned: one broken map should not blank the endpoint).
    pub fn collect(&self) -> (Vec<Family>, Vec<String>) {
        let mut families = Vec::new();
        let mut errors = Vec::new();
        for s in &self.sources {
            match self.collect_map(s) {
                Ok(f) => families.extend(f),
                Err(e) => errors.push(e.to_string()),
            }
        }
        (families, errors)
    }

    fn collect_map(&self, s: &Source) -> Result<Vec<Family>, MetricsError> {
        let map = &s.decl.map;
        let info = &s.info;
        let entries =
            maps::dump(s.fd.as_fd(), info, MAX_ENTRIES).map_err(|e| MetricsError::Kernel {
                map: map.clone(),
                reason: e.to_string(),
            })?;
        let decode = |ty: u32, bytes: &[u8]| -> Json {
            s.btf
                .as_ref()
                .filter(|_| ty != 0)
                .and_then(|(b, _, _)| btf::decode(b, ty, bytes).ok())
                .unwrap_or_else(|| plain(bytes))
        };
        let (kt, vt) = s.btf.as_ref().map_or((0, 0), |(_, k, v)| (*k, *v));
        let rows: Vec<(Json, Vec<Json>)> = entries
            .iter()
            .map(|e| {
                (
                    decode(kt, &e.key),
                    e.values.iter().map(|v| decode(vt, v)).collect(),
                )
            })
            .collect();
        let mut out = Vec::new();
        for m in &s.decl.metrics {
            out.push(self.family(&s.decl, m, &rows, info.max_entries as usize)?);
        }
        Ok(out)
    }

    fn family(
        &self,
        decl: &MapDecl,
        m: &MetricDecl,
        rows: &[(Json, Vec<Json>)],
        max_entries: usize,
    ) -> Result<Family, MetricsError> {
        let name = m.family_name(self.prefix.as_deref());
        let help = m.help.clone().unwrap_or_else(|| match &m.field {
            Some(f) => format!("Field {f} of BPF map {}.", decl.map),
            None => format!("Values of BPF map {}.", decl.map),
        });
        let scale = m.scale();
        let field_err = |what: String| MetricsError::Field {
            map: decl.map.clone(),
            metric: name.clone(),
            reason: what,
        };
        // Identical label sets (keys differing only in members not exported) are merged; the
        // index finds them, the series keep the map's order.
        let mut series: Vec<Series> = Vec::new();
        let mut index: HashMap<Vec<(String, String)>, usize> = HashMap::new();
        // Sanitized once, not per entry.
        let names = label_names(decl);
        let slot_indexed = m.kind == Kind::Histogram
            && m.field.is_none()
            && rows
                .first()
                .is_some_and(|(_, v)| v.first().is_some_and(|x| !x.is_array()));
        if slot_indexed {
            // An array (or hash) indexed by slot: the whole map is one histogram.
            let mut slots = vec![0u64; max_entries.clamp(1, MAX_SLOTS)];
            for (k, vals) in rows {
                let i = number(k).ok_or_else(|| {
                    field_err(format!(
                        "a histogram indexed by slot needs an integer key, not {k}"
                    ))
                })? as usize;
                let c: f64 = vals.iter().filter_map(number).sum();
                if let Some(slot) = slots.get_mut(i) {
                    *slot += c as u64;
                }
            }
            series.push(Series {
                labels: self.labels.clone(),
                value: Value::Histogram(Histogram::log2(&slots, scale)),
            });
        } else {
            for (k, vals) in rows {
                let mut labels = self.labels.clone();
                labels.extend(key_labels(&names, k).map_err(field_err)?);
                let value = match m.kind {
                    Kind::Histogram => {
                        let mut slots: Vec<u64> = Vec::new();
                        for v in vals {
                            let arr = pick(v, m.field.as_deref())
                                .and_then(Json::as_array)
                                .ok_or_else(|| {
                                    field_err(format!(
                                        "{} is not an array of slot counts",
                                        m.field.as_deref().unwrap_or("the value")
                                    ))
                                })?;
                            if slots.len() < arr.len() {
                                slots.resize(arr.len(), 0);
                            }
                            for (i, c) in arr.iter().enumerate() {
                                slots[i] += number(c).unwrap_or(0.0) as u64;
                            }
                        }
                        Value::Histogram(Histogram::log2(&slots, scale))
                    }
                    _ => {
                        let mut total = 0.0;
                        for v in vals {
                            let x = pick(v, m.field.as_deref())
                                .ok_or_else(|| {
                                    field_err(format!(
                                        "the value has no member {}",
                                        m.field.as_deref().unwrap_or("")
                                    ))
                                })
                                .and_then(|x| {
                                    number(x)
                                        .ok_or_else(|| field_err(format!("{x} is not a number")))
                                })?;
                            total += x;
                        }
                        Value::Number(total * scale)
                    }
                };
                if labels_whole_key(&names, k) {
                    // Every key member is a label: keys are unique, nothing to merge (and no
                    // hashing, which is most of a large map's cost otherwise).
                    series.push(Series { labels, value });
                    continue;
                }
                match index.get(&labels) {
                    Some(&i) => series[i].value.merge(&value),
                    None => {
                        index.insert(labels.clone(), series.len());
                        series.push(Series { labels, value });
                    }
                }
            }
        }
        Ok(Family {
            name,
            help,
            kind: m.kind,
            unit: m
                .unit
                .as_deref()
                .map(|u| super::decl::base_unit(u).0)
                .unwrap_or_default(),
            series,
        })
    }
}

/// (member path, label name) of each declared label.
fn label_names(decl: &MapDecl) -> Vec<(String, String)> {
    decl.labels
        .iter()
        .map(|l| (l.clone(), super::decl::sanitize_label(l)))
        .collect()
}

/// Whether the labels name every member of the key (or the scalar key itself).
fn labels_whole_key(names: &[(String, String)], key: &Json) -> bool {
    match key.as_object() {
        Some(o) => o.len() == names.len() && names.iter().all(|(p, _)| o.contains_key(p)),
        None => names.len() == 1,
    }
}

/// The labels of one key: named members of a struct key, or the one label of a scalar key.
fn key_labels(names: &[(String, String)], key: &Json) -> Result<Vec<(String, String)>, String> {
    if !key.is_object() {
        return match names {
            [] => Ok(Vec::new()),
            [(_, one)] => Ok(vec![(one.clone(), label_value(key))]),
            _ => Err(format!(
                "the key is a scalar: it takes one label, not {}",
                names.len()
            )),
        };
    }
    names
        .iter()
        .map(|(path, label)| {
            pick(key, Some(path))
                .map(|v| (label.clone(), label_value(v)))
                .ok_or_else(|| format!("the key has no member {path}"))
        })
        .collect()
}

/// Member `path` (dotted) of a decoded value; None picks the value itself.
fn pick<'a>(v: &'a Json, path: Option<&str>) -> Option<&'a Json> {
    let Some(path) = path else { return Some(v) };
    path.split('.').try_fold(v, |v, p| v.get(p))
}

fn label_value(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        o => o.to_string(),
    }
}

/// A decoded number; 128-bit integers come as strings, booleans count as 0/1.
fn number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.parse().ok(),
        Json::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Without BTF: an integer for integer sizes, else the bytes as a hex string.
fn plain(b: &[u8]) -> Json {
    match b.len() {
        1 | 2 | 4 | 8 => {
            let mut x = [0u8; 8];
            x[..b.len()].copy_from_slice(b);
            Json::from(u64::from_le_bytes(x))
        }
        _ => Json::from(hex::encode(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(labels: &[&str]) -> MapDecl {
        MapDecl {
            map: "m".into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            metrics: Vec::new(),
        }
    }

    #[test]
    fn keys_become_labels() {
        let key = json!({"pid": 7, "comm": "sh", "inner": {"cpu": 1}});
        assert_eq!(
            key_labels(&label_names(&decl(&["comm", "inner.cpu"])), &key).expect("labels"),
            [
                ("comm".to_string(), "sh".to_string()),
                ("inner_cpu".to_string(), "1".to_string())
            ]
        );
        assert!(key_labels(&label_names(&decl(&["nope"])), &key)
            .expect_err("missing member")
            .contains("nope"));
        // A scalar key: one label, named in the config.
        assert_eq!(
            key_labels(&label_names(&decl(&["cpu"])), &json!(3)).expect("scalar"),
            [("cpu".to_string(), "3".to_string())]
        );
        assert!(key_labels(&label_names(&decl(&["a", "b"])), &json!(3)).is_err());
        assert!(key_labels(&label_names(&decl(&[])), &json!(3))
            .expect("none")
            .is_empty());
    }

    #[test]
    fn numbers_and_fields() {
        assert_eq!(
            number(&json!("340282366920938463463374607431768211455")),
            Some(3.402823669209385e38)
        );
        assert_eq!(number(&json!(true)), Some(1.0));
        assert_eq!(number(&json!("x")), None);
        let v = json!({"a": {"b": 5}});
        assert_eq!(pick(&v, Some("a.b")), Some(&json!(5)));
        assert_eq!(pick(&v, None), Some(&v));
        assert_eq!(plain(&[1, 0, 0, 0]), json!(1));
        assert_eq!(plain(&[1, 2, 3]), json!("010203"));
    }

    fn collector() -> Collector {
        Collector {
            prefix: Some("t".into()),
            sources: Vec::new(),
            labels: vec![("program".into(), "p".into())],
        }
    }

    fn metric(kind: Kind, field: Option<&str>, unit: Option<&str>) -> MetricDecl {
        MetricDecl {
            name: "m".into(),
            kind,
            field: field.map(str::to_string),
            help: None,
            unit: unit.map(str::to_string),
        }
    }

    #[test]
    fn slots_in_the_value_make_one_histogram_per_key_summed_over_cpus() {
        // bcc/libbpf-tools: `struct hist { u32 slots[N]; }` per comm, in a per-CPU map.
        let rows = vec![(
            json!({"comm": "sh"}),
            vec![json!({"slots": [1, 0, 2]}), json!({"slots": [0, 1, 1]})],
        )];
        let f = collector()
            .family(
                &decl(&["comm"]),
                &metric(Kind::Histogram, Some("slots"), Some("us")),
                &rows,
                1024,
            )
            .expect("family");
        assert_eq!(f.name, "t_m_seconds");
        assert_eq!(f.series.len(), 1);
        assert_eq!(
            f.series[0].labels,
            [
                ("program".to_string(), "p".to_string()),
                ("comm".to_string(), "sh".to_string())
            ]
        );
        match &f.series[0].value {
            Value::Histogram(h) => {
                assert_eq!(h.counts, [1, 1, 3]);
                assert_eq!(h.bounds, [2e-6, 4e-6, 8e-6]);
                assert_eq!(h.count, 5);
            }
            Value::Number(_) => panic!("not a histogram"),
        }
    }

    #[test]
    fn an_array_indexed_by_slot_is_one_histogram_and_counters_sum_cpus() {
        let rows: Vec<(Json, Vec<Json>)> =
            (0..4u64).map(|i| (json!(i), vec![json!(i * 10)])).collect();
        let f = collector()
            .family(&decl(&[]), &metric(Kind::Histogram, None, None), &rows, 4)
            .expect("family");
        assert_eq!(f.series.len(), 1);
        match &f.series[0].value {
            Value::Histogram(h) => assert_eq!(h.counts, [0, 10, 20, 30]),
            Value::Number(_) => panic!("not a histogram"),
        }
        // Keys differing only in unexported members merge; per-CPU values add up.
        let rows = vec![
            (
                json!({"pid": 1, "tid": 1}),
                vec![json!({"n": 1}), json!({"n": 2})],
            ),
            (
                json!({"pid": 1, "tid": 2}),
                vec![json!({"n": 4}), json!({"n": 0})],
            ),
        ];
        let f = collector()
            .family(
                &decl(&["pid"]),
                &metric(Kind::Counter, Some("n"), None),
                &rows,
                8,
            )
            .expect("family");
        assert_eq!(f.name, "t_m_total");
        assert_eq!(f.series.len(), 1);
        assert_eq!(f.series[0].value, Value::Number(7.0));
        let err = collector()
            .family(
                &decl(&["pid"]),
                &metric(Kind::Gauge, Some("nope"), None),
                &rows,
                8,
            )
            .expect_err("no such member");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
