//! Test support shared by the image tests: the Docker engine, fixture builds and the
//! loopback registry.

pub mod build;
pub mod docker;
pub mod oci;
pub mod registry;
pub mod standin;
