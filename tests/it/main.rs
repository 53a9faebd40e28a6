//! The integration tests: one binary, real `redis-server`, the real
//! `ld-emulator` over HTTP, and the bridge in-process.

mod support;

mod accounting;
mod audit;
mod binary;
mod campaign;
mod cluster;
mod crash;
mod deploy;
mod durability;
mod emulator_api;
mod fast_paths;
mod fault_sequences;
mod faults;
mod fixtures;
mod fuzz;
mod group_commit;
mod hardening;
mod ingress_security;
mod lifecycle;
mod metrics_exposition;
mod mixpanel;
mod model;
mod openapi;
mod operator;
mod ops_page;
mod ordering;
mod partner;
mod pipeline;
mod propagation;
mod receivers;
mod reconcile;
mod replay;
mod sampling;
mod segment;
mod shadow;
mod shutdown;
mod signatures;
mod standard_webhooks;
mod store_sequences;
mod why;
