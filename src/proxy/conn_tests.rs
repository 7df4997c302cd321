use super::*;
use tokio::sync::Semaphore;

fn state() -> Arc<ConnState> {
    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    ConnState::new(ConnSlot::new(permit, Gauge::default()))
}

const HEADER_READ: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn no_request_head_in_time_closes_the_connection() {
    let s = state();
    let start = Instant::now();
    assert_eq!(s.watchdog(HEADER_READ, IDLE).await, Expired::HeaderRead);
    assert_eq!(start.elapsed(), HEADER_READ);
}

#[tokio::test(start_paused = true)]
async fn idle_between_requests_then_a_partial_head() {
    let s = state();
    let start = Instant::now();
    let request = s.request_started();
    let watchdog = tokio::spawn({
        let s = s.clone();
        async move { (s.watchdog(HEADER_READ, IDLE).await, Instant::now()) }
    });
    // A request in flight for 30 s is never idle.
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(request);
    let (why, at) = watchdog.await.unwrap();
    assert_eq!(why, Expired::Idle);
    assert_eq!(at - start, Duration::from_secs(40));

    // After the idle spell began, bytes of a next head start the header clock.
    let s = state();
    drop(s.request_started());
    let start = Instant::now();
    let watchdog = tokio::spawn({
        let s = s.clone();
        async move { (s.watchdog(HEADER_READ, IDLE).await, Instant::now()) }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.bytes_read();
    let (why, at) = watchdog.await.unwrap();
    assert_eq!(why, Expired::HeaderRead);
    assert_eq!(at - start, Duration::from_secs(5));
}

#[tokio::test]
async fn only_mostly_cancelled_h2_connections_are_calmed() {
    let s = state();
    s.h2.store(true, Ordering::Relaxed);
    for i in 0..RESET_MIN_STREAMS {
        let _in_flight = s.request_started();
        // Every other stream is cancelled at once: half of them.
        if i % 2 == 1 {
            s.stream_cancelled(Duration::from_millis(1));
        }
    }
    assert!(
        s.calm.load(Ordering::Relaxed),
        "half cancelled past the minimum"
    );
    let s = state();
    s.h2.store(true, Ordering::Relaxed);
    for _ in 0..(RESET_MIN_STREAMS * 2) {
        let _in_flight = s.request_started();
        s.stream_cancelled(Duration::from_secs(2));
    }
    assert!(
        !s.calm.load(Ordering::Relaxed),
        "slow cancellations are a client's right"
    );
}
