#![forbid(unsafe_code)]
//! iap-proxy: a localhost proxy that puts a fresh Google IAP ID token on every request.

pub mod auth;
pub mod config;
