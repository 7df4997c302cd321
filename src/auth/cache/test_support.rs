//! A token source for the cache's paused-time tests: its answers are scripted step by step,
//! and its tokens are real JWT shapes stamped by a wall clock the test controls.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::BoxFuture;

use super::policy::WallClock;
use super::{FetchCounters, RefreshPolicy, TokenCache};
use crate::auth::error::FetchError;
use crate::auth::token::{IdToken, TokenSource};

/// A wall clock that follows tokio's (paused) clock, plus jumps the test makes: a suspend
/// is a jump of the wall clock alone.
#[derive(Clone)]
pub(crate) struct Clock {
    start_wall: SystemTime,
    start: tokio::time::Instant,
    jumped: Arc<AtomicI64>,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            start_wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            start: tokio::time::Instant::now(),
            jumped: Arc::new(AtomicI64::new(0)),
        }
    }
    pub(crate) fn now(&self) -> SystemTime {
        let t = self.start_wall + self.start.elapsed();
        let jumped = self.jumped.load(Ordering::SeqCst);
        let by = Duration::from_secs(jumped.unsigned_abs());
        if jumped >= 0 { t + by } else { t - by }
    }
    pub(crate) fn unix(&self) -> i64 {
        let secs = self.now().duration_since(SystemTime::UNIX_EPOCH);
        secs.map_or(0, |d| d.as_secs() as i64)
    }
    /// Moves the wall clock (only) by `secs`.
    pub(crate) fn jump(&self, secs: i64) {
        self.jumped.fetch_add(secs, Ordering::SeqCst);
    }
    pub(crate) fn wall(&self) -> WallClock {
        let clock = self.clone();
        WallClock::fake(move || clock.now())
    }
}

/// What one fetch does. Times are seconds relative to the source's clock at the fetch.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// A token living this long (`iat` = now).
    Lives(i64),
    /// A token with these claims, relative to now (`iat` absent when `None`).
    Claims {
        iat: Option<i64>,
        exp: i64,
    },
    /// A token whose `exp` is this JSON number, verbatim.
    RawExp(&'static str),
    Fail,
    Panic,
}

pub(crate) struct Scripted {
    pub(crate) clock: Clock,
    pub(crate) email: &'static str,
    plan: Mutex<VecDeque<Step>>,
    /// What every fetch does once the plan is used up.
    then: Mutex<Step>,
    pub(crate) fetches: AtomicUsize,
}

impl Scripted {
    pub(crate) fn new(clock: &Clock, email: &'static str, then: Step) -> Arc<Scripted> {
        Arc::new(Scripted {
            clock: clock.clone(),
            email,
            plan: Mutex::new(VecDeque::new()),
            then: Mutex::new(then),
            fetches: AtomicUsize::new(0),
        })
    }
    pub(crate) fn plan(&self, steps: impl IntoIterator<Item = Step>) {
        self.plan.lock().unwrap().extend(steps);
    }
    pub(crate) fn then(&self, step: Step) {
        *self.then.lock().unwrap() = step;
    }
    pub(crate) fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn jwt(&self, step: &Step) -> String {
        let now = self.clock.unix();
        let claims = match step {
            Step::Lives(secs) => format!(r#"{{"iat":{now},"exp":{}}}"#, now + secs),
            Step::Claims {
                iat: Some(iat),
                exp,
            } => {
                format!(r#"{{"iat":{},"exp":{}}}"#, now + iat, now + exp)
            }
            Step::Claims { iat: None, exp } => format!(r#"{{"exp":{}}}"#, now + exp),
            Step::RawExp(exp) => format!(r#"{{"exp":{exp}}}"#),
            Step::Fail | Step::Panic => unreachable!(),
        };
        let claims = claims.replace('{', &format!(r#"{{"aud":"a","email":"{}","#, self.email));
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(claims))
    }
}

impl TokenSource for Scripted {
    fn describe(&self) -> String {
        format!("scripted {}", self.email)
    }
    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, FetchError>> {
        Box::pin(async move {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let planned = self.plan.lock().unwrap().pop_front();
            let step = planned.unwrap_or_else(|| self.then.lock().unwrap().clone());
            match step {
                Step::Fail => Err(FetchError::Rejected {
                    endpoint: "test".into(),
                    status: 500,
                    detail: "boom".into(),
                }),
                Step::Panic => panic!("scripted panic in fetch"),
                step => Ok(IdToken::from_jwt(&self.jwt(&step))?),
            }
        })
    }
}

/// A cache over `source` on `clock`, its counters returned for the test to read.
pub(crate) fn spawn(source: &Arc<Scripted>, clock: &Clock) -> (TokenCache, FetchCounters) {
    let counters = FetchCounters::default();
    let policy = RefreshPolicy {
        clock: clock.wall(),
        ..RefreshPolicy::default()
    };
    let cache = TokenCache::spawn(source.clone(), "a", policy, counters.clone());
    (cache, counters)
}
