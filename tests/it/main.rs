//! The integration tests: one binary, real `redis-server`, the real
//! `ld-emulator` over HTTP, and the bridge in-process.

mod support;

mod binary;
mod durability;
mod emulator_api;
mod fast_paths;
mod fixtures;
mod pipeline;
mod receivers;
mod signatures;
