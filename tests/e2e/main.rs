//! The end-to-end tests, as one test binary: the fixtures in `support/` are compiled once
//! and shared by every module, instead of once per test file.

mod support;

mod abuse;
mod binary;
mod check;
mod connection_limit;
mod credentials;
mod egress_and_modes;
mod exposure;
mod first_run;
mod first_run_ready;
mod nginx;
mod operations;
mod process;
mod proxy;
mod reload;
mod resilience;
mod soak;
mod support_selftest;
mod timeouts;
mod token_lifecycle;
