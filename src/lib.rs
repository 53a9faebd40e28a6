//! cohort-bridge
