//! The domain core of the mesh: resource types and their wire shapes, validation with field
//! paths, tag matching, the store trait with its in-memory backend, and Go-style durations.
//!
//! Invariants:
//! - IO-free: no sockets, files or runtimes here. The only async pieces are the store trait
//!   (implemented by adapters) and the watch stream, built on runtime-agnostic
//!   `tokio::sync::broadcast`.
//! - A [`resource::Resource`] that exists was validated: constructors from the wire run
//!   validation and report every problem at once, each with its field path.
//!
//! Main types: [`resource::Resource`], [`resource::ResourceType`], [`store::Store`],
//! [`validate::ValidationError`]; [`policy::from_rules`] for MeshTrafficPermission matching;
//! [`vips::VipTable`] for the VIPs of services.

pub mod duration;
pub mod metrics;
pub mod name;
pub mod policy;
pub mod rate_log;
pub mod resource;
pub mod store;
pub mod tls_client;
pub mod validate;
pub mod vips;

pub use resource::{Resource, ResourceKey, ResourceType, Spec};
