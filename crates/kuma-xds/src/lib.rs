//! Mesh-agnostic xDS engine, in the manner of go-control-plane's `pkg/cache`
//! and `pkg/server`.
//!
//! The control plane packs resources into [`Resource`]s, groups them per node
//! into a [`Snapshot`] and puts it into the [`SnapshotCache`]. The [`Server`]
//! serves the cache to Envoy (or any xDS client) over ADS, in both
//! State-of-the-World ([`sotw`]) and Delta ([`delta`]) variants, and reports
//! stream lifecycle and ACK/NACKs through [`Callbacks`].
//!
//! The engine knows type URLs, not meshes: any protobuf type can be served
//! (zone sync reuses it). [`type_url`] names the Envoy ones and fixes the push
//! order (SDS, CDS, EDS, LDS, RDS, then the rest). With feature `json`, the `json` module renders
//! resources as proto3 JSON, the way Envoy's `/config_dump` shows them (golden files).
//!
//! Invariants: the state machines are pure (no IO, no clocks); the adapter
//! spawns one task per stream and never holds a lock across an `.await`.

pub mod cache;
pub mod callbacks;
pub mod delta;
#[cfg(feature = "json")]
pub mod json;
mod protocol;
pub mod server;
pub mod snapshot;
pub mod sotw;
mod stream;
pub mod type_url;
pub mod warming;

#[cfg(test)]
mod test_support;

pub use async_trait::async_trait;
pub use cache::SnapshotCache;
pub use callbacks::{Callbacks, NoopCallbacks, StreamInfo};
pub use server::{Admission, Server};
pub use snapshot::{Resource, Snapshot};
pub use warming::Dep;
