//! The integration tests: one binary (as `just` does it), one module per command.

mod cli;
mod doctor;
mod harness;
mod render;
mod status;
