//! The lake's lease: at most one `sync` writes a lake at a time.
//!
//! Built from the two operations every store has, create-if-absent (`PutMode::Create`) and
//! delete, so it works alike on local disk and S3. Leases are objects
//! `_lock/lease-<20-digit generation>.json` holding the run id, host, pid, start time and an
//! expiry. To acquire, a run lists the leases; if one is live (not expired, and not held by a
//! dead process on this host) the lake is busy. Otherwise it creates the next generation
//! with create-if-absent (of two runs racing for the same generation only one succeeds),
//! then lists again: if a live lease of a lower generation appeared meanwhile, that run got
//! there first and this one withdraws. Expired leases are then removed.
//!
//! The holder renews its own lease every [`RENEW_EVERY`] (a plain overwrite of its object,
//! which no other run writes), pushing the expiry [`LEASE_TTL`] ahead; a run that crashed
//! stops renewing, so its lease expires and the next run takes over (at once when the crashed
//! process ran on the same host and is gone). If a renewal finds the lease deleted (another
//! run judged it expired, e.g. after this process was suspended longer than the TTL), the
//! lease is lost: the run stops at the next unit, and the manifest's create-if-absent
//! commits still keep two writers from overwriting each other's commit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::sink::LakeStore;

/// The folder of the leases, relative to the lake's root.
pub const LOCK_DIR: &str = "_lock";
/// A lease not renewed for this long is expired and may be taken over.
pub const LEASE_TTL: Duration = Duration::from_secs(300);
/// How often the holder renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(60);
/// How often a waiting run looks at the lock again.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Who holds the lake, as written in the lease object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
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

/// Whether process `pid` of this host still runs; `true` where that cannot be told.
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

impl Lease {
    fn new(run_id: &str, now: DateTime<Utc>) -> Self {
        Lease {
            run_id: run_id.to_string(),
            host: host_name(),
            pid: std::process::id(),
            started_at: now,
            renewed_at: now,
            expires_at: now + LEASE_TTL,
        }
    }

    /// Whether the lease still holds the lake at `now`, seen from this host.
    pub fn is_live(&self, now: DateTime<Utc>, host: &str) -> bool {
        let dead = self.host == host && self.pid != std::process::id() && !process_alive(self.pid);
        now < self.expires_at && !dead
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

/// The leases in the lake by generation, ascending; `None` for one that cannot be read as
/// a lease (treated as expired).
async fn leases(lake: &LakeStore) -> Result<Vec<(u64, Option<Lease>)>, LockError> {
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
        let bytes = match lake.store.get(&m.location).await {
            Ok(r) => r.bytes().await.map_err(read)?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(read(e)),
        };
        out.push((generation, serde_json::from_slice(&bytes).ok()));
    }
    out.sort_by_key(|(g, _)| *g);
    Ok(out)
}

/// The held lease of a run; [`LakeLock::release`] it when the run ends.
pub struct LakeLock {
    lake: LakeStore,
    generation: u64,
    renewer: tokio::task::JoinHandle<()>,
    lost: CancellationToken,
}

impl LakeLock {
    /// Acquire the lake's lease for `run_id`, waiting up to `wait` for another run to finish
    /// (or its lease to expire). `on_lost` is cancelled if the lease is lost later.
    pub async fn acquire(
        lake: &LakeStore,
        run_id: &str,
        wait: Duration,
        interrupt: &CancellationToken,
        on_lost: CancellationToken,
    ) -> Result<LakeLock, LockError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut told = false;
        loop {
            match Self::try_acquire(lake, run_id).await? {
                Ok(generation) => {
                    return Ok(Self::hold(lake, run_id, generation, on_lost));
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

    /// One attempt: the generation acquired, or the live lease that holds the lake.
    async fn try_acquire(lake: &LakeStore, run_id: &str) -> Result<Result<u64, Lease>, LockError> {
        let host = host_name();
        loop {
            let now = Utc::now();
            let found = leases(lake).await?;
            if let Some(holder) = found
                .iter()
                .filter_map(|(_, l)| l.as_ref())
                .find(|l| l.is_live(now, &host))
            {
                return Ok(Err(holder.clone()));
            }
            let generation = found.last().map_or(1, |(g, _)| g + 1);
            let lease = Lease::new(run_id, now);
            let body = serde_json::to_vec_pretty(&lease).expect("a lease serializes");
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            let path = lake.path(&lease_name(generation));
            match lake
                .store
                .put_opts(&path, PutPayload::from(body), opts)
                .await
            {
                Ok(_) => {}
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => continue,
                Err(source) => {
                    return Err(LockError::Write {
                        dest: lake.display.clone(),
                        source,
                    });
                }
            }
            let now = Utc::now();
            let after = leases(lake).await?;
            if let Some((_, Some(first))) = after
                .iter()
                .find(|(g, l)| *g < generation && l.as_ref().is_some_and(|l| l.is_live(now, &host)))
            {
                let _ = lake.store.delete(&path).await;
                return Ok(Err(first.clone()));
            }
            for (g, old) in after.iter().filter(|(g, _)| *g < generation) {
                match old {
                    Some(l) => {
                        tracing::warn!(run = %l.run_id, host = %l.host, pid = l.pid, expired_at = %l.expires_at, "taking over the lake from a run that did not release its lease (it crashed or was killed)");
                    }
                    None => tracing::warn!(generation = g, "removing an unreadable lease"),
                }
                let _ = lake.store.delete(&lake.path(&lease_name(*g))).await;
            }
            return Ok(Ok(generation));
        }
    }

    fn hold(
        lake: &LakeStore,
        run_id: &str,
        generation: u64,
        on_lost: CancellationToken,
    ) -> LakeLock {
        let lost = CancellationToken::new();
        let renewer = tokio::spawn(renew(
            lake.clone(),
            lake.path(&lease_name(generation)),
            Lease::new(run_id, Utc::now()),
            RENEW_EVERY,
            [lost.clone(), on_lost],
        ));
        tracing::info!(run = run_id, generation, "holding the lake's lease");
        LakeLock {
            lake: lake.clone(),
            generation,
            renewer,
            lost,
        }
    }

    /// Whether another run took the lease over while this one held it.
    pub fn lost(&self) -> bool {
        self.lost.is_cancelled()
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

/// Renew the lease at `path` every `every` until aborted; cancel `lost` and stop when the
/// lease is gone.
async fn renew(
    lake: LakeStore,
    path: object_store::path::Path,
    mut lease: Lease,
    every: Duration,
    lost: [CancellationToken; 2],
) {
    loop {
        tokio::time::sleep(every).await;
        match lake.store.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => {
                tracing::error!(
                    "the lake's lease was taken over by another run; stopping after the unit in flight"
                );
                lost.iter().for_each(CancellationToken::cancel);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not check the lake's lease; trying again");
                continue;
            }
            Ok(_) => {}
        }
        let now = Utc::now();
        lease.renewed_at = now;
        lease.expires_at = now + LEASE_TTL;
        let body = serde_json::to_vec_pretty(&lease).expect("a lease serializes");
        if let Err(e) = lake.store.put(&path, PutPayload::from(body)).await {
            tracing::warn!(error = %e, "could not renew the lake's lease; trying again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> CancellationToken {
        CancellationToken::new()
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_frees_the_lake() {
        let lake = LakeStore::in_memory();
        let a = LakeLock::acquire(&lake, "run-a", Duration::ZERO, &token(), token())
            .await
            .unwrap();
        let err = LakeLock::acquire(&lake, "run-b", Duration::ZERO, &token(), token())
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
        let b = LakeLock::acquire(&lake, "run-b", Duration::ZERO, &token(), token())
            .await
            .unwrap();
        b.release().await;
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_removed() {
        let lake = LakeStore::in_memory();
        let old = Utc::now() - chrono::Duration::hours(2);
        let stale = Lease {
            host: "elsewhere".into(),
            ..Lease::new("crashed", old)
        };
        lake.store
            .put(
                &lake.path(&lease_name(7)),
                serde_json::to_vec(&stale).unwrap().into(),
            )
            .await
            .unwrap();
        let l = LakeLock::acquire(&lake, "next", Duration::ZERO, &token(), token())
            .await
            .unwrap();
        assert_eq!(l.generation, 8);
        let gens: Vec<u64> = leases(&lake)
            .await
            .unwrap()
            .iter()
            .map(|(g, _)| *g)
            .collect();
        assert_eq!(gens, [8]);
        l.release().await;
    }

    #[tokio::test]
    async fn a_live_lease_of_another_host_blocks_and_stays() {
        let lake = LakeStore::in_memory();
        let first = Lease {
            host: "elsewhere".into(),
            ..Lease::new("first", Utc::now())
        };
        lake.store
            .put(
                &lake.path(&lease_name(1)),
                serde_json::to_vec(&first).unwrap().into(),
            )
            .await
            .unwrap();
        let err = LakeLock::acquire(&lake, "second", Duration::ZERO, &token(), token())
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("run first on host elsewhere"),
            "{err}"
        );
        assert_eq!(leases(&lake).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn renewal_pushes_the_expiry_and_notices_a_lost_lease() {
        let lake = LakeStore::in_memory();
        let path = lake.path(&lease_name(1));
        let lease = Lease::new("r", Utc::now() - chrono::Duration::minutes(4));
        lake.store
            .put(&path, serde_json::to_vec(&lease).unwrap().into())
            .await
            .unwrap();
        let tokens = [token(), token()];
        let task = tokio::spawn(renew(
            lake.clone(),
            path.clone(),
            lease.clone(),
            Duration::from_millis(10),
            tokens.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, renewed) = leases(&lake).await.unwrap().pop().unwrap();
        assert!(renewed.unwrap().expires_at > lease.expires_at);
        assert!(!tokens[1].is_cancelled());
        lake.store.delete(&path).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(tokens.iter().all(CancellationToken::is_cancelled));
        assert!(leases(&lake).await.unwrap().is_empty(), "not written again");
    }

    #[test]
    fn a_lease_of_a_dead_process_on_this_host_is_not_live() {
        let now = Utc::now();
        let host = host_name();
        let mut l = Lease::new("r", now);
        assert!(l.is_live(now, &host));
        assert!(!l.is_live(now + LEASE_TTL, &host));
        l.pid = u32::MAX - 1;
        assert_eq!(l.is_live(now, &host), !cfg!(target_os = "linux"));
        assert!(l.is_live(now, "another-host"));
    }
}
