//! The per-node snapshot cache.
//!
//! [`SnapshotCache`] maps a node id to the latest [`Snapshot`] for it, held in
//! a `tokio::sync::watch` channel per node so every ADS stream of that node is
//! woken when it changes (a stream only ever sees the latest value; bursts of
//! updates coalesce). The map lock is a plain `std::sync::Mutex` held only for
//! the map operation, never while encoding or across an `.await`.
//!
//! Entries live while the node has a snapshot or a stream watching it: a
//! stream may start watching before the control plane has set anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::watch;

use crate::Snapshot;

type Slot = watch::Sender<Option<Arc<Snapshot>>>;

/// Per-node latest snapshot; streams of that node are woken when it changes.
///
/// Cheap to clone: all clones share one map.
#[derive(Clone, Default)]
pub struct SnapshotCache {
    nodes: Arc<Mutex<HashMap<String, Slot>>>,
    /// Per node, the last snapshot a stream of the node had every response of answered
    /// (ACK or NACK): see [`SnapshotCache::is_applied`].
    applied: Arc<Mutex<HashMap<String, Weak<Snapshot>>>>,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("nodes", &self.lock().len())
            .finish()
    }
}

impl SnapshotCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every critical section is a single map/watch operation), so a
        // poisoned lock is still consistent.
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the latest snapshot of a node and wakes its streams.
    pub fn set(&self, node_id: &str, snapshot: Arc<Snapshot>) {
        let mut nodes = self.lock();
        match nodes.get(node_id) {
            Some(slot) => {
                slot.send_replace(Some(snapshot));
            }
            None => {
                let (tx, _) = watch::channel(Some(snapshot));
                nodes.insert(node_id.to_string(), tx);
            }
        }
    }

    /// Whether a stream of the node has had every response caused by the node's latest
    /// snapshot answered (ACKed, or NACKed: it will not change its mind): the proxy runs what
    /// the control plane last set for it, or refused it. `false` when the node has no
    /// snapshot or no stream that got this far.
    pub fn is_applied(&self, node_id: &str) -> bool {
        let Some(current) = self.get(node_id) else {
            return false;
        };
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node_id)
            .and_then(Weak::upgrade)
            .is_some_and(|a| Arc::ptr_eq(&a, &current))
    }

    /// Records that a stream of the node answered every response of `snapshot`.
    pub(crate) fn mark_applied(&self, node_id: &str, snapshot: &Arc<Snapshot>) {
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node_id.to_string(), Arc::downgrade(snapshot));
    }

    /// The latest snapshot of a node, if any.
    pub fn get(&self, node_id: &str) -> Option<Arc<Snapshot>> {
        self.lock().get(node_id).and_then(|s| s.borrow().clone())
    }

    /// Forgets a node's snapshot. Streams still open for it keep the
    /// configuration they were sent and are woken again by the next
    /// [`set`](Self::set).
    pub fn remove(&self, node_id: &str) {
        let mut nodes = self.lock();
        if let Some(slot) = nodes.get(node_id) {
            if slot.receiver_count() == 0 {
                nodes.remove(node_id);
                self.forget_applied(node_id);
            } else {
                slot.send_replace(None);
            }
        }
    }

    /// Ids of the nodes that currently have a snapshot.
    pub fn node_ids(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, slot)| slot.borrow().is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Subscribes to a node's snapshot. The receiver holds `None` until the
    /// node has one; it is marked changed on every [`set`](Self::set).
    pub fn watch(&self, node_id: &str) -> watch::Receiver<Option<Arc<Snapshot>>> {
        let mut nodes = self.lock();
        match nodes.get(node_id) {
            Some(slot) => slot.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                nodes.insert(node_id.to_string(), tx);
                rx
            }
        }
    }

    /// Drops the entry of a node that has neither a snapshot nor a watcher
    /// (called by a stream after it dropped its receiver).
    pub(crate) fn release(&self, node_id: &str) {
        let mut nodes = self.lock();
        if nodes
            .get(node_id)
            .is_some_and(|slot| slot.receiver_count() == 0 && slot.borrow().is_none())
        {
            nodes.remove(node_id);
            self.forget_applied(node_id);
        }
    }

    fn forget_applied(&self, node_id: &str) {
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node_id);
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_get_remove_and_watch() {
        let cache = SnapshotCache::new();
        assert!(cache.get("a").is_none());
        let mut rx = cache.watch("a");
        assert!(rx.borrow().is_none());
        assert!(cache.node_ids().is_empty());

        let snap = Arc::new(Snapshot::new());
        cache.set("a", snap.clone());
        rx.changed().await.expect("sender alive");
        assert!(Arc::ptr_eq(
            rx.borrow_and_update().as_ref().expect("set"),
            &snap
        ));
        assert_eq!(cache.node_ids(), vec!["a".to_string()]);
        assert!(cache.get("a").is_some());

        // Removed while watched: the entry stays, emptied.
        cache.remove("a");
        assert!(cache.get("a").is_none());
        assert!(cache.node_ids().is_empty());
        assert_eq!(cache.entries(), 1);
        drop(rx);
        cache.release("a");
        assert_eq!(cache.entries(), 0);

        // Removed while not watched: the entry goes.
        cache.set("b", snap);
        cache.remove("b");
        assert_eq!(cache.entries(), 0);
    }
}
