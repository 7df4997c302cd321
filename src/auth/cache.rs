//! Placeholder so the module tree compiles; the real cache lives on another branch.

pub struct TokenCache;
