//! The cache's clocks, a crashing refresher and a reloaded source, under paused time.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::sleep;

use super::NotReplaced;
use super::test_support::{Clock, Scripted, Step, spawn};
use crate::auth::error::{BadToken, FetchError};

#[tokio::test(start_paused = true)]
async fn after_a_suspend_the_wall_clock_retires_the_token_at_once() {
    let clock = Clock::new();
    let source = Scripted::new(&clock, "sa@p", Step::Lives(3600));
    let (cache, _) = spawn(&source, &clock);
    let before = cache.get().await.unwrap();
    // A night asleep: the wall clock moves on, the monotonic one does not.
    clock.jump(8 * 3600);
    assert!(cache.current().is_none(), "an expired token handed out");
    // The first request after the wake-up gets a fresh token, without waiting for timers.
    let after = cache.get().await.unwrap();
    assert!(!Arc::ptr_eq(&before, &after));
    assert_eq!(source.fetches(), 2);
    // Without any request, the refresher notices within its wall-clock check.
    clock.jump(8 * 3600);
    sleep(Duration::from_secs(16)).await;
    assert_eq!(source.fetches(), 3);
    assert!(cache.current().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_token_expired_on_arrival_is_a_clock_skew_failure_that_backs_off() {
    let clock = Clock::new();
    // The local clock is two hours ahead of the issuer's: its hour-long token is dead here.
    let source = Scripted::new(
        &clock,
        "sa@p",
        Step::Claims {
            iat: Some(-7200),
            exp: -3600,
        },
    );
    let (cache, _) = spawn(&source, &clock);
    let err = cache.get().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("already expired when it arrived") && text.contains("1h 0m 0s before"),
        "{text}"
    );
    assert!(
        text.contains("clock skew") && text.contains("date -u"),
        "{text}"
    );
    // A request every 100 ms for 10 s: fetches back off (up to 4 s apart without a token)
    // instead of one every 250 ms.
    for _ in 0..100 {
        assert!(cache.current().is_none());
        sleep(Duration::from_millis(100)).await;
    }
    let fetches = source.fetches();
    assert!((4..=8).contains(&fetches), "{fetches} fetches in 10 s");
    // Once the clocks agree, the next fetch gives a usable token.
    source.then(Step::Lives(3600));
    cache.get().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_clock_behind_the_issuer_uses_the_tokens_own_lifetime() {
    let clock = Clock::new();
    // Issued ten minutes in this machine's future: by the local clock the token has 70
    // minutes left, but it lives 60.
    let source = Scripted::new(&clock, "sa@p", Step::Fail);
    source.plan([Step::Claims {
        iat: Some(600),
        exp: 4200,
    }]);
    let (cache, _) = spawn(&source, &clock);
    cache.get().await.unwrap();
    // Refreshes fail from now on; the token is handed out until its own hour (less the
    // 30 s margin) is over, not until the local clock reaches its exp.
    sleep(Duration::from_secs(3560)).await;
    assert!(cache.current().is_some());
    sleep(Duration::from_secs(20)).await;
    assert!(cache.current().is_none());
}

#[tokio::test(start_paused = true)]
async fn an_exp_beyond_the_year_9999_is_a_bad_token_and_the_refresher_lives_on() {
    let clock = Clock::new();
    let source = Scripted::new(&clock, "sa@p", Step::RawExp("18446744073709551615"));
    let (cache, counters) = spawn(&source, &clock);
    for raw in ["18446744073709551615", "9223372036854775807", "1e300"] {
        source.then(Step::RawExp(raw));
        let err = cache.get().await.unwrap_err();
        let super::NoToken::FetchFailed { error, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(
            matches!(
                &**error,
                FetchError::BadToken(BadToken::ExpOutOfRange { .. })
            ),
            "{raw}: {error:?}"
        );
        assert!(err.to_string().contains("beyond the year 9999"), "{err}");
    }
    // The last second of 9999 is a real (if odd) expiry: scheduled as a day at most.
    source.then(Step::RawExp("253402300799"));
    cache.get().await.unwrap();
    let fetches = source.fetches();
    sleep(Duration::from_secs(20 * 3600)).await;
    assert_eq!(source.fetches(), fetches + 1, "refreshed within a day");
    assert!(cache.gave_up().is_none());
    assert_eq!(counters.restarts.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_crashed_refresher_is_restarted_and_given_up_when_it_keeps_crashing() {
    let clock = Clock::new();
    let source = Scripted::new(&clock, "sa@p", Step::Lives(3600));
    source.plan([Step::Panic, Step::Panic]);
    let (cache, counters) = spawn(&source, &clock);
    // Two crashes, then a token: the request waiting meanwhile still gets one.
    let token = cache.get().await.unwrap();
    assert_eq!(counters.restarts.get(), 2);
    assert!(cache.gave_up().is_none());
    // A refresher that crashes every time is given up after five restarts in a row.
    source.then(Step::Panic);
    assert!(cache.refused(&token).fetching_now);
    sleep(Duration::from_secs(120)).await;
    assert_eq!(counters.restarts.get(), 2 + 5);
    let why = cache.gave_up().expect("given up");
    assert!(why.contains("crashed 6 times in a row"), "{why}");
    assert!(why.contains("scripted panic in fetch"), "{why}");
    // The token it held is still handed out while it lasts.
    assert!(cache.current().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_source_is_tried_before_it_replaces_the_old_one() {
    let clock = Clock::new();
    let old = Scripted::new(&clock, "old@p", Step::Lives(100));
    let (cache, _) = spawn(&old, &clock);
    let first = cache.get().await.unwrap();
    assert_eq!(first.principal(), "old@p");
    // A candidate that cannot fetch changes nothing: same token, same source.
    let broken = Scripted::new(&clock, "broken@p", Step::Fail);
    let err = cache.replace_source(broken.clone()).await.unwrap_err();
    assert!(
        matches!(&err, NotReplaced::Fetch(e) if e.to_string().contains("boom")),
        "{err:?}"
    );
    assert!(Arc::ptr_eq(&cache.current().unwrap(), &first));
    sleep(Duration::from_secs(85)).await;
    assert_eq!(cache.current().unwrap().principal(), "old@p");
    assert_eq!((old.fetches(), broken.fetches()), (2, 1));
    // A good one is in use at once: its token is current, and the schedule uses it.
    let new = Scripted::new(&clock, "new@p", Step::Lives(100));
    cache.replace_source(new.clone()).await.unwrap();
    assert_eq!(cache.current().unwrap().principal(), "new@p");
    assert_eq!(&*cache.source_name(), "scripted new@p");
    sleep(Duration::from_secs(85)).await;
    assert_eq!((old.fetches(), new.fetches()), (2, 2));
}
