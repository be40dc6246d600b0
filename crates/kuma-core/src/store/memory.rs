//! In-memory store: a sorted map behind a mutex. For tests and for `store.type: memory`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::broadcast;

use super::{Error, Event, EventKind, Store, WATCH_CAPACITY};
use crate::resource::{Resource, ResourceKey, ResourceType};

/// Sort key: (type, mesh, name) so that a list is a range scan.
type Map = BTreeMap<ResourceKey, Resource>;

pub struct MemoryStore {
    map: Mutex<Map>,
    events: broadcast::Sender<Event>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            map: Mutex::new(BTreeMap::new()),
            events: broadcast::channel(WATCH_CAPACITY).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        // A panic while holding the lock cannot leave the map half-written (every write is a
        // single insert/remove), so a poisoned lock is still consistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, kind: EventKind, key: ResourceKey) {
        // No receivers is fine.
        let _ = self.events.send(Event { kind, key });
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, mut res: Resource) -> Result<Resource, Error> {
        let key = res.key();
        {
            let mut map = self.lock();
            if map.contains_key(&key) {
                return Err(Error::AlreadyExists(key));
            }
            let now = Utc::now();
            res.meta.version = 1;
            res.meta.creation_time = now;
            res.meta.modification_time = now;
            map.insert(key.clone(), res.clone());
        }
        self.emit(EventKind::Created, key);
        Ok(res)
    }

    async fn update(&self, mut res: Resource) -> Result<Resource, Error> {
        let key = res.key();
        {
            let mut map = self.lock();
            let Some(cur) = map.get(&key) else {
                return Err(Error::NotFound(key));
            };
            if cur.meta.version != res.meta.version {
                return Err(Error::Conflict(key));
            }
            res.meta.version += 1;
            res.meta.creation_time = cur.meta.creation_time;
            res.meta.modification_time = Utc::now();
            map.insert(key.clone(), res.clone());
        }
        self.emit(EventKind::Updated, key);
        Ok(res)
    }

    async fn delete(&self, key: &ResourceKey) -> Result<(), Error> {
        let mut removed = Vec::new();
        {
            let mut map = self.lock();
            if map.remove(key).is_none() {
                return Err(Error::NotFound(key.clone()));
            }
            if key.rtype == ResourceType::Mesh {
                let owned: Vec<ResourceKey> =
                    map.keys().filter(|k| k.mesh == key.name).cloned().collect();
                for k in owned {
                    map.remove(&k);
                    removed.push(k);
                }
            }
        }
        for k in removed {
            self.emit(EventKind::Deleted, k);
        }
        self.emit(EventKind::Deleted, key.clone());
        Ok(())
    }

    async fn get(&self, key: &ResourceKey) -> Result<Resource, Error> {
        self.lock()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound(key.clone()))
    }

    async fn list(&self, rtype: ResourceType, mesh: Option<&str>) -> Result<Vec<Resource>, Error> {
        let map = self.lock();
        Ok(map
            .range(
                ResourceKey {
                    rtype,
                    mesh: String::new(),
                    name: String::new(),
                }..,
            )
            .take_while(|(k, _)| k.rtype == rtype)
            .filter(|(k, _)| mesh.is_none_or(|m| k.mesh == m))
            .map(|(_, v)| v.clone())
            .collect())
    }

    fn watch(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run(|| async { super::MemoryStore::new() }).await;
    }
}
