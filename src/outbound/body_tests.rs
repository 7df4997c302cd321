use super::*;
use std::convert::Infallible;

use http_body_util::{BodyExt, Full, StreamBody};

type Frames =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn streamed(chunks: &[&'static [u8]], trailers: bool) -> Frames {
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c))))
        .collect();
    if trailers {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        frames.push(Ok(Frame::trailers(t)));
    }
    StreamBody::new(futures_util::stream::iter(frames))
}

async fn collect<B>(body: UpBody<B>) -> (Bytes, Option<HeaderMap>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let collected = body.collect().await.map_err(|e| e.to_string()).unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[tokio::test]
async fn a_small_body_is_sent_again_whole_with_its_trailers() {
    let counter = Counter::default();
    let replay = Replay::new(
        streamed(&[b"ab", b"cd"], true),
        10,
        counter.clone(),
        Activity::new(),
    );
    assert!(!replay.has_ended());
    let (first, t1) = collect(replay.attempt().unwrap()).await;
    assert!(replay.has_ended(), "the client's body ended");
    replay.ended().await;
    let (second, t2) = collect(replay.attempt().unwrap()).await;
    assert_eq!(
        (first.as_ref(), second.as_ref()),
        (&b"abcd"[..], &b"abcd"[..])
    );
    assert_eq!(t1, t2);
    assert!(t2.is_some());
    assert_eq!(counter.get(), 4, "replayed bytes are not counted twice");
}

/// A streamed body that announces its length, as a `Content-Length` request's does.
struct Announced(Frames, u64);

impl Body for Announced {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = ready!(Pin::new(&mut self.0).poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            self.1 -= f.data_ref().map_or(0, |d| d.len() as u64);
        }
        Poll::Ready(frame)
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.1)
    }
}

#[tokio::test]
async fn a_body_of_unknown_length_still_coming_is_not_replayed() {
    let replay = Replay::new(
        streamed(&[b"ab", b"cd"], false),
        10,
        Counter::default(),
        Activity::new(),
    );
    let mut first = replay.attempt().unwrap();
    first.frame().await.unwrap().unwrap();
    assert!(!replay.replayable(), "it may yet outgrow the buffer");
    assert_eq!(collect(first).await.0, "cd");
    assert!(replay.replayable(), "ended within the buffer");
}

#[tokio::test]
async fn a_partly_read_body_is_replayed_then_read_on() {
    let source = Announced(streamed(&[b"ab", b"cd", b"ef"], false), 6);
    let replay = Replay::new(source, 10, Counter::default(), Activity::new());
    let mut first = replay.attempt().unwrap();
    let frame = first.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "ab");
    let second = replay.attempt().unwrap();
    // The first attempt lost the body to the second.
    assert!(first.frame().await.unwrap().is_err());
    assert_eq!(collect(second).await.0, "abcdef");
}

#[tokio::test]
async fn a_body_over_the_buffer_streams_but_is_not_replayed() {
    let counter = Counter::default();
    let replay = Replay::new(
        streamed(&[b"abc", b"def", b"gh"], false),
        4,
        counter.clone(),
        Activity::new(),
    );
    assert_eq!(collect(replay.attempt().unwrap()).await.0, "abcdefgh");
    assert!(!replay.replayable());
    assert!(replay.attempt().is_none());
    assert_eq!(counter.get(), 8);
}

#[tokio::test]
async fn empty_and_known_length_bodies_keep_their_framing() {
    let replay = Replay::new(
        Empty::<Bytes>::new(),
        0,
        Counter::default(),
        Activity::new(),
    );
    let body = replay.attempt().unwrap();
    assert!(
        body.is_end_stream(),
        "no chunked framing for a bodiless request"
    );
    assert!(replay.has_ended());
    let replay = Replay::new(
        Full::new(Bytes::from_static(b"xyz")),
        0,
        Counter::default(),
        Activity::new(),
    );
    let body = replay.attempt().unwrap();
    assert_eq!(body.size_hint().exact(), Some(3));
    assert_eq!(collect(body).await.0, "xyz");
    assert!(
        !replay.replayable(),
        "a zero buffer replays only bodiless requests"
    );
}

#[tokio::test]
async fn a_wait_for_the_end_of_the_body_wakes_when_it_ends() {
    let replay = Replay::new(
        streamed(&[b"ab"], false),
        10,
        Counter::default(),
        Activity::new(),
    );
    let waiter = tokio::spawn({
        let replay = replay.clone();
        async move { replay.ended().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "the body has not ended yet");
    collect(replay.attempt().unwrap()).await;
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("woken when the body ended")
        .unwrap();
}
