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

/// Binds `addr`; a Unix socket gets `socket_mode` permissions. A stale socket file from an
/// earlier run is removed first, but only when it really is a socket: a typo must never
/// delete a user's file.
pub(crate) async fn bind(addr: &ListenAddr, socket_mode: u32) -> io::Result<Listener> {
    match addr {
        ListenAddr::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr).await?)),
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            Ok(Listener::Unix(bind_unix(path, socket_mode)?, path.clone()))
        }
    }
}

/// A socket file takes the umask's permissions when bound (`srwxrwxrwx` under umask 000),
/// and every local user who can connect acts as the service account. So it is bound in a
/// fresh directory only this user can enter, given `mode`, and only then renamed into place:
/// at no moment can another user connect to it.
fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    let private = parent.join(format!(
        ".iap-proxy-bind-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("socket");
    let bound = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
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
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn unix_socket_binds_and_refuses_to_clobber_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let sock = dir.join("proxy.sock");
        let l = bind(&ListenAddr::Unix(sock.clone()), 0o600).await.unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        let leftovers: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the socket is left: {leftovers:?}");
        assert_eq!(
            l.local_addr().unwrap().to_string(),
            format!("unix:{}", sock.display())
        );
        drop(l);
        assert!(!sock.exists(), "socket file removed on drop");
        let file = dir.join("precious.txt");
        std::fs::write(&file, "keep me").unwrap();
        let err = bind(&ListenAddr::Unix(file.clone()), 0o600)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }
}
