//! What `/ready` waits for: named [`Condition`]s that the parts of the control plane set
//! (a listener serving, the reconciler's first full pass, the VIP allocator's first pass, a
//! federated zone's first full sync from global) and the store probe ([`probe_store`]),
//! gathered by [`Readiness`].
//!
//! `/ready` reads the conditions only (a few uncontended locks): it never touches the store,
//! so a flood of `/ready` cannot load it; the probe runs on its own every
//! [`PROBE_INTERVAL`], so its answer is at most that old (plus [`PROBE_TIMEOUT`]).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Probe;

/// How often the store is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// A probe that has not answered by then counts as a failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One thing `/ready` waits for: met, or unmet with the reason.
#[derive(Clone)]
pub struct Condition(Arc<State>);

struct State {
    name: &'static str,
    unmet: Mutex<Option<String>>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("name", &self.0.name)
            .field("unmet", &*self.lock())
            .finish()
    }
}

impl Condition {
    /// An unmet condition `name` (what `/ready?exclude=` names), `why` it is not met yet.
    pub fn new(name: &'static str, why: impl Into<String>) -> Self {
        Self(Arc::new(State {
            name,
            unmet: Mutex::new(Some(why.into())),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A plain value behind the lock: a poisoned one is still consistent.
        self.0.unmet.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// The condition holds.
    pub fn met(&self) {
        *self.lock() = None;
    }

    /// The condition no longer holds, `why`.
    pub fn unmet(&self, why: impl Into<String>) {
        *self.lock() = Some(why.into());
    }

    /// Why it does not hold, if it does not.
    pub fn why_not(&self) -> Option<String> {
        self.lock().clone()
    }
}

/// Every [`Condition`] of the process. Cheap to clone: clones share the list.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Mutex<Vec<Condition>>>);

impl Readiness {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Condition>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `c` to what `/ready` waits for; returns it.
    pub fn add(&self, c: Condition) -> Condition {
        self.lock().push(c.clone());
        c
    }

    /// A new unmet condition, added.
    pub fn condition(&self, name: &'static str, why: impl Into<String>) -> Condition {
        self.add(Condition::new(name, why))
    }

    /// `Ok` when every condition not named in `exclude` holds, else `name: why` of each
    /// that does not, in the order they were added.
    pub fn check(&self, exclude: &[&str]) -> Result<(), Vec<String>> {
        let missing: Vec<String> = self
            .lock()
            .iter()
            .filter(|c| !exclude.contains(&c.name()))
            .filter_map(|c| c.why_not().map(|why| format!("{}: {why}", c.name())))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }

    /// `serve` (a listener's accept loop, bound already) as a condition `name`: met once it
    /// runs, unmet again when it ends.
    pub fn serving<F: Future>(
        &self,
        name: &'static str,
        serve: F,
    ) -> impl Future<Output = F::Output> + use<F> {
        let c = self.condition(name, "not serving yet");
        async move {
            c.met();
            let out = serve.await;
            c.unmet("stopped serving");
            out
        }
    }
}

/// Probes the store every [`PROBE_INTERVAL`] until `shutdown`, keeping `cond` (met while the
/// probe succeeds within [`PROBE_TIMEOUT`]); changes are logged.
pub async fn probe_store(probe: Arc<dyn Probe>, cond: Condition, shutdown: CancellationToken) {
    let mut was_ok: Option<bool> = None;
    loop {
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, probe.probe()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("the store did not answer within {PROBE_TIMEOUT:?}")),
        };
        match &outcome {
            Ok(()) => {
                cond.met();
                if was_ok == Some(false) {
                    tracing::info!("the store is available again");
                }
            }
            Err(why) => {
                cond.unmet(why.clone());
                if was_ok != Some(false) {
                    tracing::warn!(reason = %why, "the store is unavailable: /ready answers 503");
                }
            }
        }
        was_ok = Some(outcome.is_ok());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    #[tokio::test]
    async fn conditions_listeners_and_exclusions() {
        let r = Readiness::default();
        let kds = r.condition("kds", "no full sync from global yet");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let api = tokio::spawn(r.serving("apiServer.http", async move {
            let _ = stopped.await;
        }));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            r.check(&[]),
            Err(vec!["kds: no full sync from global yet".to_string()])
        );
        assert_eq!(r.check(&["kds"]), Ok(()));
        kds.met();
        assert_eq!(r.check(&[]), Ok(()));
        stop.send(()).unwrap();
        api.await.unwrap();
        assert_eq!(
            r.check(&[]),
            Err(vec!["apiServer.http: stopped serving".to_string()])
        );
    }

    /// A store that fails while `state` is 1 and hangs while it is 2.
    struct Flaky(Arc<AtomicU8>);

    #[async_trait::async_trait]
    impl Probe for Flaky {
        async fn probe(&self) -> Result<(), kuma_core::store::Error> {
            match self.0.load(Ordering::Relaxed) {
                0 => Ok(()),
                1 => Err(kuma_core::store::Error::Unavailable("file gone".into())),
                _ => std::future::pending().await,
            }
        }
    }

    /// Real time (about 4 s): the crate's tests do not enable tokio's `test-util`.
    #[tokio::test]
    async fn the_store_probe_follows_the_store() {
        let state = Arc::new(AtomicU8::new(0));
        let r = Readiness::default();
        let cond = r.condition("store", "not probed yet");
        let sd = CancellationToken::new();
        let task = tokio::spawn(probe_store(
            Arc::new(Flaky(state.clone())),
            cond,
            sd.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(r.check(&[]), Ok(()));
        state.store(1, Ordering::Relaxed);
        tokio::time::sleep(PROBE_INTERVAL + Duration::from_millis(10)).await;
        assert_eq!(
            r.check(&[]),
            Err(vec!["store: store unavailable: file gone".to_string()])
        );
        state.store(0, Ordering::Relaxed);
        tokio::time::sleep(PROBE_INTERVAL).await;
        assert_eq!(r.check(&[]), Ok(()));
        state.store(2, Ordering::Relaxed);
        tokio::time::sleep(PROBE_INTERVAL + PROBE_TIMEOUT + Duration::from_millis(10)).await;
        let err = r.check(&[]).unwrap_err();
        assert!(err[0].contains("did not answer within 1s"), "{err:?}");
        sd.cancel();
        task.await.unwrap();
    }
}
