//! Cluster-less Gateway API conformance harness for Portcullis, and the echo backend that both the harness and the
//! proxy's own end-to-end tests use.

pub mod echo;
pub mod harness;
