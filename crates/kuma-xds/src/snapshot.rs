//! Resources and per-node snapshots.
//!
//! A [`Resource`] is one named, packed Envoy (or any protobuf) message with a
//! content-hash version: equal bodies give equal versions, in this process and
//! across restarts (the hash is FNV-1a, not the std `DefaultHasher`, whose
//! output is not guaranteed stable), so a reconnecting delta client's
//! `initial_resource_versions` stay meaningful.
//!
//! A [`Snapshot`] is the full set of resources one node should see, keyed by
//! type URL then name. It is built with [`Snapshot::insert`], then shared
//! behind an `Arc` and never mutated again. Resources are held as
//! `Arc<Resource>` so identical resources are shared between nodes.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use envoy_types::pb::google::protobuf::Any;

use crate::warming::{self, Dep};

/// One named resource with a content-hash version.
///
/// Shared via `Arc` between the snapshots of all nodes that see the same
/// content. Equality is by name, version and body.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Resource name (listener name, cluster name, ...), unique per type URL.
    pub name: String,
    /// Hex of a 64-bit hash of `body.type_url` and `body.value`.
    pub version: String,
    /// The packed message; its `type_url` decides which xDS type it serves.
    pub body: Any,
    /// What it needs to finish warming in Envoy ([`warming::deps`]), decoded on first use
    /// and then shared by every stream that sends this resource.
    deps: OnceLock<Vec<Dep>>,
}

impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.version == other.version && self.body == other.body
    }
}

impl Eq for Resource {}

impl Resource {
    /// Wraps a packed message, computing its content-hash version.
    pub fn new(name: impl Into<String>, body: Any) -> Self {
        let mut h = Fnv::new();
        h.write(body.type_url.as_bytes());
        h.write(&[0xff]);
        h.write(&body.value);
        Self {
            name: name.into(),
            version: h.hex(),
            body,
            deps: OnceLock::new(),
        }
    }

    /// The resources Envoy needs after this one before it stops warming (the
    /// ClusterLoadAssignment of an EDS cluster, referenced SDS secrets and RDS routes).
    pub fn deps(&self) -> &[Dep] {
        self.deps.get_or_init(|| warming::deps(&self.body))
    }

    /// The type URL of the body.
    pub fn type_url(&self) -> &str {
        &self.body.type_url
    }
}

/// The resources of one type URL plus their lazily computed aggregate version.
#[derive(Debug, Clone, Default)]
struct TypeEntry {
    resources: BTreeMap<String, Arc<Resource>>,
    version: OnceLock<String>,
}

/// Immutable (once shared) set of resources for one node, by type URL then
/// name.
///
/// The per-type version ([`Snapshot::version`]) is computed on first use and
/// cached, so the many streams reading a shared snapshot hash it once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    types: BTreeMap<String, TypeEntry>,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a resource, keyed by its body's type URL and name.
    pub fn insert(&mut self, r: Arc<Resource>) {
        // Looked up before inserting: the type URL is copied once per type, not per resource.
        if !self.types.contains_key(&r.body.type_url) {
            self.types
                .insert(r.body.type_url.clone(), TypeEntry::default());
        }
        if let Some(entry) = self.types.get_mut(&r.body.type_url) {
            // The content changed: forget any version computed so far.
            entry.version.take();
            entry.resources.insert(r.name.clone(), r);
        }
    }

    /// The resources of one type, by name; `None` if the snapshot has none.
    pub fn resources(&self, type_url: &str) -> Option<&BTreeMap<String, Arc<Resource>>> {
        self.types.get(type_url).map(|e| &e.resources)
    }

    /// One resource by type URL and name.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Arc<Resource>> {
        self.types.get(type_url)?.resources.get(name)
    }

    /// Hash over the (name, version) pairs of one type; `""` if the snapshot
    /// has no resource of that type. Computed once, then cached.
    pub fn version(&self, type_url: &str) -> String {
        match self.types.get(type_url) {
            Some(e) => e
                .version
                .get_or_init(|| fingerprint(e.resources.values()))
                .clone(),
            None => String::new(),
        }
    }

    /// The type URLs present in the snapshot, sorted.
    pub fn type_urls(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Total number of resources, all types together.
    pub fn len(&self) -> usize {
        self.types.values().map(|e| e.resources.len()).sum()
    }

    /// Whether the snapshot holds no resource at all.
    pub fn is_empty(&self) -> bool {
        self.types.values().all(|e| e.resources.is_empty())
    }
}

impl FromIterator<Arc<Resource>> for Snapshot {
    fn from_iter<I: IntoIterator<Item = Arc<Resource>>>(iter: I) -> Self {
        let mut s = Snapshot::new();
        for r in iter {
            s.insert(r);
        }
        s
    }
}

/// Hash over the (name, version) pairs of some resources, in iteration order;
/// `""` when there are none. [`Snapshot::version`] is this over a whole type;
/// the SotW state machine uses it over the subset a stream asked for.
pub(crate) fn fingerprint<'a>(resources: impl IntoIterator<Item = &'a Arc<Resource>>) -> String {
    let mut h = Fnv::new();
    let mut any = false;
    for r in resources {
        any = true;
        h.write(r.name.as_bytes());
        h.write(&[0]);
        h.write(r.version.as_bytes());
        h.write(&[0]);
    }
    if any { h.hex() } else { String::new() }
}

/// 64-bit FNV-1a: small, stable across processes and Rust releases.
struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Self(Self::OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::type_url;

    fn any(type_url: &str, value: &[u8]) -> Any {
        Any {
            type_url: type_url.to_string(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn resource_version_is_content_hash() {
        let a = Resource::new("a", any(type_url::CLUSTER, b"x"));
        let b = Resource::new("b", any(type_url::CLUSTER, b"x"));
        let c = Resource::new("a", any(type_url::CLUSTER, b"y"));
        let d = Resource::new("a", any(type_url::LISTENER, b"x"));
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_ne!(a.version, d.version);
        assert_eq!(a.version.len(), 16);
        // Stable across processes: FNV-1a of a fixed input.
        assert_eq!(
            Resource::new("n", any("t", b"")).version,
            Resource::new("m", any("t", b"")).version
        );
    }

    #[test]
    fn snapshot_version_tracks_names_and_versions() {
        let mut s = Snapshot::new();
        assert_eq!(s.version(type_url::CLUSTER), "");
        s.insert(Arc::new(Resource::new("a", any(type_url::CLUSTER, b"1"))));
        let v1 = s.version(type_url::CLUSTER);
        assert_ne!(v1, "");
        assert_eq!(s.version(type_url::LISTENER), "");
        s.insert(Arc::new(Resource::new("b", any(type_url::CLUSTER, b"1"))));
        let v2 = s.version(type_url::CLUSTER);
        assert_ne!(v1, v2);
        s.insert(Arc::new(Resource::new("b", any(type_url::CLUSTER, b"2"))));
        assert_ne!(v2, s.version(type_url::CLUSTER));
        assert_eq!(s.len(), 2);
        assert_eq!(s.type_urls().collect::<Vec<_>>(), vec![type_url::CLUSTER]);

        // Same content, built in another order: same version.
        let s2: Snapshot = [
            Arc::new(Resource::new("b", any(type_url::CLUSTER, b"2"))),
            Arc::new(Resource::new("a", any(type_url::CLUSTER, b"1"))),
        ]
        .into_iter()
        .collect();
        assert_eq!(s.version(type_url::CLUSTER), s2.version(type_url::CLUSTER));
    }
}
