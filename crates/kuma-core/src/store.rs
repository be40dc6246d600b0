//! The store: one trait with optimistic concurrency and a watch stream, implemented by the
//! in-memory backend here and by persistent backends in the control plane.
//!
//! Contract (held by the conformance suite, feature `testing`):
//! - `create` fails with [`Error::AlreadyExists`]; it sets `version = 1` and both times.
//! - `update` succeeds only if `meta.version` equals the stored version, else
//!   [`Error::Conflict`]; it bumps the version, keeps `creation_time`, sets `modification_time`.
//! - `delete` of a Mesh also deletes every resource inside that mesh (owner cascade).
//! - Every successful write sends one [`Event`] per affected resource, after it is durable.
//! - `list` is ordered by mesh, then name.

pub mod memory;

#[cfg(feature = "testing")]
pub mod conformance;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::resource::{Resource, ResourceKey, ResourceType};

/// Store failures. `NotFound`, `AlreadyExists`, `Conflict` and `Invalid` are permanent (the
/// caller's fault); `Unavailable` is transient (retry).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No resource with that key.
    #[error("{0} not found")]
    NotFound(ResourceKey),
    /// `create` of a key that exists.
    #[error("{0} already exists")]
    AlreadyExists(ResourceKey),
    /// `update` with a stale version: someone else wrote in between.
    #[error("{0}: version conflict (the resource was changed concurrently)")]
    Conflict(ResourceKey),
    /// The backend refused the content (e.g. a stored row that no longer parses).
    #[error("invalid resource: {0}")]
    Invalid(String),
    /// The backend cannot be reached right now.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// Worth retrying.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

/// A change notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: ResourceKey,
}

/// Capacity of watch channels; a receiver that falls this far behind gets `Lagged` and must
/// resynchronise with `list`.
pub const WATCH_CAPACITY: usize = 65_536;

/// A resource store. Implementations must be cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new resource.
    async fn create(&self, res: Resource) -> Result<Resource, Error>;
    /// Replaces a resource whose stored version is `res.meta.version`.
    async fn update(&self, res: Resource) -> Result<Resource, Error>;
    /// Deletes a resource (and, for a Mesh, everything in it).
    async fn delete(&self, key: &ResourceKey) -> Result<(), Error>;
    /// Reads one resource.
    async fn get(&self, key: &ResourceKey) -> Result<Resource, Error>;
    /// Lists a type, in one mesh or (None) across all meshes / for global types.
    async fn list(&self, rtype: ResourceType, mesh: Option<&str>) -> Result<Vec<Resource>, Error>;
    /// Subscribes to changes made from now on.
    fn watch(&self) -> broadcast::Receiver<Event>;
}
