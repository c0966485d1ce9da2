//! Images against a real Docker engine and a real registry: builds, delivery by
//! registry push and by archive import.

mod app;
mod archive;
mod build;
mod registry;
mod upstream;
