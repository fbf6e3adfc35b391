//! apiary-store: the SQLite file that records what apiary manages (desired state) and what it
//! observed in the kernel when it made it. Several processes open it at once (CLI runs, the
//! daemon), so it runs in WAL mode with a busy timeout, and every multi-row change is one
//! transaction. Object bytes are kept so that programs can be restored after bpffs is wiped.

mod schema;

use apiary_core::{AttachSpec, ChainId, Hook, LinkId, MapId, ProgramId, ProgramType};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {error}")]
    StateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("store {path}: {error}")]
    Open {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error("store: {0}")]
    Sql(rusqlite::Error),
    #[error("store: bad JSON in column {column}: {error}")]
    Json {
        column: &'static str,
        error: serde_json::Error,
    },
    #[error("store: {0}")]
    Corrupt(String),
    #[error("store {path} has schema version {found}, newer than this apiary ({supported}); upgrade apiary")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
}

// Not `#[from]`: the message already carries the SQLite error, so it is not also a `source`
// (that would print it twice in an error chain).
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e)
    }
}

/// The transaction `Store::write` hands out; store functions take it as a `&Connection`.
pub type Tx<'a> = Transaction<'a>;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GlobalRecord {
    pub name: String,
    pub section: String,
    pub offset: usize,
    pub hex: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramRecord {
    pub id: ProgramId,
    pub name: String,
    pub prog_type: ProgramType,
    pub section: String,
    pub source: String,
    pub object_sha256: String,
    pub kernel_id: u32,
    pub tag: String,
    pub map_owner_id: Option<ProgramId>,
    pub globals: Vec<GlobalRecord>,
    pub metadata: BTreeMap<String, String>,
    pub loaded_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapRecord {
    pub id: MapId,
    pub owner_id: ProgramId,
    pub name: String,
    pub map_type: String,
    pub kernel_id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Declared with LIBBPF_PIN_BY_NAME: shared by name with every program of this instance that
    /// declares it, and pinned by name rather than under its owner.
    pub by_name: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkRecord {
    pub id: LinkId,
    pub program_id: ProgramId,
    pub spec: AttachSpec,
    pub kernel_link_ids: Vec<u32>,
    pub kind: LinkKind,
    pub created_at: String,
}

/// What stands for a link in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    /// bpf_link(s), pinned under the link's directory.
    Links,
    /// A legacy TC filter: the kernel keeps no link object, so its handle is kept here.
    TcFilter(TcHandle),
    /// A slot in an XDP/TC chain (which chain and where: `chain_slots`).
    ChainMember,
}

/// Where a legacy TC filter sits on its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcHandle {
    pub ifindex: u32,
    pub handle: u32,
    pub priority: u32,
}

impl LinkKind {
    fn name(&self) -> &'static str {
        match self {
            LinkKind::Links => "links",
            LinkKind::TcFilter(_) => "tc-filter",
            LinkKind::ChainMember => "chain-member",
        }
    }

    fn tc(&self) -> Option<&TcHandle> {
        match self {
            LinkKind::TcFilter(h) => Some(h),
            LinkKind::Links | LinkKind::ChainMember => None,
        }
    }
}

/// A program about to be recorded; the store assigns its id.
#[derive(Debug, Clone)]
pub struct NewProgram<'a> {
    pub name: &'a str,
    pub prog_type: ProgramType,
    pub section: &'a str,
    pub source: &'a str,
    pub object_sha256: &'a str,
    pub map_owner_id: Option<ProgramId>,
    pub globals: &'a [GlobalRecord],
    pub metadata: &'a BTreeMap<String, String>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn from_json<T: for<'de> Deserialize<'de>>(s: &str, column: &'static str) -> Result<T> {
    serde_json::from_str(s).map_err(|error| StoreError::Json { column, error })
}

/// WAL pages after which a commit checkpoints (see `Store::open`).
const WAL_CHECKPOINT_PAGES: i64 = 64;

impl Store {
    pub fn open(state_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(state_dir).map_err(|error| StoreError::StateDir {
            path: state_dir.to_path_buf(),
            error,
        })?;
        let path = state_dir.join("apiary.db");
        let open = |p: &Path| -> rusqlite::Result<Connection> {
            let conn = Connection::open(p)?;
            conn.busy_timeout(Duration::from_secs(60))?;
            // Switching the journal mode takes a lock; it is persistent, so only do it once.
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                conn.pragma_update(None, "journal_mode", "WAL")?;
            }
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            // Every CLI command is a short-lived process. Checkpointing (and fsyncing) the WAL
            // each time the last connection closes would cost more than the command itself;
            // WAL mode keeps committed transactions consistent across crashes either way.
            // But each process is the first to open the WAL, so it rebuilds the WAL index by
            // reading every frame: ~4 µs a frame here, and a load writes about 10. With the
            // default threshold (1,000 pages) that was 2 ms of every command; checkpointing at
            // 64 costs one fsync per few writing commands and keeps the rebuild under 0.3 ms.
            conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
            conn.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )?;
            Ok(conn)
        };
        let mut conn = open(&path).map_err(|error| StoreError::Open {
            path: path.clone(),
            error,
        })?;
        schema::migrate(&mut conn, &path)?;
        Ok(Store { conn, path })
    }

    /// Whether commits checkpoint the WAL (every `WAL_CHECKPOINT_PAGES`, the default) or not.
    /// A restore commits once per program and link, each commit consistent on its own; a
    /// checkpoint's fsync every few dozen commits made the fsyncs most of a restore's time. Off,
    /// the WAL grows for the restore; turning it on again checkpoints once.
    pub fn set_checkpointing(&self, on: bool) -> Result<()> {
        let pages = if on { WAL_CHECKPOINT_PAGES } else { 0 };
        self.conn
            .pragma_update(None, "wal_autocheckpoint", pages)
            .map_err(StoreError::Sql)?;
        if on {
            // PASSIVE: what readers still use stays; never waits on them.
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(StoreError::Sql)?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` in one write transaction (taken immediately, so concurrent writers queue on the
    /// busy timeout instead of failing on upgrade).
    /// The closure's error type only has to absorb store errors, so callers can abort the
    /// transaction with their own errors (a failed kernel step) too.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let v = f(&tx)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(v)
    }

    pub fn read(&self) -> &Connection {
        &self.conn
    }
}

// Queries take a `&Connection` so they work both inside a transaction and outside one
// (a `Transaction` derefs to `Connection`).

pub fn put_object(c: &Connection, sha256: &str, bytes: &[u8]) -> Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO objects (sha256, bytes) VALUES (?1, ?2)",
        params![sha256, bytes],
    )?;
    Ok(())
}

pub fn get_object(c: &Connection, sha256: &str) -> Result<Option<Vec<u8>>> {
    Ok(c.query_row(
        "SELECT bytes FROM objects WHERE sha256 = ?1",
        [sha256],
        |r| r.get(0),
    )
    .optional()?)
}

/// Insert a program row; the kernel id and tag are filled in by `set_program_kernel`.
pub fn insert_program(c: &Connection, p: &NewProgram<'_>) -> Result<ProgramId> {
    c.execute(
        "INSERT INTO programs (name, prog_type, section, source, object_sha256, kernel_id, tag, map_owner_id, globals, metadata, loaded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, '', ?6, ?7, ?8, ?9)",
        params![
            p.name,
            p.prog_type.name(),
            p.section,
            p.source,
            p.object_sha256,
            p.map_owner_id.map(|i| i.0),
            json(&p.globals),
            json(&p.metadata),
            now()
        ],
    )?;
    Ok(ProgramId(c.last_insert_rowid()))
}

pub fn set_program_kernel(c: &Connection, id: ProgramId, kernel_id: u32, tag: &str) -> Result<()> {
    c.execute(
        "UPDATE programs SET kernel_id = ?2, tag = ?3 WHERE id = ?1",
        params![id.0, kernel_id, tag],
    )?;
    Ok(())
}

const PROGRAM_COLS: &str = "id, name, prog_type, section, source, object_sha256, kernel_id, tag, map_owner_id, globals, metadata, loaded_at";

fn program_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ProgramRecord, String, String)> {
    let ty: String = r.get(2)?;
    let prog_type = ProgramType::parse_user(&ty).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
    })?;
    Ok((
        ProgramRecord {
            id: ProgramId(r.get(0)?),
            name: r.get(1)?,
            prog_type,
            section: r.get(3)?,
            source: r.get(4)?,
            object_sha256: r.get(5)?,
            kernel_id: r.get(6)?,
            tag: r.get(7)?,
            map_owner_id: r.get::<_, Option<i64>>(8)?.map(ProgramId),
            globals: Vec::new(),
            metadata: BTreeMap::new(),
            loaded_at: r.get(11)?,
        },
        r.get(9)?,
        r.get(10)?,
    ))
}

fn finish_program(row: (ProgramRecord, String, String)) -> Result<ProgramRecord> {
    let (mut p, globals, metadata) = row;
    p.globals = from_json(&globals, "programs.globals")?;
    p.metadata = from_json(&metadata, "programs.metadata")?;
    Ok(p)
}

pub fn get_program(c: &Connection, id: ProgramId) -> Result<Option<ProgramRecord>> {
    let row = c
        .query_row(
            &format!("SELECT {PROGRAM_COLS} FROM programs WHERE id = ?1"),
            [id.0],
            program_row,
        )
        .optional()?;
    row.map(finish_program).transpose()
}

pub fn list_programs(c: &Connection) -> Result<Vec<ProgramRecord>> {
    let mut stmt = c.prepare_cached(&format!("SELECT {PROGRAM_COLS} FROM programs ORDER BY id"))?;
    let rows = stmt.query_map([], program_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(finish_program(r?)?);
    }
    Ok(out)
}

pub fn delete_program(c: &Connection, id: ProgramId) -> Result<()> {
    c.execute("DELETE FROM program_maps WHERE program_id = ?1", [id.0])?;
    c.execute(
        "DELETE FROM program_maps WHERE map_id IN (SELECT id FROM maps WHERE owner_id = ?1)",
        [id.0],
    )?;
    c.execute("DELETE FROM maps WHERE owner_id = ?1", [id.0])?;
    for table in ["chain_slot_totals", "chain_slots"] {
        c.execute(
            &format!(
                "DELETE FROM {table} WHERE link_id IN (SELECT id FROM links WHERE program_id = ?1)"
            ),
            [id.0],
        )?;
    }
    c.execute("DELETE FROM links WHERE program_id = ?1", [id.0])?;
    c.execute("DELETE FROM programs WHERE id = ?1", [id.0])?;
    // Objects no program refers to any more are dropped with the last program.
    c.execute(
        "DELETE FROM objects WHERE sha256 NOT IN (SELECT object_sha256 FROM programs)",
        [],
    )?;
    Ok(())
}

/// A program's new code (hot update): same id, links and shared maps.
pub fn set_program_code(
    c: &Connection,
    id: ProgramId,
    kernel_id: u32,
    tag: &str,
    object_sha256: &str,
    source: &str,
    globals: &[GlobalRecord],
) -> Result<()> {
    c.execute(
        "UPDATE programs SET kernel_id = ?2, tag = ?3, object_sha256 = ?4, source = ?5, globals = ?6 WHERE id = ?1",
        params![id.0, kernel_id, tag, object_sha256, source, json(&globals)],
    )?;
    c.execute(
        "DELETE FROM objects WHERE sha256 NOT IN (SELECT object_sha256 FROM programs)",
        [],
    )?;
    Ok(())
}

pub fn set_map_kernel(c: &Connection, map_id: MapId, m: &MapRecord) -> Result<()> {
    c.execute(
        "UPDATE maps SET kernel_id = ?2, map_type = ?3, key_size = ?4, value_size = ?5, max_entries = ?6 WHERE id = ?1",
        params![map_id, m.kernel_id, m.map_type, m.key_size, m.value_size, m.max_entries],
    )?;
    Ok(())
}

pub fn remove_program_map(c: &Connection, program: ProgramId, map_id: MapId) -> Result<()> {
    c.execute(
        "DELETE FROM program_maps WHERE program_id = ?1 AND map_id = ?2",
        params![program.0, map_id],
    )?;
    Ok(())
}

pub fn insert_map(c: &Connection, m: &MapRecord) -> Result<MapId> {
    c.execute(
        "INSERT INTO maps (owner_id, name, map_type, kernel_id, key_size, value_size, max_entries, by_name) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![m.owner_id.0, m.name, m.map_type, m.kernel_id, m.key_size, m.value_size, m.max_entries, m.by_name],
    )?;
    Ok(MapId(c.last_insert_rowid()))
}

pub fn add_program_map(c: &Connection, program: ProgramId, map_id: MapId) -> Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO program_maps (program_id, map_id) VALUES (?1, ?2)",
        params![program.0, map_id],
    )?;
    Ok(())
}

fn map_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MapRecord> {
    Ok(MapRecord {
        id: r.get(0)?,
        owner_id: ProgramId(r.get(1)?),
        name: r.get(2)?,
        map_type: r.get(3)?,
        kernel_id: r.get(4)?,
        key_size: r.get(5)?,
        value_size: r.get(6)?,
        max_entries: r.get(7)?,
        by_name: r.get(8)?,
    })
}

const MAP_COLS: &str =
    "m.id, m.owner_id, m.name, m.map_type, m.kernel_id, m.key_size, m.value_size, m.max_entries, m.by_name";

/// The map shared under `name` (LIBBPF_PIN_BY_NAME), if a program of this instance declared it.
pub fn shared_map(c: &Connection, name: &str) -> Result<Option<MapRecord>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {MAP_COLS} FROM maps m WHERE m.by_name = 1 AND m.name = ?1"
    ))?;
    Ok(stmt.query_row([name], map_row).optional()?)
}

/// Programs that use map `map_id`, in id order.
pub fn map_users(c: &Connection, map_id: MapId) -> Result<Vec<ProgramId>> {
    let mut stmt = c.prepare_cached(
        "SELECT program_id FROM program_maps WHERE map_id = ?1 ORDER BY program_id",
    )?;
    let rows = stmt.query_map([map_id], |r| Ok(ProgramId(r.get(0)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Hand a shared map to another of its users, so it outlives its current owner.
pub fn set_map_owner(c: &Connection, map_id: MapId, owner: ProgramId) -> Result<()> {
    c.execute(
        "UPDATE maps SET owner_id = ?2 WHERE id = ?1",
        params![map_id, owner.0],
    )?;
    Ok(())
}

/// Maps a program uses (its own and shared ones).
pub fn maps_of_program(c: &Connection, id: ProgramId) -> Result<Vec<MapRecord>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {MAP_COLS} FROM maps m JOIN program_maps pm ON pm.map_id = m.id WHERE pm.program_id = ?1 ORDER BY m.id"
    ))?;
    let rows = stmt.query_map([id.0], map_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn maps_owned_by(c: &Connection, id: ProgramId) -> Result<Vec<MapRecord>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {MAP_COLS} FROM maps m WHERE m.owner_id = ?1 ORDER BY m.id"
    ))?;
    let rows = stmt.query_map([id.0], map_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn list_maps(c: &Connection) -> Result<Vec<MapRecord>> {
    let mut stmt = c.prepare_cached(&format!("SELECT {MAP_COLS} FROM maps m ORDER BY m.id"))?;
    let rows = stmt.query_map([], map_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Other programs that use maps owned by `id`.
pub fn map_borrowers(c: &Connection, id: ProgramId) -> Result<Vec<ProgramId>> {
    let mut stmt = c.prepare_cached(
        "SELECT DISTINCT pm.program_id FROM program_maps pm JOIN maps m ON m.id = pm.map_id
         WHERE m.owner_id = ?1 AND m.by_name = 0 AND pm.program_id != ?1 ORDER BY pm.program_id",
    )?;
    let rows = stmt.query_map([id.0], |r| Ok(ProgramId(r.get(0)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn insert_link(c: &Connection, program: ProgramId, spec: &AttachSpec) -> Result<LinkId> {
    c.execute(
        "INSERT INTO links (program_id, spec, kernel_link_ids, created_at) VALUES (?1, ?2, '[]', ?3)",
        params![program.0, json(spec), now()],
    )?;
    Ok(LinkId(c.last_insert_rowid()))
}

pub fn set_link_kernel(
    c: &Connection,
    id: LinkId,
    kernel_ids: &[u32],
    kind: &LinkKind,
) -> Result<()> {
    let tc = kind.tc();
    c.execute(
        "UPDATE links SET kernel_link_ids = ?2, kind = ?3, tc_ifindex = ?4, tc_handle = ?5, tc_priority = ?6 WHERE id = ?1",
        params![
            id.0,
            json(&kernel_ids),
            kind.name(),
            tc.map(|t| t.ifindex),
            tc.map(|t| t.handle),
            tc.map(|t| t.priority)
        ],
    )?;
    Ok(())
}

/// A link row as read: the JSON columns are decoded by `finish_link`, outside rusqlite's
/// error type, so a bad one names its column.
struct LinkRow {
    id: i64,
    program_id: i64,
    spec: String,
    kernel_ids: String,
    kind: String,
    tc: (Option<u32>, Option<u32>, Option<u32>),
    created_at: String,
}

fn link_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LinkRow> {
    Ok(LinkRow {
        id: r.get(0)?,
        program_id: r.get(1)?,
        spec: r.get(2)?,
        kernel_ids: r.get(3)?,
        kind: r.get(4)?,
        tc: (r.get(5)?, r.get(6)?, r.get(7)?),
        created_at: r.get(8)?,
    })
}

fn finish_link(row: LinkRow) -> Result<LinkRecord> {
    let kind = match (row.kind.as_str(), row.tc) {
        ("links", _) => LinkKind::Links,
        ("chain-member", _) => LinkKind::ChainMember,
        ("tc-filter", (Some(ifindex), Some(handle), Some(priority))) => {
            LinkKind::TcFilter(TcHandle {
                ifindex,
                handle,
                priority,
            })
        }
        (other, _) => {
            return Err(StoreError::Corrupt(format!(
                "link {} has kind {other:?} without what that kind needs",
                row.id
            )))
        }
    };
    Ok(LinkRecord {
        id: LinkId(row.id),
        program_id: ProgramId(row.program_id),
        spec: from_json(&row.spec, "links.spec")?,
        kernel_link_ids: from_json(&row.kernel_ids, "links.kernel_link_ids")?,
        kind,
        created_at: row.created_at,
    })
}

const LINK_COLS: &str =
    "id, program_id, spec, kernel_link_ids, kind, tc_ifindex, tc_handle, tc_priority, created_at";

pub fn get_link(c: &Connection, id: LinkId) -> Result<Option<LinkRecord>> {
    let row = c
        .query_row(
            &format!("SELECT {LINK_COLS} FROM links WHERE id = ?1"),
            [id.0],
            link_row,
        )
        .optional()?;
    row.map(finish_link).transpose()
}

pub fn list_links(c: &Connection, program: Option<ProgramId>) -> Result<Vec<LinkRecord>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {LINK_COLS} FROM links WHERE ?1 IS NULL OR program_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([program.map(|p| p.0)], link_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(finish_link(r?)?);
    }
    Ok(out)
}

pub fn delete_link(c: &Connection, id: LinkId) -> Result<()> {
    c.execute("DELETE FROM chain_slot_totals WHERE link_id = ?1", [id.0])?;
    c.execute("DELETE FROM chain_slots WHERE link_id = ?1", [id.0])?;
    c.execute("DELETE FROM links WHERE id = ?1", [id.0])?;
    Ok(())
}

pub fn set_program_block(c: &Connection, id: ProgramId, block: Option<&str>) -> Result<()> {
    c.execute(
        "UPDATE programs SET block = ?2 WHERE id = ?1",
        params![id.0, block],
    )?;
    Ok(())
}

pub fn get_program_block(c: &Connection, id: ProgramId) -> Result<Option<String>> {
    Ok(
        c.query_row("SELECT block FROM programs WHERE id = ?1", [id.0], |r| {
            r.get::<_, Option<String>>(0)
        })
        .optional()?
        .flatten(),
    )
}

/// One XDP or TC chain: the hook, and the dispatcher currently on its link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainRecord {
    pub id: ChainId,
    pub hook: Hook,
    pub link_kernel_id: u32,
    pub dispatcher_kernel_id: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainSlotRecord {
    pub link_id: LinkId,
    pub chain_id: ChainId,
    pub program_id: ProgramId,
    pub priority: u32,
    pub seq: i64,
    pub proceed_on: u32,
}

const CHAIN_COLS: &str =
    "id, kind, iface, netns, direction, mode, link_kernel_id, dispatcher_kernel_id";

fn chain_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChainRecord> {
    Ok(ChainRecord {
        id: r.get(0)?,
        hook: Hook {
            kind: r.get(1)?,
            iface: r.get(2)?,
            netns: r.get::<_, Option<String>>(3)?.map(PathBuf::from),
            direction: r.get(4)?,
            mode: r.get(5)?,
        },
        link_kernel_id: r.get(6)?,
        dispatcher_kernel_id: r.get(7)?,
    })
}

fn netns_text(h: &Hook) -> Option<String> {
    h.netns.as_ref().map(|p| p.display().to_string())
}

/// The chain on `hook` (its mode is not part of where it is).
pub fn find_chain(c: &Connection, hook: &Hook) -> Result<Option<ChainRecord>> {
    Ok(c.query_row(
        &format!("SELECT {CHAIN_COLS} FROM chains WHERE kind = ?1 AND iface = ?2 AND netns IS ?3 AND direction IS ?4"),
        params![hook.kind, hook.iface, netns_text(hook), hook.direction],
        chain_row,
    )
    .optional()?)
}

pub fn get_chain(c: &Connection, id: ChainId) -> Result<Option<ChainRecord>> {
    Ok(c.query_row(
        &format!("SELECT {CHAIN_COLS} FROM chains WHERE id = ?1"),
        [id],
        chain_row,
    )
    .optional()?)
}

pub fn list_chains(c: &Connection) -> Result<Vec<ChainRecord>> {
    let mut stmt = c.prepare_cached(&format!("SELECT {CHAIN_COLS} FROM chains ORDER BY id"))?;
    let rows = stmt.query_map([], chain_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn insert_chain(c: &Connection, ch: &ChainRecord) -> Result<ChainId> {
    c.execute(
        "INSERT INTO chains (kind, iface, netns, direction, mode, link_kernel_id, dispatcher_kernel_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![ch.hook.kind, ch.hook.iface, netns_text(&ch.hook), ch.hook.direction, ch.hook.mode, ch.link_kernel_id, ch.dispatcher_kernel_id],
    )?;
    Ok(ChainId(c.last_insert_rowid()))
}

pub fn set_chain_kernel(
    c: &Connection,
    id: ChainId,
    link_kernel_id: u32,
    dispatcher_kernel_id: u32,
) -> Result<()> {
    c.execute(
        "UPDATE chains SET link_kernel_id = ?2, dispatcher_kernel_id = ?3 WHERE id = ?1",
        params![id, link_kernel_id, dispatcher_kernel_id],
    )?;
    Ok(())
}

pub fn delete_chain(c: &Connection, id: ChainId) -> Result<()> {
    c.execute("DELETE FROM chain_slots WHERE chain_id = ?1", [id])?;
    c.execute("DELETE FROM chains WHERE id = ?1", [id])?;
    Ok(())
}

/// A chain's members, unordered (callers order by priority, then seq).
pub fn chain_slots(c: &Connection, chain_id: ChainId) -> Result<Vec<ChainSlotRecord>> {
    let mut stmt = c.prepare_cached(
        "SELECT s.link_id, s.chain_id, l.program_id, s.priority, s.seq, s.proceed_on
         FROM chain_slots s JOIN links l ON l.id = s.link_id WHERE s.chain_id = ?1 ORDER BY s.priority, s.seq",
    )?;
    let rows = stmt.query_map([chain_id], |r| {
        Ok(ChainSlotRecord {
            link_id: LinkId(r.get(0)?),
            chain_id: r.get(1)?,
            program_id: ProgramId(r.get(2)?),
            priority: r.get(3)?,
            seq: r.get(4)?,
            proceed_on: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn chain_slot_of_link(c: &Connection, link: LinkId) -> Result<Option<ChainSlotRecord>> {
    let chain_id: Option<ChainId> = c
        .query_row(
            "SELECT chain_id FROM chain_slots WHERE link_id = ?1",
            [link.0],
            |r| r.get(0),
        )
        .optional()?;
    match chain_id {
        Some(cid) => Ok(chain_slots(c, cid)?.into_iter().find(|s| s.link_id == link)),
        None => Ok(None),
    }
}

pub fn insert_chain_slot(c: &Connection, s: &ChainSlotRecord) -> Result<()> {
    c.execute(
        "INSERT INTO chain_slots (link_id, chain_id, priority, seq, proceed_on) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![s.link_id.0, s.chain_id, s.priority, s.seq, s.proceed_on],
    )?;
    Ok(())
}

/// Counters a chain member's earlier dispatchers gathered (empty if none were replaced).
pub fn slot_totals(c: &Connection, link: LinkId) -> Result<Vec<u64>> {
    let blob: Option<Vec<u8>> = c
        .query_row(
            "SELECT buckets FROM chain_slot_totals WHERE link_id = ?1",
            [link.0],
            |r| r.get(0),
        )
        .optional()?;
    Ok(blob
        .unwrap_or_default()
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
        .collect())
}

/// Add a replaced dispatcher's counters for `link` to its totals.
pub fn add_slot_totals(c: &Connection, link: LinkId, buckets: &[u64]) -> Result<()> {
    let mut total = slot_totals(c, link)?;
    apiary_core::chain::add_buckets(&mut total, buckets);
    let blob: Vec<u8> = total.iter().flat_map(|v| v.to_le_bytes()).collect();
    c.execute(
        "INSERT INTO chain_slot_totals (link_id, buckets) VALUES (?1, ?2)
         ON CONFLICT (link_id) DO UPDATE SET buckets = excluded.buckets",
        params![link.0, blob],
    )?;
    Ok(())
}

pub fn delete_chain_slot(c: &Connection, link: LinkId) -> Result<()> {
    c.execute("DELETE FROM chain_slots WHERE link_id = ?1", [link.0])?;
    Ok(())
}

#[cfg(test)]
mod tests;
