//! `apiary run`: load an object in the foreground, attach everything from section names, print
//! decoded events and map snapshots, and release it all when told to stop.

use crate::error::{Error, Result};
use crate::metrics::otlp::{Exporter, OtlpStats};
use crate::metrics::{Collector, Decls, Family, Kind, Series, Value};
use crate::source;
use apiary_core::btf::Btf;
use apiary_core::events::{self, Format};
use apiary_kernel::session::{EventMapKind, Session, Targets};
use apiary_kernel::{maps, sys, LoadRequest};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RunSpec {
    pub source: String,
    /// Programs to load and attach, by function name; empty: all of them.
    pub programs: Vec<String>,
    pub raw_globals: Vec<(String, Vec<u8>)>,
    pub typed_globals: Vec<(String, String)>,
    pub targets: Targets,
    pub event_type: Option<String>,
    pub duration: Option<Duration>,
    pub dump_maps: Vec<String>,
    pub interval: Duration,
    pub json: bool,
    /// Metric declarations to use instead of the package's (`--metrics-config`).
    pub metrics_config: Option<std::path::PathBuf>,
    /// Push metrics (and events as log records) over OTLP/HTTP.
    pub otlp: Option<crate::metrics::otlp::OtlpConfig>,
}

/// Handed the run's metrics once everything is loaded.
pub type MetricsHook<'a> = Box<dyn FnOnce(Arc<RunMetrics>) + 'a>;

/// Told the event types before the first event.
pub type TypesHook<'a> = Box<dyn FnOnce(&EventTypes) + 'a>;

/// What a caller adds to a run.
#[derive(Default)]
pub struct RunHooks<'a> {
    /// Called once everything is loaded, before "running", with the run's metrics (the
    /// declared maps and the run's own counters); the caller serves them (`--metrics`).
    pub on_metrics: Option<MetricsHook<'a>>,
    /// Told which type each event map's records decode as (map name, type name; empty for
    /// hex) before any event is written, so a consumer that forwards the output (a trace
    /// through the daemon) can label it. `out` then receives events in batches of lines.
    pub on_types: Option<TypesHook<'a>>,
}

/// The metrics of a foreground run: declared map families plus the run's own counters.
/// Safe to read from any thread while the run goes on (it holds its own map descriptors).
pub struct RunMetrics {
    collector: Option<Collector>,
    events: AtomicU64,
    lost: AtomicU64,
    programs: Vec<(String, OwnedFd)>,
    otlp: std::sync::OnceLock<Arc<OtlpStats>>,
}

impl RunMetrics {
    pub fn families(&self) -> Vec<Family> {
        self.collect().0
    }

    /// The families, and what could not be read (a map, or a declared name clashing with the
    /// run's own).
    fn collect(&self) -> (Vec<Family>, Vec<String>) {
        let (declared, mut errors) = match &self.collector {
            Some(c) => c.collect(),
            None => (Vec::new(), Vec::new()),
        };
        let mut fams = Vec::new();
        let counter = |name: &str, help: &str, series: Vec<Series>| Family {
            name: name.into(),
            help: help.into(),
            kind: Kind::Counter,
            unit: String::new(),
            series,
        };
        let one = |v: u64| {
            vec![Series {
                labels: Vec::new(),
                value: Value::Number(v as f64),
            }]
        };
        fams.push(counter(
            "apiary_run_events_total",
            "Events read from the program's ring buffers and perf event arrays.",
            one(self.events.load(Ordering::Relaxed)),
        ));
        fams.push(counter(
            "apiary_run_events_lost_total",
            "Events the kernel reported lost (perf event arrays).",
            one(self.lost.load(Ordering::Relaxed)),
        ));
        let mut runs = Vec::new();
        let mut secs = Vec::new();
        for (name, fd) in &self.programs {
            if let Ok(i) = sys::prog_info(fd.as_fd()) {
                let labels = vec![("program".to_string(), name.clone())];
                runs.push(Series {
                    labels: labels.clone(),
                    value: Value::Number(i.run_cnt as f64),
                });
                secs.push(Series {
                    labels,
                    value: Value::Number(i.run_time_ns as f64 / 1e9),
                });
            }
        }
        fams.push(counter(
            "apiary_run_program_runs_total",
            "Times each program ran (counted while the kernel's BPF stats are on, as they are during a run with metrics).",
            runs,
        ));
        fams.push(counter(
            "apiary_run_program_run_seconds_total",
            "Time each program spent running.",
            secs,
        ));
        if let Some(o) = self.otlp.get() {
            fams.push(counter(
                "apiary_run_otlp_logs_dropped_total",
                "Events not exported as OTLP log records because the export queue was full.",
                one(o.logs_dropped.load(Ordering::Relaxed)),
            ));
            fams.push(counter(
                "apiary_run_otlp_requests_failed_total",
                "OTLP export requests that failed after their retries.",
                one(o.requests_failed.load(Ordering::Relaxed)),
            ));
        }
        fams.push(Family {
            name: "apiary_run_metric_errors".into(),
            help: "Declared maps (or names) this collection could not export (see the comments)."
                .into(),
            kind: Kind::Gauge,
            unit: String::new(),
            series: Vec::new(),
        });
        let own: Vec<String> = fams.iter().map(|f| f.name.clone()).collect();
        let own: Vec<&str> = own.iter().map(String::as_str).collect();
        let declared = crate::metrics::merge(vec![declared], &own, &mut errors);
        if let Some(f) = fams
            .iter_mut()
            .find(|f| f.name == "apiary_run_metric_errors")
        {
            f.series = one(errors.len() as u64);
        }
        (declared.into_iter().chain(fams).collect(), errors)
    }

    /// The Prometheus text of [`RunMetrics::families`], with what could not be read as comments.
    pub fn text(&self) -> String {
        let (fams, errors) = self.collect();
        let mut out = crate::metrics::render::to_text(&fams);
        for e in errors {
            out.push_str("# ");
            out.push_str(&e.replace('\n', " "));
            out.push('\n');
        }
        out
    }
}

#[derive(Debug, Default)]
pub struct RunSummary {
    pub events: u64,
    pub lost: u64,
}

/// Text waiting to be written, and where it goes. Shared by the event callback and the map
/// dumps between polls.
struct Sink<'a> {
    buf: String,
    out: &'a mut dyn Write,
    err: Option<std::io::Error>,
}

impl Sink<'_> {
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Err(e) = self
            .out
            .write_all(self.buf.as_bytes())
            .and_then(|_| self.out.flush())
        {
            self.err.get_or_insert(e);
        }
        self.buf.clear();
    }
}

struct EventMap {
    name: String,
    format: Option<Format>,
    /// `"_map":"NAME"`, the first member of each JSON event when the object has several
    /// event maps; empty otherwise.
    tag: String,
}

/// Run until `stop()` or the duration ends. Events go to `out`; progress and notes to `note`.
pub fn run(
    spec: &RunSpec,
    out: &mut dyn Write,
    note: &mut dyn FnMut(&str),
    stop: &dyn Fn() -> bool,
) -> Result<RunSummary> {
    run_with(spec, out, note, stop, RunHooks::default())
}

/// Each event map and the struct its records decode as (empty: printed as hex).
pub type EventTypes = [(String, String)];

/// [`run`], with metrics served by the caller (`hooks`) and pushed over OTLP (`spec.otlp`).
pub fn run_with(
    spec: &RunSpec,
    out: &mut dyn Write,
    note: &mut dyn FnMut(&str),
    stop: &dyn Fn() -> bool,
    hooks: RunHooks<'_>,
) -> Result<RunSummary> {
    let fetched = source::fetch(&spec.source)?;
    let mut info = apiary_core::elf::inspect(&fetched.object).map_err(|error| Error::Object {
        source_name: fetched.name.clone(),
        error,
    })?;
    let globals = apiary_core::globals::resolve(&info, &spec.raw_globals, &spec.typed_globals)
        .map_err(Error::InvalidArgument)?;
    check_names(spec, &info)?;
    let req = LoadRequest {
        object: &fetched.object,
        source: &fetched.name,
        // Named programs only; none named loads them all.
        programs: spec
            .programs
            .iter()
            .map(|name| apiary_kernel::ProgramSelect {
                ty: None,
                name: name.clone(),
            })
            .collect(),
        globals,
        reuse_maps: Vec::new(),
        object_name: None,
        core_btf: None,
    };
    let mut writer = EventWriter::new(event_formats(spec, &fetched, &mut info, note)?, spec.json);
    let named: Vec<(String, String)> = writer
        .maps
        .iter()
        .map(|m| {
            let t = m.format.as_ref().map(|f| f.type_name()).unwrap_or_default();
            (m.name.clone(), t.to_string())
        })
        .collect();
    if let Some(f) = hooks.on_types {
        f(&named);
    }

    // What the chosen programs need to attach is checked before anything loads.
    let chosen: Vec<(String, String)> = info
        .programs
        .iter()
        .filter(|p| spec.programs.is_empty() || spec.programs.contains(&p.name))
        .map(|p| (p.name.clone(), p.section.clone()))
        .collect();
    apiary_kernel::session::check_targets(&spec.targets, &chosen)?;
    let decls = metric_decls(spec, &fetched)?;
    // Declared maps are checked against the object before anything loads.
    for m in decls.iter().flat_map(|d| &d.maps) {
        if info.map(&m.map).is_none() {
            return Err(Error::InvalidArgument(
                crate::metrics::MetricsError::NoSuchMap { map: m.map.clone() }.to_string(),
            ));
        }
    }
    let session = Session::start(&req, &spec.targets)?;
    announce(&session, note);
    let exported = hooks.on_metrics.is_some() || spec.otlp.is_some();
    // Held while the run exports metrics, so the kernel counts program runs and run time.
    let _stats = if exported {
        sys::enable_stats().ok()
    } else {
        None
    };
    let metrics = if exported {
        Some(Arc::new(run_metrics(&session, decls.as_ref(), note)?))
    } else {
        if decls.is_some() {
            note(
                "metric declarations found; export them with --metrics ADDR or --otlp-endpoint URL",
            );
        }
        None
    };
    let exporter = match (&spec.otlp, &metrics) {
        (Some(cfg), Some(m)) => {
            let m2 = m.clone();
            let e = Exporter::start(cfg.clone(), Box::new(move || m2.families()));
            let _ = m.otlp.set(e.stats());
            note(&format!(
                "pushing metrics and events to {} over OTLP/HTTP every {}",
                cfg.endpoint,
                humantime::format_duration(cfg.interval)
            ));
            Some(e)
        }
        _ => None,
    };
    if let (Some(f), Some(m)) = (hooks.on_metrics, &metrics) {
        f(m.clone());
    }
    // Iterators run when read: print each once. An object of iterators only is then done.
    for (p, text) in session.read_iterators()? {
        note(&format!("iterator {p} printed {} bytes", text.len()));
        out.write_all(&text)
            .and_then(|_| out.flush())
            .map_err(|e| Error::Internal(format!("write output: {e}")))?;
    }
    if session.only_iterators() && writer.maps.is_empty() && spec.dump_maps.is_empty() {
        return Ok(RunSummary::default());
    }

    let deadline = spec.duration.map(|d| Instant::now() + d);
    let mut summary = RunSummary::default();
    let sink = std::cell::RefCell::new(Sink {
        buf: String::with_capacity(1 << 17),
        out,
        err: None,
    });
    if let Some(h) = writer.header() {
        sink.borrow_mut().buf.push_str(&h);
    }
    let names: Vec<String> = writer.maps.iter().map(|m| m.name.clone()).collect();
    let map_btf = info.btf.clone();
    let dump = |buf: &mut String| -> Result<()> {
        for m in &spec.dump_maps {
            dump_map(&session, &info, map_btf.as_ref(), m, spec.json, buf)?;
        }
        Ok(())
    };
    {
        let mut on_event = |i: usize, data: &[u8]| {
            summary.events += 1;
            if let Some(m) = &metrics {
                m.events.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(e) = &exporter {
                if let Some((map, json)) = writer.json(i, data) {
                    e.event(map, json);
                }
            }
            let mut s = sink.borrow_mut();
            writer.write(i, data, &mut s.buf);
            if s.buf.len() > (1 << 16) {
                s.flush();
            }
        };
        let mut lost_total = 0u64;
        let mut on_lost = |_i: usize, n: u64| {
            lost_total += n;
            if let Some(m) = &metrics {
                m.lost.fetch_add(n, Ordering::Relaxed);
            }
        };
        let dump_err: std::cell::RefCell<Option<Error>> = std::cell::RefCell::new(None);
        let mut next_dump = Instant::now() + spec.interval;
        // Flushed after every poll round, so events show up promptly; maps are dumped between
        // polls when their interval is due. The buffers stay open throughout, so no event is
        // lost to a dump.
        let mut on_poll = || {
            if !spec.dump_maps.is_empty()
                && dump_err.borrow().is_none()
                && Instant::now() >= next_dump
            {
                next_dump += spec.interval;
                if let Err(e) = dump(&mut sink.borrow_mut().buf) {
                    *dump_err.borrow_mut() = Some(e);
                }
            }
            sink.borrow_mut().flush();
        };
        let stop_now = || {
            stop() || deadline.is_some_and(|d| Instant::now() >= d) || dump_err.borrow().is_some()
        };
        // "running" once the buffers are open: events sent after it are all delivered.
        let mut ready = || {
            note(&match spec.duration {
                Some(d) => format!(
                    "running for {}; Ctrl-C to stop sooner",
                    humantime::format_duration(d)
                ),
                None => "running; Ctrl-C to stop".to_string(),
            });
        };
        session.stream(
            &names,
            &mut on_event,
            &mut on_lost,
            &mut ready,
            &mut on_poll,
            &stop_now,
        )?;
        summary.lost = lost_total;
        if let Some(e) = dump_err.into_inner() {
            return Err(e);
        }
    }
    let mut sink = sink.into_inner();
    dump(&mut sink.buf)?;
    sink.flush();
    if let Some(e) = exporter {
        // The last events and a final metrics push, while the maps still hold their numbers.
        e.finish();
    }
    if let Some(e) = sink.err {
        return Err(Error::Internal(format!("writing events: {e}")));
    }
    drop(session);
    Ok(summary)
}

/// The declarations to export: `--metrics-config`, else the package's.
fn metric_decls(spec: &RunSpec, fetched: &source::Fetched) -> Result<Option<Decls>> {
    if let Some(path) = &spec.metrics_config {
        return Decls::read(path)
            .map(Some)
            .map_err(|e| Error::InvalidArgument(e.to_string()));
    }
    Ok(fetched.package.as_ref().and_then(|p| p.metrics.clone()))
}

/// The run's metrics over descriptors of its own (duplicated from the session's), so they can
/// be read from the threads that serve and push them.
fn run_metrics(
    session: &Session,
    decls: Option<&Decls>,
    note: &mut dyn FnMut(&str),
) -> Result<RunMetrics> {
    let loaded = session.loaded();
    let collector = match decls {
        Some(d) => {
            let c = Collector::new(
                d,
                |name| {
                    loaded
                        .map_fd(name)
                        .and_then(|fd| fd.try_clone_to_owned().ok())
                },
                Vec::new(),
            )
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            let names: Vec<&str> = d.maps.iter().map(|m| m.map.as_str()).collect();
            note(&format!("metrics from map(s) {}", names.join(", ")));
            Some(c)
        }
        None => {
            note("no metric declarations (NAME.metrics.yaml or --metrics-config): exporting the run's own counters only");
            None
        }
    };
    let programs = loaded
        .programs
        .iter()
        .filter_map(|p| {
            let fd = loaded.program_fd(&p.name)?.try_clone_to_owned().ok()?;
            Some((p.name.clone(), fd))
        })
        .collect();
    Ok(RunMetrics {
        collector,
        events: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        programs,
        otlp: std::sync::OnceLock::new(),
    })
}

/// Every map and program the user named exists, before anything loads.
fn check_names(spec: &RunSpec, info: &apiary_core::elf::ObjectInfo) -> Result<()> {
    for m in &spec.dump_maps {
        if info.map(m).is_none() {
            let names: Vec<&str> = info.maps.iter().map(|m| m.name.as_str()).collect();
            return Err(Error::InvalidArgument(format!(
                "--dump-map {m}: no such map; the object has: {}",
                names.join(", ")
            )));
        }
    }
    for p in &spec.programs {
        if info.program(p).is_none() {
            let names: Vec<&str> = info.programs.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::InvalidArgument(format!(
                "--programs {p}: no such program; the object has: {}",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// How each event map's records are printed: the type named by the user or the package, else
/// the one found in BTF or DWARF (which `info.btf` gains here), else hex. Each choice is noted.
fn event_formats(
    spec: &RunSpec,
    fetched: &source::Fetched,
    info: &mut apiary_core::elf::ObjectInfo,
    note: &mut dyn FnMut(&str),
) -> Result<Vec<EventMap>> {
    let found_maps = event_maps(info);
    if found_maps.is_empty() && spec.dump_maps.is_empty() {
        note("the object has no ring buffer or perf event array: no events to print");
    }
    let mut emaps = Vec::new();
    for (name, kind) in found_maps {
        // A package records the event type it was built with; an explicit flag still wins.
        let explicit = spec.event_type.clone().or_else(|| {
            fetched
                .package
                .as_ref()
                .and_then(|p| p.event_types.get(&name).cloned())
        });
        let kind_name = if kind == EventMapKind::RingBuf {
            "ring buffer"
        } else {
            "perf event array"
        };
        // A package's object has no DWARF: a type only DWARF held travels with the package.
        if let Some(f) = carried_format(spec, fetched, &name)? {
            note(&format!(
                "events from {kind_name} {name} decoded as {} (from the package, which carries the type the object's DWARF held)",
                f.type_name()
            ));
            emaps.push(EventMap {
                name,
                format: Some(f),
                tag: String::new(),
            });
            continue;
        }
        // Types only in DWARF are appended to info.btf here, before anything uses it.
        let found = events::event_type(info, &fetched.object, &name, explicit.as_deref())
            .map_err(Error::InvalidArgument)?;
        let format = match (found, info.btf.as_ref()) {
            (Some(t), Some(b)) => {
                let (id, how) = (t.id, t.describe());
                let f = Format::new(b, id);
                match &f {
                    Some(f) => note(&format!(
                        "events from {kind_name} {name} decoded as {} (from {how})",
                        f.type_name()
                    )),
                    None => note(&format!(
                        "events from {kind_name} {name}: cannot decode type {} ; printing hex",
                        b.type_name(id)
                    )),
                }
                f
            }
            _ => {
                note(&format!(
                    "events from {kind_name} {name}: no event type found (name one with --event-type STRUCT or {name}=STRUCT, build with -g so structs only local variables use are in DWARF, or declare `__type(value, struct event)` on the map); printing hex"
                ));
                None
            }
        };
        emaps.push(EventMap {
            name,
            format,
            tag: String::new(),
        });
    }
    if emaps.len() > 1 {
        for m in &mut emaps {
            // Map names are C identifiers: nothing to escape.
            m.tag = format!("\"_map\":\"{}\"", m.name);
        }
    }
    Ok(emaps)
}

/// The event format of `map` from the type definition its package carries, unless the user
/// named a type.
fn carried_format(spec: &RunSpec, fetched: &source::Fetched, map: &str) -> Result<Option<Format>> {
    if spec.event_type.is_some() {
        return Ok(None);
    }
    let Some(sub) = fetched
        .package
        .as_ref()
        .and_then(|p| p.event_type_defs.get(map))
    else {
        return Ok(None);
    };
    let (btf, id) = sub.to_btf().map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: the event type carried for map {map} is malformed: {e}",
            fetched.name
        ))
    })?;
    Ok(Format::new(&btf, id))
}

/// Say what was attached, what was not and why, and which programs share a hook.
fn announce(session: &Session, note: &mut dyn FnMut(&str)) {
    for (p, kid, at) in &session.attached {
        note(&format!("attached {p} (kernel id {kid}) to {at}"));
    }
    for (p, why) in &session.skipped {
        note(&format!("not attached: {p}: {why}"));
    }
    for (hook, names) in shared_hooks(session) {
        note(&format!(
            "programs {} run on the same hook ({hook}): tools often carry alternatives for different kernels, so each event may be handled more than once; choose with --programs {}",
            names.join(" and "),
            names.first().map(String::as_str).unwrap_or_default()
        ));
    }
}

/// One line per event: a JSON object, or a table row (time, map when there are several, the
/// decoded fields or hex).
struct EventWriter {
    maps: Vec<EventMap>,
    json: bool,
    map_width: usize,
    stamp: String,
    stamp_at: Instant,
}

impl EventWriter {
    fn new(maps: Vec<EventMap>, json: bool) -> EventWriter {
        let map_width = maps.iter().map(|m| m.name.len()).max().unwrap_or(0).max(3);
        EventWriter {
            maps,
            json,
            map_width,
            stamp: String::new(),
            stamp_at: Instant::now() - Duration::from_secs(2),
        }
    }

    /// The table's header (TIME is HH:MM:SS; MAP as wide as the longest map name), if there is
    /// a table with decoded columns.
    fn header(&self) -> Option<String> {
        if self.json {
            return None;
        }
        let f = self.maps.iter().find_map(|m| m.format.as_ref())?;
        let mut h = String::from("TIME    ");
        if self.maps.len() > 1 {
            h.push_str(&format!("  {:<w$}", "MAP", w = self.map_width));
        }
        h.push_str("  ");
        h.push_str(&f.header());
        h.push('\n');
        Some(h)
    }

    /// The event as a JSON object (hex when it cannot be decoded), with its map's name.
    fn json(&self, i: usize, data: &[u8]) -> Option<(&str, String)> {
        let m = self.maps.get(i)?;
        let mut s = String::new();
        match &m.format {
            Some(f) => f.write_json_tagged(data, "", &mut s),
            None => {
                s.push_str("{\"_hex\":\"");
                s.push_str(&hex::encode(data));
                s.push_str("\"}");
            }
        }
        Some((&m.name, s))
    }

    fn write(&mut self, i: usize, data: &[u8], buf: &mut String) {
        let Some(m) = self.maps.get(i) else { return };
        if self.json {
            match &m.format {
                Some(f) => f.write_json_tagged(data, &m.tag, buf),
                None => {
                    buf.push_str("{\"_map\":\"");
                    buf.push_str(&m.name);
                    buf.push_str("\",\"_hex\":\"");
                    buf.push_str(&hex::encode(data));
                    buf.push_str("\"}");
                }
            }
        } else {
            // Wall-clock seconds change rarely compared with event rates: format once a second.
            if self.stamp_at.elapsed() >= Duration::from_millis(1000) || self.stamp.is_empty() {
                let now =
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
                self.stamp = now.get(11..19).unwrap_or(&now).to_string();
                self.stamp_at = Instant::now();
            }
            buf.push_str(&self.stamp);
            if self.maps.len() > 1 {
                buf.push_str("  ");
                buf.push_str(&m.name);
                buf.extend(std::iter::repeat_n(' ', self.map_width - m.name.len()));
            }
            buf.push_str("  ");
            match &m.format {
                Some(f) => f.write_row(data, buf),
                None => buf.push_str(&hex::encode(data)),
            }
        }
        buf.push('\n');
    }
}

/// Ring buffers and perf event arrays declared by the object, checked before anything loads.
fn event_maps(info: &apiary_core::elf::ObjectInfo) -> Vec<(String, EventMapKind)> {
    info.maps
        .iter()
        .filter_map(|m| match m.map_type_name.as_str() {
            "ringbuf" => Some((m.name.clone(), EventMapKind::RingBuf)),
            "perf_event_array" => Some((m.name.clone(), EventMapKind::PerfArray)),
            _ => None,
        })
        .collect()
}

/// Print one snapshot of a map: decoded entries, or a log2 histogram for maps that look like
/// one (an array of integer counters whose name mentions hist/slot).
fn dump_map(
    session: &Session,
    info: &apiary_core::elf::ObjectInfo,
    btf: Option<&Btf>,
    name: &str,
    json: bool,
    buf: &mut String,
) -> Result<()> {
    let fd = session
        .loaded()
        .map_fd(name)
        .ok_or_else(|| Error::InvalidArgument(format!("no map {name}")))?;
    let minfo = sys::map_info(fd.as_fd())?;
    let entries = maps::dump(fd.as_fd(), &minfo, 100_000)?;
    let def = info.map(name);
    let kt = def.and_then(|d| d.key_type);
    let vt = def.and_then(|d| d.value_type);
    let dec = |t: Option<u32>, b: &[u8]| -> serde_json::Value {
        match (btf, t) {
            (Some(bt), Some(t)) => {
                apiary_core::btf::decode(bt, t, b).unwrap_or_else(|_| hex::encode(b).into())
            }
            _ => hex::encode(b).into(),
        }
    };
    let rows: Vec<(serde_json::Value, serde_json::Value)> = entries
        .iter()
        .map(|e| {
            let v: Vec<serde_json::Value> = e.values.iter().map(|v| dec(vt, v)).collect();
            let value = if v.len() == 1 {
                v.into_iter().next().unwrap_or_default()
            } else if v.iter().all(|x| x.is_u64()) {
                // Per-CPU counters: their sum is what people want to see.
                v.iter().filter_map(|x| x.as_u64()).sum::<u64>().into()
            } else {
                serde_json::Value::Array(v)
            };
            (dec(kt, &e.key), value)
        })
        .collect();
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    if json {
        let obj = serde_json::json!({
            "_map": name,
            "time": now,
            "entries": rows.iter().map(|(k, v)| serde_json::json!({"key": k, "value": v})).collect::<Vec<_>>(),
        });
        buf.push_str(&obj.to_string());
        buf.push('\n');
        return Ok(());
    }
    let lname = name.to_ascii_lowercase();
    let histogram = (lname.contains("hist") || lname.contains("slot"))
        && minfo.map_type == "array"
        && rows.iter().all(|(k, v)| k.is_u64() && v.is_u64());
    buf.push_str(&format!(
        "--- map {name} at {now} ({} entries)\n",
        rows.len()
    ));
    if histogram {
        let counts: Vec<u64> = rows.iter().map(|(_, v)| v.as_u64().unwrap_or(0)).collect();
        let last = counts
            .iter()
            .rposition(|c| *c > 0)
            .map(|i| i + 1)
            .unwrap_or(0);
        let max = counts.iter().copied().max().unwrap_or(0).max(1);
        for (i, c) in counts.iter().take(last).enumerate() {
            let lo: u64 = if i == 0 { 0 } else { 1u64 << (i - 1).min(63) };
            let hi: u64 = if i == 0 {
                1
            } else {
                (1u64 << i.min(63)).saturating_sub(1)
            };
            let bar = "*".repeat(((*c as f64 / max as f64) * 40.0).round() as usize);
            buf.push_str(&format!("{lo:>12} -> {hi:<12} : {c:<10} |{bar:<40}|\n"));
        }
    } else {
        for (k, v) in &rows {
            let ks = match k {
                serde_json::Value::String(s) => s.clone(),
                o => o.to_string(),
            };
            buf.push_str(&format!("{ks}  {v}\n"));
        }
    }
    Ok(())
}

/// Groups of attached programs that run on the same kernel event (see
/// `apiary_core::attach::run_event_key`); others group by where they were attached.
fn shared_hooks(session: &Session) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (name, _, desc) in &session.attached {
        let Some(p) = session.loaded().programs.iter().find(|p| p.name == *name) else {
            continue;
        };
        let key = apiary_core::attach::run_event_key(p.ty, &p.section).unwrap_or(desc.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(name.clone()),
            None => groups.push((key, vec![name.clone()])),
        }
    }
    groups.retain(|(_, v)| v.len() > 1);
    groups
}
