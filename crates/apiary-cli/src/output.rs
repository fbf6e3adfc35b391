//! Printing: aligned tables for people, JSON and YAML (stable field names) for scripts.

use crate::args::Output;
use anyhow::Result;
use apiary::{LinkView, MapDump, MapView, ProgramDetail, ProgramView};
use serde::Serialize;

pub struct Printer {
    format: Output,
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".into())
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

impl Printer {
    pub fn new(format: Output) -> Self {
        Printer { format }
    }

    /// Structured output, or `human()` for tables.
    fn emit<T: Serialize + ?Sized>(&self, v: &T, human: impl FnOnce() -> String) -> Result<()> {
        match self.format {
            Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
            Output::Yaml => print!("{}", serde_yaml_ng::to_string(v)?),
            Output::Table => println!("{}", human()),
        }
        Ok(())
    }

    pub fn message(&self, text: &str, v: serde_json::Value) -> Result<()> {
        self.emit(&v, || text.to_string())
    }

    pub fn programs(&self, ps: &[ProgramView]) -> Result<()> {
        self.emit(ps, || {
            table(
                &[
                    "ID",
                    "KERNEL_ID",
                    "NAME",
                    "TYPE",
                    "ATTACHED",
                    "LOADED",
                    "METADATA",
                ],
                ps.iter()
                    .map(|p| {
                        vec![
                            opt(&p.id),
                            p.kernel_id.to_string(),
                            p.name.clone(),
                            p.prog_type.clone(),
                            if p.attach_points.is_empty() {
                                "-".into()
                            } else {
                                p.attach_points.join("; ")
                            },
                            opt(&p.loaded_at),
                            if p.metadata.is_empty() {
                                "-".into()
                            } else {
                                p.metadata
                                    .iter()
                                    .map(|(k, v)| format!("{k}={v}"))
                                    .collect::<Vec<_>>()
                                    .join(",")
                            },
                        ]
                    })
                    .collect(),
            )
        })
    }

    pub fn links(&self, ls: &[LinkView]) -> Result<()> {
        self.emit(ls, || {
            table(
                &[
                    "ID",
                    "PROGRAM",
                    "NAME",
                    "ATTACH POINT",
                    "KERNEL_LINKS",
                    "CREATED",
                ],
                ls.iter()
                    .map(|l| {
                        vec![
                            l.id.to_string(),
                            l.program_id.to_string(),
                            l.program_name.clone(),
                            l.attach_point.clone(),
                            ids(&l.kernel_link_ids),
                            l.created_at.clone(),
                        ]
                    })
                    .collect(),
            )
        })
    }

    pub fn link(&self, l: &LinkView) -> Result<()> {
        self.emit(l, || {
            format!(
                "link {} attached program {} ({}) to {}{}",
                l.id,
                l.program_id,
                l.program_name,
                l.attach_point,
                if l.kernel_link_ids.is_empty() {
                    String::new()
                } else {
                    format!(" (kernel link {})", ids(&l.kernel_link_ids))
                }
            ) + &l
                .read_with
                .as_ref()
                .map(|r| format!("\nread it with: {r}"))
                .unwrap_or_default()
        })
    }

    pub fn maps(&self, ms: &[MapView]) -> Result<()> {
        self.emit(ms, || {
            table(
                &[
                    "KERNEL_ID",
                    "NAME",
                    "TYPE",
                    "KEY",
                    "VALUE",
                    "MAX",
                    "OWNER",
                    "USED BY",
                ],
                ms.iter()
                    .map(|m| {
                        vec![
                            m.kernel_id.to_string(),
                            m.name.clone(),
                            m.map_type.clone(),
                            m.key_size.to_string(),
                            m.value_size.to_string(),
                            m.max_entries.to_string(),
                            opt(&m.owner_id),
                            m.used_by
                                .iter()
                                .map(|i| i.to_string())
                                .collect::<Vec<_>>()
                                .join(","),
                        ]
                    })
                    .collect(),
            )
        })
    }

    pub fn program_detail(&self, d: &ProgramDetail) -> Result<()> {
        self.emit(d, || {
            let p = &d.program;
            let mut rows = vec![
                ("ID", opt(&p.id)),
                ("Name", p.name.clone()),
                ("Type", p.prog_type.clone()),
                ("Section", opt(&p.section)),
                ("Source", opt(&p.source)),
                ("Loaded", opt(&p.loaded_at)),
                ("Map owner", opt(&p.map_owner_id)),
                ("Tag", d.tag.clone()),
            ];
            if !p.metadata.is_empty() {
                rows.push((
                    "Metadata",
                    p.metadata
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ));
            }
            for g in &d.globals {
                rows.push((
                    "Global",
                    format!("{} = 0x{} ({})", g.name, g.hex, g.section),
                ));
            }
            match &d.kernel {
                Some(k) => {
                    rows.push(("Kernel ID", k.id.to_string()));
                    rows.push(("Kernel name", k.name.clone()));
                    rows.push(("Kernel type", k.prog_type.clone()));
                    rows.push(("Verified insns", k.verified_insns.to_string()));
                    rows.push(("Translated size", format!("{} bytes", k.xlated_len)));
                    rows.push(("JIT size", format!("{} bytes", k.jited_len)));
                    rows.push(("BTF ID", k.btf_id.to_string()));
                    rows.push(("Map IDs", ids(&k.map_ids)));
                    if d.stats_enabled {
                        rows.push(("Run count", k.run_cnt.to_string()));
                        rows.push(("Run time", format!("{} ns", k.run_time_ns)));
                    } else {
                        rows.push((
                            "Run stats",
                            "off (enable with sysctl kernel.bpf_stats_enabled=1)".into(),
                        ));
                    }
                }
                None => rows.push(("Kernel", opt(&d.kernel_error))),
            }
            for l in &d.link_details {
                rows.push(("Link", format!("{}: {}", l.id, l.attach_point)));
            }
            for m in &d.maps {
                let others: Vec<String> = m
                    .used_by
                    .iter()
                    .filter(|u| Some(**u) != p.id)
                    .map(ToString::to_string)
                    .collect();
                let sharing = match (m.pinned_by_name, others.is_empty()) {
                    (true, true) => "pinned by name, not shared yet".to_string(),
                    (true, false) => format!("pinned by name, shared with {}", others.join(", ")),
                    (false, _) if m.owner_id == p.id && others.is_empty() => "own".to_string(),
                    (false, _) if m.owner_id == p.id => {
                        format!("own, shared with {}", others.join(", "))
                    }
                    (false, _) => format!("shared from {}", opt(&m.owner_id)),
                };
                rows.push((
                    "Map",
                    format!(
                        "{} {} ({sharing}, kernel id {})",
                        m.name, m.map_type, m.kernel_id
                    ),
                ));
            }
            let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            rows.iter()
                .map(|(k, v)| format!("{k:<w$}  {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    pub fn map_dump(&self, d: &MapDump) -> Result<()> {
        self.emit(d, || {
            let mut s = table(
                &["KEY", "VALUE"],
                d.entries
                    .iter()
                    .map(|e| vec![compact(&e.key), compact(&e.value)])
                    .collect(),
            );
            s.push_str(&format!(
                "\n{} entries in map {} ({}){}",
                d.entries.len(),
                d.map.name,
                d.map.map_type,
                if d.truncated {
                    ", more not shown (raise --limit)"
                } else {
                    ""
                }
            ));
            s
        })
    }
}

fn chain_text(c: &apiary::chain::ChainView) -> String {
    let mut head = format!("{} chain on {}", c.kind, c.iface);
    if let Some(d) = &c.direction {
        head.push_str(&format!(" {d}"));
    }
    if let Some(n) = &c.netns {
        head.push_str(&format!(" (netns {n})"));
    }
    if let Some(m) = &c.mode {
        head.push_str(&format!(", mode {m}"));
    }
    head.push_str(&format!(
        ", dispatcher {} on link {}",
        c.dispatcher_kernel_id, c.link_kernel_id
    ));
    let rows = c
        .programs
        .iter()
        .map(|p| {
            vec![
                p.position.to_string(),
                p.priority.to_string(),
                p.program_id.to_string(),
                p.name.clone(),
                p.link_id.to_string(),
                p.proceed_on.join(","),
                p.runs.to_string(),
                p.verdicts
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    format!(
        "{head}\n{}",
        table(
            &[
                "POS",
                "PRIORITY",
                "PROGRAM",
                "NAME",
                "LINK",
                "PROCEED-ON",
                "RUNS",
                "VERDICTS"
            ],
            rows
        )
    )
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ids(v: &[u32]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Printer {
    pub fn inspect(&self, i: &apiary::Inspection) -> Result<()> {
        self.emit(i, || {
            let mut s = String::new();
            s.push_str(&format!("Object   {}\n", i.source));
            s.push_str(&format!(
                "License  {}\n",
                i.license.as_deref().unwrap_or("-")
            ));
            s.push_str(&format!(
                "BTF      {}{}\n",
                if i.btf { "yes" } else { "no" },
                if i.btf_ext { " (with line info)" } else { "" }
            ));
            s.push_str("\nPROGRAMS\n");
            s.push_str(&table(
                &["NAME", "SECTION", "TYPE", "ATTACH", "INSNS"],
                i.programs
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.section.clone(),
                            opt(&p.prog_type),
                            p.attach.clone(),
                            p.insns.to_string(),
                        ]
                    })
                    .collect(),
            ));
            s.push_str("\n\nMAPS\n");
            s.push_str(&table(
                &["NAME", "TYPE", "KEY", "VALUE", "MAX"],
                i.maps
                    .iter()
                    .map(|m| {
                        vec![
                            m.name.clone(),
                            m.map_type.clone(),
                            opt(&m.key),
                            opt(&m.value),
                            opt(&m.max_entries),
                        ]
                    })
                    .collect(),
            ));
            s.push_str("\n\nGLOBALS (set with --set NAME=VALUE)\n");
            s.push_str(&table(
                &["NAME", "SECTION", "TYPE", "DEFAULT"],
                i.globals
                    .iter()
                    .map(|g| {
                        vec![
                            g.name.clone(),
                            g.section.clone(),
                            opt(&g.type_name),
                            compact(&g.default),
                        ]
                    })
                    .collect(),
            ));
            if !i.externs.is_empty() {
                s.push_str(&format!("\n\nEXTERNS  {}", i.externs.join(", ")));
            }
            if !i.event_types.is_empty() {
                s.push_str("\n\nEVENTS\n");
                for (m, t) in &i.event_types {
                    s.push_str(&format!("{m}: {t}\n"));
                }
            }
            if let Some(d) = &i.metrics {
                s = s.trim_end().to_string();
                s.push_str("\n\nMETRICS\n");
                for m in &d.maps {
                    for x in &m.metrics {
                        let kind = match x.kind {
                            apiary::metrics::Kind::Counter => "counter",
                            apiary::metrics::Kind::Gauge => "gauge",
                            apiary::metrics::Kind::Histogram => "histogram",
                        };
                        s.push_str(&format!(
                            "{} ({kind}) from map {}\n",
                            x.family_name(d.prefix.as_deref()),
                            m.map
                        ));
                    }
                }
            }
            s.trim_end().to_string()
        })
    }

    pub fn chains(&self, cs: &[apiary::chain::ChainView]) -> Result<()> {
        self.emit(cs, || {
            if cs.is_empty() {
                return "no chains".into();
            }
            cs.iter().map(chain_text).collect::<Vec<_>>().join("\n\n")
        })
    }

    pub fn chain(&self, c: &apiary::chain::ChainView) -> Result<()> {
        self.emit(c, || chain_text(c))
    }

    pub fn reconcile(&self, r: &apiary::ReconcileReport) -> Result<()> {
        self.emit(r, || {
            let list = |v: Vec<String>| if v.is_empty() { "none".to_string() } else { v.join(", ") };
            let mut s = format!(
                "{} program(s) were fine\nrestored programs: {}\nre-pinned maps: {}\nre-attached links: {}\nrebuilt chains: {}\nremoved unknown pins: {}",
                r.programs_ok,
                list(r.restored_programs.iter().map(|i| i.to_string()).collect()),
                list(r.repinned_maps.iter().map(|p| p.display().to_string()).collect()),
                list(r.reattached_links.iter().map(|i| i.to_string()).collect()),
                list(r.rebuilt_chains.iter().map(|i| i.to_string()).collect()),
                list(r.removed_unknown_pins.iter().map(|p| p.display().to_string()).collect()),
            );
            for f in &r.failures {
                s.push_str(&format!("\nFAILED: {f}"));
            }
            s
        })
    }

    pub fn update(&self, u: &apiary::UpdateReport) -> Result<()> {
        self.emit(u, || {
            format!(
                "updated program {} ({}): kernel id {} -> {}, {} link(s) moved, {} map(s) kept, in {:.1} ms",
                u.id, u.name, u.old_kernel_id, u.new_kernel_id, u.links_updated, u.maps_kept, u.millis
            )
        })
    }
}
