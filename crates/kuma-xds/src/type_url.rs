//! Type URLs of the Envoy resources the engine knows by name.
//!
//! The engine itself is generic over type URLs: these constants only give the
//! well-known ones a name, decide the push order ([`push_rank`]) and say which
//! types are subscribed by name rather than by wildcard ([`is_named`]).

/// `envoy.config.listener.v3.Listener` (LDS).
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `envoy.config.cluster.v3.Cluster` (CDS).
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// `envoy.config.route.v3.RouteConfiguration` (RDS).
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// A short name for logs: `"lds"`, `"cds"`, `"eds"`, `"rds"`, `"sds"`, or the
/// last path segment of any other type URL.
pub fn short(url: &str) -> &str {
    match url {
        LISTENER => "lds",
        CLUSTER => "cds",
        ENDPOINT => "eds",
        ROUTE => "rds",
        SECRET => "sds",
        other => other.rsplit('/').next().unwrap_or(other),
    }
}

/// Whether resources of this type are requested by name (EDS, RDS, SDS).
///
/// For these an empty name list means "nothing" (Envoy sends it when its last
/// cluster using EDS goes away); for every other type an empty list on the
/// first request means "everything" (wildcard).
pub fn is_named(url: &str) -> bool {
    matches!(url, ENDPOINT | ROUTE | SECRET)
}

/// Position of a type in the push order after a snapshot change: secrets
/// first (clusters and listeners reference them), then clusters before their
/// endpoints, listeners before their routes, then every other type.
pub fn push_rank(url: &str) -> u8 {
    match url {
        SECRET => 0,
        CLUSTER => 1,
        ENDPOINT => 2,
        LISTENER => 3,
        ROUTE => 4,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short(LISTENER), "lds");
        assert_eq!(short(CLUSTER), "cds");
        assert_eq!(short(ENDPOINT), "eds");
        assert_eq!(short(ROUTE), "rds");
        assert_eq!(short(SECRET), "sds");
        assert_eq!(
            short("type.googleapis.com/kuma.mesh.v1alpha1.KumaResource"),
            "kuma.mesh.v1alpha1.KumaResource"
        );
        assert_eq!(short("plain"), "plain");
    }
}
