//! A throwaway HTTP server on 127.0.0.1 for the token sources' unit tests.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::token_http::TokenHttp;

/// Serves every connection with `handler` until the test's runtime ends.
pub(crate) async fn serve<F>(handler: F) -> SocketAddr
where
    F: Fn(Request<Bytes>) -> http::Response<String> + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await?.to_bytes();
                    let answer = handler(Request::from_parts(parts, body));
                    Ok::<_, hyper::Error>(answer.map(|b| Full::new(Bytes::from(b))))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new();
            tokio::spawn(async move { conn.serve_connection(TokioIo::new(stream), service).await });
        }
    });
    addr
}

/// A client for plain-http fakes: no roots needed.
pub(crate) fn client() -> TokenHttp {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    TokenHttp::with_egress(tls, &crate::outbound::egress::Egress::direct())
}
