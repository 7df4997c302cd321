//! What must differ between routes: their names, and every listener's address (the
//! admin listener's included). A clash caught here is a settings problem (exit 64), not a
//! bind failure after some listeners are already up.

use std::net::SocketAddr;

use super::layers::Layered;
use super::values::ListenAddr;

/// A route as far as this check is concerned: its name and its listen address.
pub(super) struct Named<'a> {
    pub(super) name: &'a str,
    pub(super) listen: &'a ListenAddr,
}

/// Two routes cannot share a name, and no two listeners an address.
pub(super) fn check(l: &mut Layered, routes: &[Named<'_>], admin: Option<SocketAddr>) {
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[..i] {
            if clash(a.listen, b.listen) {
                l.errors.push(format!(
                    "routes `{}` and `{}` both listen on {}; give each route its own listen address",
                    b.name, a.name, a.listen
                ));
            }
            if a.name == b.name {
                l.errors.push(format!(
                    "two routes are named `{}`; route names must be unique",
                    a.name
                ));
            }
        }
        if let Some(admin) = admin.filter(|admin| clash(a.listen, &ListenAddr::Tcp(*admin))) {
            let described = l.describe("admin_listen");
            l.errors.push(format!(
                "{described}: route `{}` listens on {} already; give the admin endpoints a port \
                 of their own, e.g. 127.0.0.1:{}",
                a.name,
                a.listen,
                admin.port().wrapping_add(1).max(1024)
            ));
        }
    }
}

/// Whether two listeners would need the same address. Port 0 (any free port) never
/// clashes; a wildcard address clashes with every address of its family on that port, and
/// `[::]` with IPv4 ones too (Linux binds it dual-stack).
fn clash(a: &ListenAddr, b: &ListenAddr) -> bool {
    match (a, b) {
        (ListenAddr::Unix(a), ListenAddr::Unix(b)) => a == b,
        (ListenAddr::Tcp(a), ListenAddr::Tcp(b)) => {
            let (x, y) = (a.ip(), b.ip());
            let overlap = x == y
                || (x.is_unspecified() && (x.is_ipv6() || y.is_ipv4()))
                || (y.is_unspecified() && (y.is_ipv6() || x.is_ipv4()));
            a.port() != 0 && a.port() == b.port() && overlap
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> ListenAddr {
        ListenAddr::Tcp(s.parse().unwrap())
    }

    #[test]
    fn clashes_by_port_and_address_family() {
        let yes = [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:8080", "127.0.0.1:8080"),
            ("[::1]:8080", "[::]:8080"),
        ];
        for (a, b) in yes {
            assert!(
                clash(&tcp(a), &tcp(b)) && clash(&tcp(b), &tcp(a)),
                "{a} {b}"
            );
        }
        let no = [
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("127.0.0.1:8080", "127.0.0.1:8081"),
            ("127.0.0.1:8080", "127.0.0.2:8080"),
            ("0.0.0.0:8080", "[::1]:8080"),
        ];
        for (a, b) in no {
            assert!(
                !clash(&tcp(a), &tcp(b)) && !clash(&tcp(b), &tcp(a)),
                "{a} {b}"
            );
        }
        let sock = ListenAddr::Unix("/run/a.sock".into());
        assert!(clash(&sock, &sock.clone()));
        assert!(!clash(&sock, &tcp("127.0.0.1:8080")));
    }
}
