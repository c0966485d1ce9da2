//! The integration tests: one binary (as `just` does it), one module per command.

mod apiserver;
mod cli;
mod cluster;
mod db;
mod dev;
mod doctor;
mod exec;
mod fakes;
mod fuzz;
mod harness;
mod images;
mod logs;
mod offline;
mod render;
mod scripts;
mod status;
mod support;
mod sync;
mod up;
