//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.

use crate::{Result, StoreError};
use rusqlite::Connection;
use std::path::Path;

const MIGRATIONS: &[&str] = &[
    // 1: programs, their maps, links, and the object bytes they came from.
    "CREATE TABLE objects (
        sha256 TEXT PRIMARY KEY,
        bytes BLOB NOT NULL
    ) STRICT;
    CREATE TABLE programs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        prog_type TEXT NOT NULL,
        section TEXT NOT NULL,
        source TEXT NOT NULL,
        object_sha256 TEXT NOT NULL REFERENCES objects(sha256),
        kernel_id INTEGER NOT NULL,
        tag TEXT NOT NULL,
        map_owner_id INTEGER REFERENCES programs(id),
        globals TEXT NOT NULL,
        metadata TEXT NOT NULL,
        loaded_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE maps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner_id INTEGER NOT NULL REFERENCES programs(id),
        name TEXT NOT NULL,
        map_type TEXT NOT NULL,
        kernel_id INTEGER NOT NULL,
        key_size INTEGER NOT NULL,
        value_size INTEGER NOT NULL,
        max_entries INTEGER NOT NULL,
        UNIQUE (owner_id, name)
    ) STRICT;
    CREATE TABLE program_maps (
        program_id INTEGER NOT NULL REFERENCES programs(id),
        map_id INTEGER NOT NULL REFERENCES maps(id),
        PRIMARY KEY (program_id, map_id)
    ) STRICT;
    CREATE TABLE links (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        program_id INTEGER NOT NULL REFERENCES programs(id),
        spec TEXT NOT NULL,
        kernel_link_ids TEXT NOT NULL,
        extra TEXT,
        created_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX links_program ON links(program_id);",
    // 2: XDP/TC chains. A chained program keeps its final instructions (`block`, JSON) so any
    // process can compose the chain again; each chain member is a link with a slot.
    "ALTER TABLE programs ADD COLUMN block TEXT;
    CREATE TABLE chains (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        iface TEXT NOT NULL,
        netns TEXT NOT NULL,
        direction TEXT NOT NULL,
        mode TEXT NOT NULL,
        link_kernel_id INTEGER NOT NULL,
        dispatcher_kernel_id INTEGER NOT NULL,
        UNIQUE (kind, iface, netns, direction)
    ) STRICT;
    CREATE TABLE chain_slots (
        link_id INTEGER PRIMARY KEY REFERENCES links(id),
        chain_id INTEGER NOT NULL REFERENCES chains(id),
        priority INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        proceed_on INTEGER NOT NULL
    ) STRICT;",
    // 3: maps declared with LIBBPF_PIN_BY_NAME are shared by name between the programs of one
    // instance: owned by one user at a time, removed with the last. A chain member's counters
    // from dispatchers that were replaced (little-endian u64 per bucket), so they add up
    // across recompositions.
    "ALTER TABLE maps ADD COLUMN by_name INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX maps_by_name ON maps(name) WHERE by_name = 1;
    CREATE TABLE chain_slot_totals (
        link_id INTEGER PRIMARY KEY REFERENCES links(id),
        buckets BLOB NOT NULL
    ) STRICT;",
];

pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let supported = MIGRATIONS.len() as i64;
    // The common case, an up-to-date store, needs no write lock.
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current == supported {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > supported {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported,
        });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}
