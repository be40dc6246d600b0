//! SQLite store backend: one table shaped like Kuma's Postgres one, in a single file (WAL).
//!
//! Table `resources(name, mesh, type, version, spec, labels, creation_time,
//! modification_time)`, primary key `(type, mesh, name)`; global-scoped types use `mesh = ''`.
//! `spec` is the typed spec as JSON (the fields an old-style type inlines on the wire, or the
//! `spec` object of a new-style type), `labels` a JSON object, times RFC 3339 in UTC.
//!
//! Invariants:
//! - Rows are rebuilt through [`Resource::from_wire`], so a row that no longer validates is
//!   reported as [`Error::Invalid`] instead of being served.
//! - Writes are serialised by an async mutex inside the process: SQLite has a single writer
//!   anyway, so this costs nothing, spares `SQLITE_BUSY` between our own connections, and
//!   makes the watch stream carry events in commit order. The mutex is held across the
//!   awaits of one write on purpose; nothing else is locked while it is held.
//! - Events are sent after the transaction commits, one per affected row (a Mesh delete sends
//!   one `Deleted` for every cascaded row, then one for the Mesh).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use kuma_core::resource::{Resource, ResourceKey, ResourceType, Scope};
use kuma_core::store::{Error, Event, EventKind, Store, WATCH_CAPACITY};
use serde_json::{Map, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, error::ErrorKind};
use tokio::sync::{Mutex, broadcast};

use super::Probe;

/// Schema, idempotent. The extra index serves the Mesh cascade (`WHERE mesh = ?`).
const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS resources (
        name TEXT NOT NULL,
        mesh TEXT NOT NULL,
        type TEXT NOT NULL,
        version INTEGER NOT NULL,
        spec TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        creation_time TEXT NOT NULL,
        modification_time TEXT NOT NULL,
        PRIMARY KEY (type, mesh, name)
    )",
    "CREATE INDEX IF NOT EXISTS resources_mesh ON resources (mesh)",
];

/// How long a connection waits for another process's write lock before `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Checkpoints the WAL periodically (PASSIVE: never waits for readers or writers) until the
/// pool is closed.
async fn checkpoint_wal(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "checkpointing the SQLite WAL failed");
        }
    }
}

/// A [`Store`] in a SQLite database.
pub struct SqliteStore {
    pool: SqlitePool,
    events: broadcast::Sender<Event>,
    /// Serialises writes (see the module docs).
    write: Mutex<()>,
    /// The WAL checkpoint task of a file database, stopped with the store.
    checkpointer: Option<tokio::task::AbortHandle>,
    /// The database file as opened (`None` in memory): what [`Probe`] checks.
    file: Option<FileId>,
}

/// A database file: its path and the inode it had when the store opened it.
struct FileId {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(t) = &self.checkpointer {
            t.abort();
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and its schema.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        private_file(path)?;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            // No checkpoint inside a commit: the write that crosses the WAL threshold would
            // copy the WAL into the database (and fsync) on an API request's path. A background
            // task checkpoints instead.
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot open SQLite database {}: {e}",
                    path.display()
                ))
            })?;
        let mut store = Self::init(pool).await?;
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Unavailable(format!("cannot read {}: {e}", path.display())))?;
        store.file = Some(FileId {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        });
        store.checkpointer = Some(tokio::spawn(checkpoint_wal(store.pool.clone())).abort_handle());
        Ok(store)
    }

    /// A private in-memory database (for tests): one connection kept open for the life of the
    /// pool, since every SQLite connection to `:memory:` is a separate database.
    pub async fn open_in_memory() -> Result<Self, Error> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:").map_err(map_err)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await
            .map_err(map_err)?;
        Self::init(pool).await
    }

    async fn init(pool: SqlitePool) -> Result<Self, Error> {
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await.map_err(map_err)?;
        }
        Ok(Self {
            pool,
            events: broadcast::channel(WATCH_CAPACITY).0,
            write: Mutex::new(()),
            checkpointer: None,
            file: None,
        })
    }

    /// Closes every connection; later calls fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn emit(&self, kind: EventKind, key: ResourceKey) {
        // No receiver is not an error: nobody is watching.
        let _ = self.events.send(Event { kind, key });
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, mut res: Resource) -> Result<Resource, Error> {
        let key = res.key();
        let (spec, labels) = encode(&res);
        let now = Utc::now();
        let _guard = self.write.lock().await;
        let inserted = sqlx::query(
            "INSERT INTO resources
                (name, mesh, type, version, spec, labels, creation_time, modification_time)
             VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
        )
        .bind(&key.name)
        .bind(&key.mesh)
        .bind(key.rtype.name())
        .bind(spec)
        .bind(labels)
        .bind(format_time(&now))
        .bind(format_time(&now))
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.kind() == ErrorKind::UniqueViolation => {
                return Err(Error::AlreadyExists(key));
            }
            Err(e) => return Err(map_err(e)),
        }
        res.meta.version = 1;
        res.meta.creation_time = now;
        res.meta.modification_time = now;
        self.emit(EventKind::Created, key);
        Ok(res)
    }

    async fn update(&self, mut res: Resource) -> Result<Resource, Error> {
        let key = res.key();
        let (spec, labels) = encode(&res);
        let now = Utc::now();
        let expected = i64::try_from(res.meta.version).map_err(|_| Error::Conflict(key.clone()))?;
        let _guard = self.write.lock().await;
        let row = sqlx::query(
            "UPDATE resources
             SET version = version + 1, spec = ?, labels = ?, modification_time = ?
             WHERE type = ? AND mesh = ? AND name = ? AND version = ?
             RETURNING version, creation_time",
        )
        .bind(spec)
        .bind(labels)
        .bind(format_time(&now))
        .bind(key.rtype.name())
        .bind(&key.mesh)
        .bind(&key.name)
        .bind(expected)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        let Some(row) = row else {
            // Nothing matched: either the row is gone or its version moved on. Writes are
            // serialised, so this read sees the state the UPDATE saw.
            let exists =
                sqlx::query("SELECT 1 FROM resources WHERE type = ? AND mesh = ? AND name = ?")
                    .bind(key.rtype.name())
                    .bind(&key.mesh)
                    .bind(&key.name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
            return Err(match exists {
                Some(_) => Error::Conflict(key),
                None => Error::NotFound(key),
            });
        };
        res.meta.version = decode_version(&row)?;
        res.meta.creation_time =
            parse_time(&row.try_get::<String, _>("creation_time").map_err(map_err)?)?;
        res.meta.modification_time = now;
        self.emit(EventKind::Updated, key);
        Ok(res)
    }

    async fn delete(&self, key: &ResourceKey) -> Result<(), Error> {
        let _guard = self.write.lock().await;
        // IMMEDIATE takes the write lock up front, so the transaction cannot fail half-way
        // when upgrading from a read snapshot.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let deleted = sqlx::query("DELETE FROM resources WHERE type = ? AND mesh = ? AND name = ?")
            .bind(key.rtype.name())
            .bind(&key.mesh)
            .bind(&key.name)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if deleted.rows_affected() == 0 {
            // Dropping `tx` rolls back.
            return Err(Error::NotFound(key.clone()));
        }
        let mut cascaded = Vec::new();
        if key.rtype == ResourceType::Mesh {
            // Mesh names are never empty, so this never touches global rows (mesh = '').
            let rows = sqlx::query("DELETE FROM resources WHERE mesh = ? RETURNING type, name")
                .bind(&key.name)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
            for row in rows {
                let tname: String = row.try_get("type").map_err(map_err)?;
                let name: String = row.try_get("name").map_err(map_err)?;
                let rtype = ResourceType::from_name(&tname).ok_or_else(|| {
                    Error::Invalid(format!("stored row has unknown type {tname:?}"))
                })?;
                cascaded.push(ResourceKey::new(rtype, key.name.clone(), name));
            }
            // RETURNING gives no order; send events in list order.
            cascaded.sort();
        }
        tx.commit().await.map_err(map_err)?;
        for k in cascaded {
            self.emit(EventKind::Deleted, k);
        }
        self.emit(EventKind::Deleted, key.clone());
        Ok(())
    }

    async fn get(&self, key: &ResourceKey) -> Result<Resource, Error> {
        let row = sqlx::query(
            "SELECT name, mesh, type, version, spec, labels, creation_time, modification_time
             FROM resources WHERE type = ? AND mesh = ? AND name = ?",
        )
        .bind(key.rtype.name())
        .bind(&key.mesh)
        .bind(&key.name)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        match row {
            Some(row) => decode(key.rtype, &row),
            None => Err(Error::NotFound(key.clone())),
        }
    }

    async fn list(&self, rtype: ResourceType, mesh: Option<&str>) -> Result<Vec<Resource>, Error> {
        let rows = match mesh {
            Some(m) => sqlx::query(
                "SELECT name, mesh, type, version, spec, labels, creation_time, modification_time
                     FROM resources WHERE type = ? AND mesh = ? ORDER BY mesh, name",
            )
            .bind(rtype.name())
            .bind(m)
            .fetch_all(&self.pool)
            .await,
            None => sqlx::query(
                "SELECT name, mesh, type, version, spec, labels, creation_time, modification_time
                     FROM resources WHERE type = ? ORDER BY mesh, name",
            )
            .bind(rtype.name())
            .fetch_all(&self.pool)
            .await,
        }
        .map_err(map_err)?;
        rows.iter().map(|row| decode(rtype, row)).collect()
    }

    fn watch(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// How long the probe's own connection waits for a write lock held by another process.
const PROBE_BUSY_TIMEOUT: Duration = Duration::from_millis(500);

/// The pool's connections keep working on a database file that was made unreadable, moved
/// or replaced (they hold it open; and root ignores permissions), so the probe looks at the
/// file as a new connection would: the path must still be the file the store opened, its
/// owner must be able to read and write it, and a fresh read-only connection must read the
/// table.
#[async_trait]
impl Probe for SqliteStore {
    async fn probe(&self) -> Result<(), Error> {
        let Some(file) = &self.file else {
            // In memory: the pool's one connection is the database.
            return sqlx::query("SELECT 1 FROM resources LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map(|_| ())
                .map_err(map_err);
        };
        let path = file.path.display();
        let meta = tokio::fs::metadata(&file.path)
            .await
            .map_err(|e| Error::Unavailable(format!("database file {path}: {e}")))?;
        if (meta.dev(), meta.ino()) != (file.dev, file.ino) {
            return Err(Error::Unavailable(format!(
                "database file {path} is not the file this control plane opened (moved or replaced)"
            )));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o600 != 0o600 {
            return Err(Error::Unavailable(format!(
                "database file {path} has mode {mode:03o}: its owner cannot read and write it"
            )));
        }
        let mut conn = SqliteConnectOptions::new()
            .filename(&file.path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(PROBE_BUSY_TIMEOUT)
            .connect()
            .await
            .map_err(|e| Error::Unavailable(format!("opening database file {path}: {e}")))?;
        let read = sqlx::query("SELECT 1 FROM resources LIMIT 1")
            .fetch_optional(&mut conn)
            .await
            .map_err(|e| Error::Unavailable(format!("reading database file {path}: {e}")));
        let _ = conn.close().await;
        read.map(|_| ())
    }
}

/// Wire fields that are metadata, not spec, for old-style types.
const META_FIELDS: [&str; 7] = [
    "type",
    "name",
    "mesh",
    "labels",
    "creationTime",
    "modificationTime",
    "kri",
];

/// The `spec` and `labels` columns of a resource.
fn encode(res: &Resource) -> (String, String) {
    let spec = match res.to_wire() {
        Value::Object(mut m) if res.rtype().is_new_style() => m
            .remove("spec")
            .unwrap_or_else(|| Value::Object(Map::new())),
        Value::Object(mut m) => {
            for f in META_FIELDS {
                m.remove(f);
            }
            Value::Object(m)
        }
        // Invariant: `to_wire` always builds an object.
        other => other,
    };
    let labels: Map<String, Value> = res
        .meta
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    (spec.to_string(), Value::Object(labels).to_string())
}

/// Rebuilds a resource from its row, re-validating it on the way.
fn decode(rtype: ResourceType, row: &SqliteRow) -> Result<Resource, Error> {
    let name: String = row.try_get("name").map_err(map_err)?;
    let mesh: String = row.try_get("mesh").map_err(map_err)?;
    let spec: String = row.try_get("spec").map_err(map_err)?;
    let labels: String = row.try_get("labels").map_err(map_err)?;
    let key = ResourceKey::new(rtype, mesh.clone(), name.clone());
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        Error::Invalid(format!("stored {key}: {what}: {e}"))
    };
    let spec: Value = serde_json::from_str(&spec).map_err(|e| bad("spec is not JSON", &e))?;
    let labels: Value =
        serde_json::from_str(&labels).map_err(|e| bad("labels are not JSON", &e))?;
    let mut wire = if rtype.is_new_style() {
        let mut m = Map::new();
        m.insert("spec".into(), spec);
        m
    } else {
        match spec {
            Value::Object(m) => m,
            _ => return Err(bad("spec", &"is not a JSON object")),
        }
    };
    wire.insert("type".into(), Value::String(rtype.name().into()));
    wire.insert("name".into(), Value::String(name));
    if rtype.scope() == Scope::Mesh {
        wire.insert("mesh".into(), Value::String(mesh));
    }
    wire.insert("labels".into(), labels);
    let mut res = Resource::from_wire(Value::Object(wire), Some(rtype))
        .map_err(|e| bad("no longer valid", &e))?;
    res.meta.version = decode_version(row)?;
    res.meta.creation_time =
        parse_time(&row.try_get::<String, _>("creation_time").map_err(map_err)?)?;
    res.meta.modification_time = parse_time(
        &row.try_get::<String, _>("modification_time")
            .map_err(map_err)?,
    )?;
    Ok(res)
}

fn decode_version(row: &SqliteRow) -> Result<u64, Error> {
    let v: i64 = row.try_get("version").map_err(map_err)?;
    u64::try_from(v).map_err(|_| Error::Invalid(format!("stored version {v} is negative")))
}

fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Invalid(format!("stored time {s:?}: {e}")))
}

/// Primary SQLite result codes that mean "try again later": BUSY, LOCKED, NOMEM, READONLY,
/// IOERR, FULL, CANTOPEN, PROTOCOL.
const TRANSIENT_CODES: [i64; 8] = [5, 6, 7, 8, 10, 13, 14, 15];

/// Sorts sqlx failures into the store's permanent and transient errors.
fn map_err(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::Database(db) => {
            // Extended result codes carry the primary code in the low byte.
            let primary = db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff);
            if primary.is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
                Error::Unavailable(db.to_string())
            } else {
                Error::Invalid(db.to_string())
            }
        }
        e @ (sqlx::Error::RowNotFound
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_)) => Error::Invalid(e.to_string()),
        e => Error::Unavailable(e.to_string()),
    }
}

/// Makes sure the database file exists and is readable by its owner only (0600): it holds
/// signing keys, CA keys and the admin token. SQLite gives its `-wal` and `-shm` files the mode
/// of the database file. An existing file with wider permissions is narrowed.
fn private_file(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let unavailable =
        |e: std::io::Error| Error::Unavailable(format!("cannot prepare {}: {e}", path.display()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(unavailable(e)),
    }
    let mode = std::fs::metadata(path)
        .map_err(unavailable)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the store was readable by others; narrowing it to 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(unavailable)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_core::Spec;
    use kuma_core::resource::Mesh;

    #[tokio::test]
    async fn conformance_in_memory() {
        kuma_core::store::conformance::run(|| async {
            SqliteStore::open_in_memory().await.expect("open")
        })
        .await;
    }

    #[tokio::test]
    async fn conformance_on_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = std::sync::atomic::AtomicUsize::new(0);
        let dir_path = dir.path().to_path_buf();
        kuma_core::store::conformance::run(|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir_path.join(format!("db-{i}.sqlite"));
            async move { SqliteStore::open(&path).await.expect("open") }
        })
        .await;
    }

    fn dataplane(mesh: &str, name: &str) -> Resource {
        let wire = serde_json::json!({"type": "Dataplane", "mesh": mesh, "name": name,
            "labels": {"app": "web"},
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "servicePort": 8080, "tags": {"kuma.io/service": "web"}}]}});
        Resource::from_wire(wire, None).expect("valid")
    }

    /// Writes go to the WAL only; the background task, not a commit, copies them into the
    /// database file within about a second.
    #[tokio::test]
    async fn database_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mode = |p: &Path| std::fs::metadata(p).expect("file").permissions().mode() & 0o777;
        // A new store: the database, its WAL and shared-memory files are 0600.
        let path = dir.path().join("kuma.db");
        let s = SqliteStore::open(&path).await.expect("open");
        s.create(Resource::new("default", "", Spec::Mesh(Mesh::default())))
            .await
            .expect("mesh");
        for file in ["kuma.db", "kuma.db-wal", "kuma.db-shm"] {
            assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
        }
        // An existing database readable by others is narrowed, and keeps its content.
        drop(s);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let s = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(mode(&path), 0o600);
        let key = ResourceKey::new(ResourceType::Mesh, "", "default");
        assert!(s.get(&key).await.is_ok(), "the stored Mesh survived");
    }

    #[tokio::test]
    async fn wal_is_checkpointed_in_the_background() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kuma.db");
        let mut s = SqliteStore::open(&path).await.expect("open");
        // Let the task's first (immediate) checkpoint pass, then stop it while writing: under
        // load the writes take longer than its period, and its checkpoint is not a commit's.
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.checkpointer.take().expect("a checkpointer").abort();
        let size = || std::fs::metadata(&path).expect("db file").len();
        let before = size();
        s.create(Resource::new("default", "", Spec::Mesh(Mesh::default())))
            .await
            .expect("mesh");
        // Enough commits to pass SQLite's default autocheckpoint threshold (1000 pages).
        for i in 0..600 {
            s.create(dataplane("default", &format!("dp-{i}")))
                .await
                .expect("dp");
        }
        assert_eq!(size(), before, "a commit checkpointed the WAL");
        s.checkpointer = Some(tokio::spawn(checkpoint_wal(s.pool.clone())).abort_handle());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while size() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL was not checkpointed within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kuma.db");
        let (mesh, dp) = {
            let s = SqliteStore::open(&path).await.expect("open");
            let mesh = s
                .create(Resource::new("default", "", Spec::Mesh(Mesh::default())))
                .await
                .expect("mesh");
            let dp = s.create(dataplane("default", "dp-1")).await.expect("dp");
            let dp = s.update(dp).await.expect("update");
            s.close().await;
            (mesh, dp)
        };
        let s = SqliteStore::open(&path).await.expect("reopen");
        let got = s.get(&dp.key()).await.expect("get dp");
        assert_eq!(got.spec, dp.spec);
        assert_eq!(got.meta.labels, dp.meta.labels);
        assert_eq!(got.meta.version, 2);
        assert_eq!(got.meta.creation_time, dp.meta.creation_time);
        assert_eq!(got.meta.modification_time, dp.meta.modification_time);
        assert_eq!(s.get(&mesh.key()).await.expect("get mesh").spec, mesh.spec);
        assert_eq!(
            s.list(ResourceType::Dataplane, None)
                .await
                .expect("list")
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn mesh_delete_sends_one_event_per_row() {
        let s = SqliteStore::open_in_memory().await.expect("open");
        s.create(Resource::new("a", "", Spec::Mesh(Mesh::default())))
            .await
            .expect("mesh");
        s.create(dataplane("a", "dp-1")).await.expect("dp-1");
        s.create(dataplane("a", "dp-2")).await.expect("dp-2");
        let mut rx = s.watch();
        s.delete(&ResourceKey::new(ResourceType::Mesh, "", "a"))
            .await
            .expect("delete");
        let mut got = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            assert_eq!(ev.kind, EventKind::Deleted);
            got.push(ev.key.to_string());
        }
        assert_eq!(got, ["Dataplane a/dp-1", "Dataplane a/dp-2", "Mesh a"]);
    }

    #[tokio::test]
    async fn corrupt_row_is_invalid() {
        let s = SqliteStore::open_in_memory().await.expect("open");
        let dp = s.create(dataplane("default", "dp-1")).await.expect("dp");
        sqlx::query("UPDATE resources SET spec = '{\"bogus\": 1}'")
            .execute(&s.pool)
            .await
            .expect("corrupt");
        assert!(matches!(s.get(&dp.key()).await, Err(Error::Invalid(_))));
    }

    #[tokio::test]
    async fn closed_pool_is_unavailable() {
        let s = SqliteStore::open_in_memory().await.expect("open");
        s.close().await;
        let key = ResourceKey::new(ResourceType::Mesh, "", "a");
        assert!(s.get(&key).await.unwrap_err().is_transient());
    }

    /// The pool keeps working on a file made unreadable or moved away (its connections hold
    /// it open, and root ignores permissions); the probe sees both, and recovers.
    #[tokio::test]
    async fn the_probe_sees_an_unreadable_or_moved_database_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kuma.db");
        let s = SqliteStore::open(&path).await.expect("open");
        s.create(Resource::new("default", "", Spec::Mesh(Mesh::default())))
            .await
            .expect("mesh");
        let key = ResourceKey::new(ResourceType::Mesh, "", "default");
        s.probe().await.expect("a fresh store probes fine");
        let chmod = |m: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        chmod(0o000);
        let e = s.probe().await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("has mode 000"), "{e}");
        assert!(s.get(&key).await.is_ok(), "open connections still read");
        chmod(0o600);
        s.probe().await.expect("readable again");
        let moved = dir.path().join("moved.db");
        std::fs::rename(&path, &moved).expect("rename");
        let e = s.probe().await.unwrap_err();
        assert!(e.to_string().contains("No such file"), "{e}");
        // Another file in its place is not the store's database either.
        std::fs::write(&path, b"").expect("placeholder");
        let e = s.probe().await.unwrap_err();
        assert!(e.to_string().contains("moved or replaced"), "{e}");
        std::fs::rename(&moved, &path).expect("rename back");
        s.probe().await.expect("back in place");
        // In memory: the one connection answers.
        SqliteStore::open_in_memory()
            .await
            .expect("memory")
            .probe()
            .await
            .expect("in-memory probe");
    }
}
