//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.

use crate::{Result, StoreError};
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;

pub(crate) const MIGRATIONS: &[&str] = &[
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
    // 4: typed rows. A chain's hook has NULL for the host's namespace and for XDP's direction
    // (it had ''), so each column reads back as the value it holds; a link's kind is a column,
    // and a legacy TC filter's handle sits in columns, instead of JSON in `extra` to be guessed
    // at. The chains table is rebuilt to relax NOT NULL (SQLite cannot alter a column), which
    // `migrate` does with foreign keys off and checked before it commits.
    "CREATE TABLE chains_v4 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        iface TEXT NOT NULL,
        netns TEXT,
        direction TEXT,
        mode TEXT NOT NULL,
        link_kernel_id INTEGER NOT NULL,
        dispatcher_kernel_id INTEGER NOT NULL
    ) STRICT;
    INSERT INTO chains_v4
        SELECT id, kind, iface, NULLIF(netns, ''), NULLIF(direction, ''), mode, link_kernel_id,
               dispatcher_kernel_id
        FROM chains;
    DROP TABLE chains;
    ALTER TABLE chains_v4 RENAME TO chains;
    CREATE UNIQUE INDEX chains_hook ON chains (kind, iface, ifnull(netns, ''), ifnull(direction, ''));
    ALTER TABLE links ADD COLUMN kind TEXT NOT NULL DEFAULT 'links';
    ALTER TABLE links ADD COLUMN tc_ifindex INTEGER;
    ALTER TABLE links ADD COLUMN tc_handle INTEGER;
    ALTER TABLE links ADD COLUMN tc_priority INTEGER;
    UPDATE links SET kind = 'chain-member' WHERE json_extract(extra, '$.chain') IS NOT NULL;
    UPDATE links SET kind = 'tc-filter',
        tc_ifindex = json_extract(extra, '$.ifindex'),
        tc_handle = json_extract(extra, '$.handle'),
        tc_priority = json_extract(extra, '$.priority')
        WHERE json_extract(extra, '$.handle') IS NOT NULL;
    ALTER TABLE links DROP COLUMN extra;",
];

pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let supported = MIGRATIONS.len() as i64;
    // The common case, an up-to-date store, needs no write lock.
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current == supported {
        return Ok(());
    }
    // A migration may rebuild a table others refer to, which SQLite only allows with foreign
    // keys off (the switch is ignored inside a transaction); they are checked before commit.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let result = apply(conn, path, supported);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    result
}

fn apply(conn: &mut Connection, path: &Path, supported: i64) -> Result<()> {
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
    let broken: Option<String> = tx
        .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
        .optional()?;
    if let Some(table) = broken {
        return Err(StoreError::Corrupt(format!(
            "migrating {} left rows of table {table} pointing at nothing; the store is unchanged",
            path.display()
        )));
    }
    tx.commit()?;
    Ok(())
}
