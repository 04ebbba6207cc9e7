//! The lake's lease: at most one `sync` writes a lake at a time, and a run that lost the lake
//! commits nothing more.
//!
//! Built from operations every store has, create-if-absent (`PutMode::Create`), a conditional
//! overwrite where the store has one (`PutMode::Update` on the lease's ETag), and delete, so it
//! works alike on local disk and S3. Leases are objects `_lock/lease-<20-digit
//! generation>.json` holding the run id, host, pid (with its PID namespace, boot id and start
//! time), start time, TTL and expiry. To acquire, a run lists the leases; if one is live the
//! lake is busy. Otherwise it creates the next generation with create-if-absent (of two runs
//! racing for the same generation only one succeeds), then lists again: if a live lease of a
//! lower generation appeared meanwhile, that run got there first and this one withdraws.
//! Expired leases are then removed.
//!
//! Whether a lease is live is judged on one clock, the store's: a lease whose object was last
//! written more than its TTL ago (by the object's `last_modified`, against the store's time now,
//! read off a probe object on S3) is expired, whatever the holder's clock says. A lease of this
//! host is dead at once when its process is provably gone: same host name, same boot, same PID
//! namespace, and no process with that pid and start time.
//!
//! The holder renews its own lease every fifth of the TTL with a conditional write on the ETag
//! of its last write (on local disk, which has no conditional overwrite, a check of the ETag
//! right before the write). A renewal that finds the lease changed or deleted means another run
//! took the lake over: the lease is lost. The holder also keeps, on its own monotonic clock, how
//! long its last successful renewal lets it hold the lake; past that (the process was frozen,
//! the store unreachable) it cannot prove it holds the lease and [`LeaseFence::check`] refuses
//! every commit. Every manifest commit carries the lease generation, and a run's first act is a
//! commit of its generation (the fence), so a run of an older generation can never commit
//! after a newer one started: its next manifest version already exists.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::sink::{Created, LakeStore};

/// The folder of the leases, relative to the lake's root.
pub const LOCK_DIR: &str = "_lock";
/// A lease not renewed for this long is expired and may be taken over.
pub const LEASE_TTL: Duration = Duration::from_secs(300);
/// Overrides [`LEASE_TTL`] (whole seconds), for tests that freeze a holder past its expiry.
pub const LEASE_TTL_ENV: &str = "ITERABLE_LAKE_LEASE_TTL_SECS";
/// How often a waiting run looks at the lock again.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// The TTL of this process's leases: [`LEASE_TTL_ENV`] when set to a positive number of
/// seconds, else [`LEASE_TTL`]. The holder renews every fifth of it.
pub fn lease_ttl() -> Duration {
    std::env::var(LEASE_TTL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(LEASE_TTL, Duration::from_secs)
}

/// Who holds the lake, as written in the lease object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    /// `/proc/self/ns/pid` of the holder: its pid means something only in that namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
    /// The holder's kernel boot id: a pid of another boot is another process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The holder process's start time (clock ticks after boot), so a reused pid is told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start: Option<u64>,
    pub started_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    /// When the lease expires by the holder's clock, for people; takeovers judge it by
    /// `ttl_secs` and the store's clock.
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the lake {dest} is locked by run {} on host {} (pid {}), started {}; \
         its lease expires at {} unless renewed. Run again later, or wait with --wait-for-lock",
        holder.run_id, holder.host, holder.pid, holder.started_at.to_rfc3339(), holder.expires_at.to_rfc3339()
    )]
    Busy { dest: String, holder: Box<Lease> },
    #[error("reading the lock of {dest}: {source}")]
    Read {
        dest: String,
        source: object_store::Error,
    },
    #[error("writing the lock of {dest}: {source}")]
    Write {
        dest: String,
        source: object_store::Error,
    },
    #[error("interrupted while waiting for the lock of {dest}")]
    Interrupted { dest: String },
}

/// This host's name, for the lease (and to tell whether a holder's process still runs).
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
}

/// The start time of process `pid` (`/proc/<pid>/stat` field 22), `None` when there is none.
fn process_start(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

impl Lease {
    fn new(run_id: &str, now: DateTime<Utc>, ttl: Duration) -> Self {
        Lease {
            run_id: run_id.to_string(),
            host: host_name(),
            pid: std::process::id(),
            pid_namespace: pid_namespace(),
            boot_id: boot_id(),
            process_start: process_start("self"),
            started_at: now,
            renewed_at: now,
            expires_at: now + ttl,
            ttl_secs: Some(ttl.as_secs()),
        }
    }

    fn ttl(&self) -> Duration {
        self.ttl_secs.map_or(LEASE_TTL, Duration::from_secs)
    }

    /// Whether the holder's process is provably gone: it ran on this host, in this boot and
    /// PID namespace, and no process with its pid and start time runs. Anything less (another
    /// host, another container's namespace, a lease without these fields) proves nothing.
    fn holder_gone(&self) -> bool {
        let provable = cfg!(target_os = "linux")
            && self.host == host_name()
            && self.boot_id.is_some()
            && self.boot_id == boot_id()
            && self.pid_namespace.is_some()
            && self.pid_namespace == pid_namespace();
        if !provable {
            return false;
        }
        match process_start(&self.pid.to_string()) {
            None => true,
            Some(start) => self.process_start.is_some_and(|s| s != start),
        }
    }

    /// Whether the lease, whose object was last written at `written`, still holds the lake at
    /// `now`; both instants are the store's.
    pub fn is_live(&self, written: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        now < written + self.ttl() && !self.holder_gone()
    }
}

fn lease_name(generation: u64) -> String {
    format!("{LOCK_DIR}/lease-{generation:020}.json")
}

fn generation_of(name: &str) -> Option<u64> {
    name.strip_prefix("lease-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// A lease object as found: generation, content (`None` if it cannot be read as a lease,
/// which is treated as expired) and when it was last written, by the store's clock.
struct Found {
    generation: u64,
    lease: Option<Lease>,
    written: DateTime<Utc>,
}

impl Found {
    fn live(&self, now: DateTime<Utc>) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| l.is_live(self.written, now))
    }
}

/// The leases in the lake by generation, ascending.
async fn leases(lake: &LakeStore) -> Result<Vec<Found>, LockError> {
    let read = |source| LockError::Read {
        dest: lake.display.clone(),
        source,
    };
    let metas: Vec<_> = lake
        .store
        .list(Some(&lake.path(LOCK_DIR)))
        .try_collect()
        .await
        .map_err(read)?;
    let mut out = Vec::new();
    for m in metas {
        let Some(generation) = m.location.filename().and_then(generation_of) else {
            continue;
        };
        let got = match lake.store.get(&m.location).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(read(e)),
        };
        let written = got.meta.last_modified;
        let bytes = got.bytes().await.map_err(read)?;
        out.push(Found {
            generation,
            lease: serde_json::from_slice(&bytes).ok(),
            written,
        });
    }
    out.sort_by_key(|f| f.generation);
    Ok(out)
}

/// The store's time now: on local disk this host's clock; elsewhere the `last_modified` of a
/// probe object written for the purpose, so that leases are judged on one clock.
async fn store_now(lake: &LakeStore, run_id: &str) -> Result<DateTime<Utc>, LockError> {
    if lake.local_dir().is_some() {
        return Ok(Utc::now());
    }
    let write = |source| LockError::Write {
        dest: lake.display.clone(),
        source,
    };
    let probe = lake.path(&format!("{LOCK_DIR}/clock-{run_id}"));
    lake.store
        .put(&probe, PutPayload::from_static(b"{}"))
        .await
        .map_err(write)?;
    let meta = lake
        .store
        .head(&probe)
        .await
        .map_err(|source| LockError::Read {
            dest: lake.display.clone(),
            source,
        })?;
    let _ = lake.store.delete(&probe).await;
    Ok(meta.last_modified)
}

/// What a run can show for its hold on the lake: the lease generation every manifest commit
/// carries, and whether the lease still provably holds. Cheap to clone.
#[derive(Clone)]
pub struct LeaseFence {
    generation: u64,
    /// Until when, on this process's monotonic clock, the last successful write of the lease
    /// keeps it live (a margin before the store's view of its expiry).
    held_until: Arc<Mutex<Instant>>,
    lost: CancellationToken,
}

impl LeaseFence {
    fn new(generation: u64, written: Instant, ttl: Duration) -> Self {
        LeaseFence {
            generation,
            held_until: Arc::new(Mutex::new(written + hold_for(ttl))),
            lost: CancellationToken::new(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the run can still prove it holds the lease: not taken over, and renewed
    /// recently enough by its own clock.
    pub fn holds(&self) -> bool {
        !self.lost.is_cancelled() && Instant::now() < *self.held_until.lock().expect("not poisoned")
    }

    fn renewed(&self, at: Instant, ttl: Duration) {
        *self.held_until.lock().expect("not poisoned") = at + hold_for(ttl);
    }
}

/// How long a write of the lease lets its holder act: 4/5 of the TTL, counted from before the
/// write was sent, so the holder stops before any other run may judge the lease expired.
fn hold_for(ttl: Duration) -> Duration {
    ttl - ttl / 5
}

/// The held lease of a run; [`LakeLock::release`] it when the run ends.
pub struct LakeLock {
    lake: LakeStore,
    generation: u64,
    renewer: tokio::task::JoinHandle<()>,
    fence: LeaseFence,
    cleanup_before: DateTime<Utc>,
}

/// A lease just created.
struct Acquired {
    generation: u64,
    e_tag: Option<String>,
    sent: Instant,
    /// Files of the tool's own that no commit names may be removed when last written
    /// before this instant (store clock): the previous holder's expiry, or the acquisition.
    cleanup_before: DateTime<Utc>,
}

impl LakeLock {
    /// Acquire the lake's lease for `run_id`, waiting up to `wait` for another run to finish
    /// (or its lease to expire). `on_lost` is cancelled if the lease is lost later. The
    /// generation taken is above `floor`, the newest manifest's lease generation, so it grows
    /// across released leases (whose objects are gone).
    pub async fn acquire(
        lake: &LakeStore,
        run_id: &str,
        floor: u64,
        wait: Duration,
        interrupt: &CancellationToken,
        on_lost: CancellationToken,
    ) -> Result<LakeLock, LockError> {
        let deadline = tokio::time::Instant::now() + wait;
        let ttl = lease_ttl();
        let mut told = false;
        loop {
            match Self::try_acquire(lake, run_id, floor, ttl).await? {
                Ok(acquired) => {
                    return Ok(Self::hold(lake, run_id, acquired, ttl, on_lost));
                }
                Err(holder) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(LockError::Busy {
                            dest: lake.display.clone(),
                            holder: Box::new(holder),
                        });
                    }
                    if !told {
                        tracing::warn!(holder = %holder.run_id, host = %holder.host, pid = holder.pid, started_at = %holder.started_at, "another run holds the lake; waiting for it");
                        told = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(POLL_EVERY.min(deadline - now)) => {}
                        _ = interrupt.cancelled() => {
                            return Err(LockError::Interrupted { dest: lake.display.clone() });
                        }
                    }
                }
            }
        }
    }

    /// One attempt: the lease acquired, or the live lease that holds the lake.
    async fn try_acquire(
        lake: &LakeStore,
        run_id: &str,
        floor: u64,
        ttl: Duration,
    ) -> Result<Result<Acquired, Lease>, LockError> {
        loop {
            let found = leases(lake).await?;
            let now = store_now(lake, run_id).await?;
            if let Some(holder) = found.iter().find_map(|f| f.live(now)) {
                return Ok(Err(holder.clone()));
            }
            let generation = found.last().map_or(0, |f| f.generation).max(floor) + 1;
            let lease = Lease::new(run_id, Utc::now(), ttl);
            let body = serde_json::to_vec_pretty(&lease).expect("a lease serializes");
            let path = lake.path(&lease_name(generation));
            let sent = Instant::now();
            let e_tag = match lake.create(&path, body.into()).await {
                Ok(Created::Written { e_tag }) => e_tag,
                Ok(Created::Taken) => continue,
                Err(source) => {
                    return Err(LockError::Write {
                        dest: lake.display.clone(),
                        source,
                    });
                }
            };
            let after = leases(lake).await?;
            let now = store_now(lake, run_id).await?;
            if let Some(first) = after
                .iter()
                .filter(|f| f.generation < generation)
                .find_map(|f| f.live(now))
            {
                let _ = lake.store.delete(&path).await;
                return Ok(Err(first.clone()));
            }
            let mut cleanup_before = now;
            for old in after.iter().filter(|f| f.generation < generation) {
                match &old.lease {
                    Some(l) => {
                        let expiry = old.written + l.ttl();
                        cleanup_before = cleanup_before.min(expiry);
                        tracing::warn!(run = %l.run_id, host = %l.host, pid = l.pid, last_renewed = %old.written, "taking over the lake from a run that did not release its lease (it crashed, was killed, or stopped renewing)");
                    }
                    None => {
                        tracing::warn!(generation = old.generation, "removing an unreadable lease")
                    }
                }
                let _ = lake
                    .store
                    .delete(&lake.path(&lease_name(old.generation)))
                    .await;
            }
            return Ok(Ok(Acquired {
                generation,
                e_tag,
                sent,
                cleanup_before,
            }));
        }
    }

    fn hold(
        lake: &LakeStore,
        run_id: &str,
        acquired: Acquired,
        ttl: Duration,
        on_lost: CancellationToken,
    ) -> LakeLock {
        let fence = LeaseFence::new(acquired.generation, acquired.sent, ttl);
        let renewer = tokio::spawn(renew(
            lake.clone(),
            lake.path(&lease_name(acquired.generation)),
            Lease::new(run_id, Utc::now(), ttl),
            acquired.e_tag,
            ttl,
            fence.clone(),
            on_lost,
        ));
        tracing::info!(
            run = run_id,
            generation = acquired.generation,
            "holding the lake's lease"
        );
        LakeLock {
            lake: lake.clone(),
            generation: acquired.generation,
            renewer,
            fence,
            cleanup_before: acquired.cleanup_before,
        }
    }

    /// The fence every manifest commit of this run checks and carries.
    pub fn fence(&self) -> LeaseFence {
        self.fence.clone()
    }

    /// Files of the tool's own pattern that no commit names may be removed when the store
    /// last wrote them before this instant (store clock).
    pub fn cleanup_before(&self) -> DateTime<Utc> {
        self.cleanup_before
    }

    /// Whether another run took the lease over, or it could not be renewed in time.
    pub fn lost(&self) -> bool {
        self.fence.lost.is_cancelled()
    }

    /// Stop renewing and delete the lease.
    pub async fn release(self) {
        self.renewer.abort();
        if self.lost() {
            return;
        }
        let path = self.lake.path(&lease_name(self.generation));
        if let Err(e) = self.lake.store.delete(&path).await {
            tracing::warn!(error = %e, "could not release the lake's lease; it expires by itself");
        }
    }
}

/// Why a renewal did not go through.
enum Renewal {
    Done(Option<String>),
    /// Another run changed or deleted the lease: it is lost.
    TakenOver,
    Failed(object_store::Error),
}

/// Overwrite the lease at `path` if it is still the one last written (ETag `e_tag`).
async fn renew_once(
    lake: &LakeStore,
    path: &object_store::path::Path,
    lease: &Lease,
    e_tag: &Option<String>,
) -> Renewal {
    let body = serde_json::to_vec_pretty(lease).expect("a lease serializes");
    let opts = PutOptions {
        mode: PutMode::Update(UpdateVersion {
            e_tag: e_tag.clone(),
            version: None,
        }),
        ..PutOptions::default()
    };
    match lake
        .store
        .put_opts(path, PutPayload::from(body.clone()), opts)
        .await
    {
        Ok(r) => return Renewal::Done(r.e_tag),
        Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
            return Renewal::TakenOver;
        }
        Err(object_store::Error::NotImplemented { .. }) => {}
        Err(e) => return Renewal::Failed(e),
    }
    // No conditional overwrite here (local disk): compare the ETag right before writing.
    match lake.store.head(path).await {
        Ok(meta) if meta.e_tag == *e_tag => {}
        Ok(_) | Err(object_store::Error::NotFound { .. }) => return Renewal::TakenOver,
        Err(e) => return Renewal::Failed(e),
    }
    match lake.store.put(path, PutPayload::from(body)).await {
        Ok(r) => Renewal::Done(r.e_tag),
        Err(e) => Renewal::Failed(e),
    }
}

/// Renew the lease at `path` every fifth of `ttl` until aborted. When the lease is taken
/// over, or cannot be renewed before the fence's hold runs out, cancel the fence and
/// `on_lost` and stop.
async fn renew(
    lake: LakeStore,
    path: object_store::path::Path,
    mut lease: Lease,
    mut e_tag: Option<String>,
    ttl: Duration,
    fence: LeaseFence,
    on_lost: CancellationToken,
) {
    let every = ttl / 5;
    let lose = |why: &str| {
        tracing::error!(
            reason = why,
            "this run no longer holds the lake's lease; it commits nothing more and stops"
        );
        fence.lost.cancel();
        on_lost.cancel();
    };
    loop {
        tokio::time::sleep(every).await;
        if !fence.holds() {
            lose(
                "the lease was not renewed in time (the process was frozen, or the store unreachable)",
            );
            return;
        }
        let now = Utc::now();
        lease.renewed_at = now;
        lease.expires_at = now + ttl;
        let sent = Instant::now();
        match renew_once(&lake, &path, &lease, &e_tag).await {
            Renewal::Done(tag) => {
                e_tag = tag;
                fence.renewed(sent, ttl);
            }
            Renewal::TakenOver => {
                lose("another run took the lease over");
                return;
            }
            Renewal::Failed(e) => {
                tracing::warn!(error = %e, "could not renew the lake's lease; trying again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> CancellationToken {
        CancellationToken::new()
    }

    async fn put_lease(lake: &LakeStore, generation: u64, lease: &Lease) {
        lake.store
            .put(
                &lake.path(&lease_name(generation)),
                serde_json::to_vec(lease).unwrap().into(),
            )
            .await
            .unwrap();
    }

    fn generations(found: &[Found]) -> Vec<u64> {
        found.iter().map(|f| f.generation).collect()
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_frees_the_lake() {
        let lake = LakeStore::in_memory();
        let a = LakeLock::acquire(&lake, "run-a", 0, Duration::ZERO, &token(), token())
            .await
            .unwrap();
        assert!(a.fence().holds());
        let err = LakeLock::acquire(&lake, "run-b", 1, Duration::ZERO, &token(), token())
            .await
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("locked by run run-a"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        a.release().await;
        assert!(leases(&lake).await.unwrap().is_empty());
        let b = LakeLock::acquire(&lake, "run-b", 1, Duration::ZERO, &token(), token())
            .await
            .unwrap();
        assert_eq!(b.fence().generation(), 2);
        b.release().await;
    }

    #[tokio::test]
    async fn a_lease_not_written_for_its_ttl_is_taken_over_by_the_stores_clock() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
        // Its holder's clock says it expires in a day; the store last saw it written an hour
        // ago, and its TTL is five minutes: expired.
        let stale = Lease {
            host: "elsewhere".into(),
            ..Lease::new("frozen", Utc::now() + chrono::Duration::days(1), LEASE_TTL)
        };
        put_lease(&lake, 7, &stale).await;
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join(lease_name(7)))
            .unwrap();
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        file.set_modified(hour_ago).unwrap();
        let l = LakeLock::acquire(&lake, "next", 0, Duration::ZERO, &token(), token())
            .await
            .unwrap();
        assert_eq!(l.generation, 8);
        assert_eq!(generations(&leases(&lake).await.unwrap()), [8]);
        let expiry = DateTime::<Utc>::from(hour_ago) + chrono::Duration::seconds(300);
        assert!(
            (l.cleanup_before() - expiry).num_seconds().abs() <= 1,
            "cleanup stops at the previous holder's expiry: {} vs {expiry}",
            l.cleanup_before()
        );
        l.release().await;
    }

    #[tokio::test]
    async fn a_lease_written_recently_blocks_whatever_its_holders_clock_says() {
        let lake = LakeStore::in_memory();
        // The holder's clock runs an hour behind: by it, the lease expired long ago.
        let behind = Lease {
            host: "elsewhere".into(),
            ..Lease::new("first", Utc::now() - chrono::Duration::hours(1), LEASE_TTL)
        };
        put_lease(&lake, 1, &behind).await;
        let err = LakeLock::acquire(&lake, "second", 0, Duration::ZERO, &token(), token())
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("run first on host elsewhere"),
            "{err}"
        );
        assert_eq!(leases(&lake).await.unwrap().len(), 1);
    }

    async fn renewing(lake: &LakeStore, ttl: Duration) -> (LeaseFence, CancellationToken) {
        let l = LakeLock::try_acquire(lake, "r", 0, ttl)
            .await
            .unwrap()
            .unwrap();
        let fence = LeaseFence::new(l.generation, l.sent, ttl);
        let on_lost = token();
        tokio::spawn(renew(
            lake.clone(),
            lake.path(&lease_name(l.generation)),
            Lease::new("r", Utc::now(), ttl),
            l.e_tag,
            ttl,
            fence.clone(),
            on_lost.clone(),
        ));
        (fence, on_lost)
    }

    async fn wait_lost(fence: &LeaseFence, on_lost: &CancellationToken) {
        tokio::time::timeout(Duration::from_secs(5), on_lost.cancelled())
            .await
            .expect("the lease is seen lost");
        assert!(!fence.holds());
    }

    #[tokio::test]
    async fn renewal_keeps_the_lease_and_notices_it_deleted() {
        let lake = LakeStore::in_memory();
        let ttl = Duration::from_millis(100);
        let (fence, on_lost) = renewing(&lake, ttl).await;
        let first = leases(&lake).await.unwrap().pop().unwrap();
        tokio::time::sleep(ttl * 2).await;
        assert!(fence.holds(), "renewed past its first TTL");
        let later = leases(&lake).await.unwrap().pop().unwrap();
        assert!(later.lease.unwrap().renewed_at > first.lease.unwrap().renewed_at);
        lake.store.delete(&lake.path(&lease_name(1))).await.unwrap();
        wait_lost(&fence, &on_lost).await;
        assert!(leases(&lake).await.unwrap().is_empty(), "not written again");
    }

    #[tokio::test]
    async fn renewal_is_conditional_a_lease_rewritten_by_another_run_is_lost() {
        for local in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let lake = match local {
                true => LakeStore::open(dir.path().to_str().unwrap()).unwrap(),
                false => LakeStore::in_memory(),
            };
            let ttl = Duration::from_millis(200);
            let (fence, on_lost) = renewing(&lake, ttl).await;
            // Another run judged it expired and wrote its own lease under the same name.
            let other = Lease::new("other", Utc::now(), ttl);
            tokio::time::sleep(Duration::from_millis(5)).await;
            put_lease(&lake, 1, &other).await;
            wait_lost(&fence, &on_lost).await;
            let now = leases(&lake).await.unwrap().pop().unwrap();
            assert_eq!(now.lease.unwrap().run_id, "other", "local={local}");
        }
    }

    #[tokio::test]
    async fn a_holder_that_cannot_renew_in_time_stops_holding() {
        let ttl = Duration::from_millis(100);
        let fence = LeaseFence::new(3, Instant::now(), ttl);
        assert!(fence.holds());
        // Frozen (SIGSTOP) or cut off from the store: no renewal for longer than its hold.
        std::thread::sleep(hold_for(ttl) + Duration::from_millis(10));
        assert!(!fence.holds(), "a fence past its hold refuses commits");
    }

    #[test]
    fn a_pid_is_trusted_only_in_its_own_namespace_and_boot() {
        let now = Utc::now();
        let me = Lease::new("r", now, LEASE_TTL);
        assert!(me.is_live(now, now), "this process runs");
        assert!(
            !me.is_live(now - chrono::Duration::seconds(301), now),
            "expired"
        );
        let gone = Lease {
            pid: u32::MAX - 1,
            ..me.clone()
        };
        assert_eq!(gone.is_live(now, now), !cfg!(target_os = "linux"));
        let reused = Lease {
            process_start: me.process_start.map(|s| s + 1),
            ..me.clone()
        };
        assert_eq!(
            reused.is_live(now, now),
            !cfg!(target_os = "linux"),
            "the pid runs, but another process"
        );
        for other in [
            Lease {
                pid_namespace: Some("pid:[1]".into()),
                ..gone.clone()
            },
            Lease {
                boot_id: Some("another-boot".into()),
                ..gone.clone()
            },
            Lease {
                host: "another-host".into(),
                ..gone.clone()
            },
            Lease {
                pid_namespace: None,
                boot_id: None,
                ..gone.clone()
            },
        ] {
            assert!(other.is_live(now, now), "proves nothing: {other:?}");
        }
    }
}
