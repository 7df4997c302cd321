//! `retry::classify` against the errors a real hyper client gives when a raw peer answers
//! with each fault: if a hyper or h2 upgrade changes how they surface, these fail.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::retry::{Failure, RetryReason, classify};

const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];

fn goaway(last_stream: u8, code: u8) -> Vec<u8> {
    vec![
        0,
        0,
        8,
        7,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        last_stream,
        0,
        0,
        0,
        code,
    ]
}

fn rst_stream(stream: u8, code: u8) -> Vec<u8> {
    vec![0, 0, 4, 3, 0, 0, 0, 0, stream, 0, 0, 0, code]
}

/// A raw HTTP/2 peer: reads the client's preface and frames up to its first HEADERS, then
/// writes `fault`, then holds the connection open (or closes it, `close`).
async fn raw_h2_peer(mut io: DuplexStream, fault: Vec<u8>, close: bool) {
    let mut preface = [0u8; 24];
    if io.read_exact(&mut preface).await.is_err() {
        return;
    }
    let _ = io.write_all(&SETTINGS).await;
    loop {
        let mut head = [0u8; 9];
        if io.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        if io.read_exact(&mut payload).await.is_err() {
            return;
        }
        match head[3] {
            4 if head[4] & 1 == 0 => {
                let _ = io.write_all(&SETTINGS_ACK).await;
            }
            1 => break,
            _ => {}
        }
    }
    let _ = io.write_all(&fault).await;
    if close {
        return;
    }
    let mut rest = Vec::new();
    let _ = io.read_to_end(&mut rest).await;
}

async fn h2_error<F>(peer: impl FnOnce(DuplexStream) -> F) -> hyper::Error
where
    F: Future<Output = ()> + Send + 'static,
{
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(peer(server));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://upstream.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("the client gives up within 5 s")
        .expect_err("no answer")
}

#[tokio::test]
async fn a_stream_above_goaways_last_stream_id_was_not_processed() {
    let err = h2_error(|io| raw_h2_peer(io, goaway(0, 0), false)).await;
    assert_eq!(
        classify(&err),
        Failure::NotProcessed(RetryReason::GoAway),
        "{err:?}"
    );
    // Whatever the GOAWAY's error code.
    let err = h2_error(|io| raw_h2_peer(io, goaway(0, 0xb), false)).await;
    assert_eq!(
        classify(&err),
        Failure::NotProcessed(RetryReason::GoAway),
        "{err:?}"
    );
}

#[tokio::test]
async fn refused_stream_was_not_processed_but_other_resets_may_have_been() {
    let err = h2_error(|io| raw_h2_peer(io, rst_stream(1, 7), false)).await;
    assert_eq!(
        classify(&err),
        Failure::NotProcessed(RetryReason::RefusedStream),
        "{err:?}"
    );
    let err = h2_error(|io| raw_h2_peer(io, rst_stream(1, 2), false)).await;
    assert_eq!(classify(&err), Failure::Other, "INTERNAL_ERROR: {err:?}");
}

#[tokio::test]
async fn an_h2_connection_closed_under_a_processed_stream_is_only_closed() {
    // GOAWAY naming stream 1 as processed, then the connection ends without its answer.
    let err = h2_error(|io| raw_h2_peer(io, goaway(1, 0), true)).await;
    assert_eq!(classify(&err), Failure::Closed, "{err:?}");
}

#[tokio::test]
async fn an_http1_connection_closed_before_the_answer_is_closed() {
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match server.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        // Read the request, answer nothing, close: the keep-alive race's look.
    });
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "upstream.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .unwrap()
        .expect_err("no answer");
    assert_eq!(classify(&err), Failure::Closed, "{err:?}");
}
