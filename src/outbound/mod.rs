//! Outbound connections: trust roots, the pooled upstream clients (and how they notice dead
//! connections), the bodies they carry (replayable while small), which failures may be
//! retried, and egress through a corporate proxy. Google's token endpoints use the same roots and
//! egress (see `auth::http`).

pub(crate) mod activity;
pub(crate) mod body;
pub(crate) mod clients;
pub(crate) mod egress;
pub(crate) mod retry;
#[cfg(test)]
mod retry_tests;
pub(crate) mod reuse;
pub(crate) mod tls;

/// The error and its causes on one line: hyper's errors keep the useful part
/// ("invalid peer certificate: UnknownIssuer") in their sources.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_sources_once() {
        let inner = std::io::Error::other("UnknownIssuer");
        let outer = std::io::Error::other(inner);
        assert_eq!(chain(&outer), "UnknownIssuer");
    }
}
