//! The end-to-end tests, as one test binary: the fixtures in `support/` are compiled once
//! and shared by every module, instead of once per test file.

mod support;

mod abuse;
mod binary;
mod check;
mod connection_limit;
mod credentials;
mod egress_and_modes;
mod nginx;
mod operations;
mod process;
mod proxy;
mod resilience;
mod support_selftest;
mod timeouts;
