//! The integration tests: one binary, real `redis-server`, the real
//! `ld-emulator` over HTTP, and the bridge in-process.

mod support;

mod binary;
mod emulator_api;
mod pipeline;
mod receivers;
