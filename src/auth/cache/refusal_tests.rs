//! IAP refusing tokens, under paused time: one forced refresh per token, backoff across
//! refusals in a row, one warning per token, and a new run after a quiet spell.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::test_support::{Clock, Scripted, Step, spawn};
use super::{RefreshPolicy, TokenCache};
use crate::auth::token::IdToken;

/// Refuses the current token the way a request meeting IAP's 401 does; returns whether a
/// warning was due.
fn refuse(cache: &TokenCache) -> bool {
    let token = cache.current().expect("a usable token");
    cache.refused(&token).repeated.is_some()
}

#[tokio::test(start_paused = true)]
async fn iap_refusing_every_token_costs_a_few_fetches_not_one_per_request() {
    let clock = Clock::new();
    let source = Scripted::new(&clock, "sa@p", Step::Lives(3600));
    let (cache, _) = spawn(&source, &clock);
    cache.get().await.unwrap();
    // 40 requests in 10 s, every one refused, as with a wrong audience.
    let mut warnings = 0;
    let started = Instant::now();
    for _ in 0..40 {
        if let Some(token) = cache.current() {
            let refusal = cache.refused(&token);
            warnings += usize::from(refusal.repeated.is_some());
        }
        sleep(Duration::from_millis(250)).await;
    }
    assert!(started.elapsed() <= Duration::from_secs(11));
    // The start, the first refusal's immediate refresh, then 1 s, 2 s and 4 s apart.
    assert_eq!(source.fetches(), 5, "fetches in 10 s of refusals");
    // One warning per token fetched because of a refusal and refused again.
    assert_eq!(warnings, 4);
    // Ten minutes later the refreshes are a minute apart.
    let before = source.fetches();
    for _ in 0..(600 * 4) {
        if cache.current().is_some() {
            refuse(&cache);
        }
        sleep(Duration::from_millis(250)).await;
    }
    let more = source.fetches() - before;
    assert!(
        (9..=16).contains(&more),
        "{more} fetches in 10 more minutes"
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_per_refusal_in_a_row_and_is_capped() {
    let clock = Clock::new();
    let source = Scripted::new(&clock, "sa@p", Step::Lives(3600));
    let (cache, _) = spawn(&source, &clock);
    let mut token = cache.get().await.unwrap();
    let mut delays = Vec::new();
    for _ in 0..9 {
        let refusal = cache.refused(&token);
        delays.push(
            refusal
                .repeated
                .map_or(Duration::ZERO, |r| r.next_refresh_in),
        );
        assert_eq!(refusal.fetching_now, refusal.repeated.is_none());
        token = next_token(&cache, &token).await;
    }
    let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 60, 60]);
}

/// Waits (in paused time) for the token after `old`.
async fn next_token(cache: &TokenCache, old: &Arc<IdToken>) -> Arc<IdToken> {
    for _ in 0..1000 {
        if let Some(t) = cache.current().filter(|t| !Arc::ptr_eq(t, old)) {
            return t;
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("no new token within 100 s");
}

#[tokio::test(start_paused = true)]
async fn one_forced_refresh_and_one_warning_per_token() {
    let clock = Clock::new();
    let source = Scripted::new(&clock, "sa@p", Step::Lives(3600));
    let (cache, _) = spawn(&source, &clock);
    let first = cache.get().await.unwrap();
    // Many requests refuse the same token: one refresh, no warning.
    let refusals: Vec<_> = (0..20).map(|_| cache.refused(&first)).collect();
    assert!(
        refusals
            .iter()
            .all(|r| r.fetching_now && r.repeated.is_none())
    );
    let second = cache.newer_than(&first).await.unwrap();
    assert_eq!(source.fetches(), 2);
    // The fresh token is refused too, many times: one warning, one (delayed) refresh.
    let refusals: Vec<_> = (0..20).map(|_| cache.refused(&second)).collect();
    assert_eq!(refusals.iter().filter(|r| r.repeated.is_some()).count(), 1);
    assert!(
        refusals
            .iter()
            .all(|r| !r.fetching_now && r.newer.is_none())
    );
    sleep(Duration::from_millis(900)).await;
    assert_eq!(source.fetches(), 2, "refreshed before the backoff ended");
    sleep(Duration::from_millis(300)).await;
    assert_eq!(source.fetches(), 3);
    // A request that met the old token now finds the newer one without fetching.
    let newer = cache.refused(&second).newer.expect("the newer token");
    assert!(!Arc::ptr_eq(&newer, &second));
    sleep(Duration::from_secs(60)).await;
    assert_eq!(source.fetches(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_token_or_a_quiet_spell_starts_a_new_run() {
    let clock = Clock::new();
    let source = Scripted::new(&clock, "sa@p", Step::Lives(3600));
    let (cache, _) = spawn(&source, &clock);
    let first = cache.get().await.unwrap();
    assert!(cache.refused(&first).fetching_now);
    let second = cache.newer_than(&first).await.unwrap();
    assert!(refuse(&cache), "a refused forced token warns");
    let third = next_token(&cache, &second).await;
    // Longer than the window after the forced fetch: a refusal is news again.
    sleep(RefreshPolicy::default().refusal_window).await;
    let refusal = cache.refused(&third);
    assert!(refusal.fetching_now && refusal.repeated.is_none());
    let fourth = cache.newer_than(&third).await.unwrap();
    // The schedule replaces the token (at 70-80 % of its hour): refusing that one is
    // the first of a run, whatever came before.
    sleep(Duration::from_secs(3000)).await;
    let fifth = cache.current().unwrap();
    assert!(!Arc::ptr_eq(&fifth, &fourth));
    assert!(cache.refused(&fifth).fetching_now);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_during_failures_waits_for_the_failure_backoff() {
    let clock = Clock::new();
    let source = Scripted::new(&clock, "sa@p", Step::Lives(3600));
    let (cache, _) = spawn(&source, &clock);
    let first = cache.get().await.unwrap();
    source.then(Step::Fail);
    assert!(cache.refused(&first).fetching_now);
    let err = cache.newer_than(&first).await.unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    // Failures back off as ever (250 ms, 500 ms, 1 s …): no fetch per refused request.
    for _ in 0..20 {
        cache.refused(&first);
        sleep(Duration::from_millis(100)).await;
    }
    assert!(source.fetches() <= 5, "{} fetches", source.fetches());
    // The held token is still handed out meanwhile.
    assert!(cache.current().is_some());
}
