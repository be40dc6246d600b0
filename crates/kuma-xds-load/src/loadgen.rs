//! Fixed-rate load generator (placeholder).
