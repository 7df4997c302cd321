//! Where clients connect: a TCP address or a Unix socket (`--listen unix:PATH`).
//!
//! A Unix socket's file permissions decide who may use the proxy, which on a shared
//! laptop or host is a stronger boundary than a loopback port every local user can reach.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::either::Either;

pub use crate::config::ListenAddr;

/// Binds `addr`. A stale socket file from an earlier run is removed first, but only when
/// it really is a socket: a typo must never delete a user's file.
pub(crate) async fn bind(addr: &ListenAddr) -> io::Result<Listener> {
    match addr {
        ListenAddr::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr).await?)),
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            Ok(Listener::Unix(UnixListener::bind(path)?, path.clone()))
        }
    }
}
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        )),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// A bound listener of either kind.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// An accepted connection of either kind (tokio-util's `Either` forwards the I/O traits).
pub(crate) type Conn = Either<TcpStream, UnixStream>;

impl Listener {
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Listener::Unix(_, path) => Ok(ListenAddr::Unix(path.clone())),
        }
    }

    /// Accepts one connection; the peer address is known for TCP only.
    pub(crate) async fn accept(&self) -> io::Result<(Conn, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                // Small request/response exchanges must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                Ok((Either::Left(stream), Some(peer)))
            }
            Listener::Unix(l, _) => {
                let (stream, _) = l.accept().await?;
                Ok((Either::Right(stream), None))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unix_socket_binds_and_refuses_to_clobber_a_file() {
        let dir = std::env::temp_dir().join(format!("iap-proxy-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("proxy.sock");
        let l = bind(&ListenAddr::Unix(sock.clone())).await.unwrap();
        assert_eq!(
            l.local_addr().unwrap().to_string(),
            format!("unix:{}", sock.display())
        );
        drop(l);
        assert!(!sock.exists(), "socket file removed on drop");
        let file = dir.join("precious.txt");
        std::fs::write(&file, "keep me").unwrap();
        let err = bind(&ListenAddr::Unix(file.clone())).await.err().unwrap();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
