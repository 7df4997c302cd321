//! `[[routes]]`, the admin listener, Unix sockets and the sidecar keys.

use super::*;

fn load_file(toml: &str, flags: &[&str]) -> Result<Settings, ConfigErrors> {
    let dir = TempDir::new();
    let path = dir.file("routes.toml", toml);
    let mut argv = vec!["--config", path.as_str()];
    argv.extend_from_slice(flags);
    load(&argv, &[])
}

const TWO_ROUTES: &str = r#"
audience = "123-abc.apps.googleusercontent.com"
header = "proxy-authorization"

[[routes]]
name = "reports"
listen = "127.0.0.1:8081"
upstream = "https://reports.example.com"

[[routes]]
listen = "unix:/tmp/iap-proxy-admin-app.sock"
upstream = "https://admin.example.com"
audience = "456-def.apps.googleusercontent.com"
header = "authorization"
"#;

#[test]
fn routes_without_a_top_level_upstream_inherit_the_rest() {
    let s = load_file(TWO_ROUTES, &[]).unwrap();
    let routes = &s.routes;
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].name, "reports");
    assert_eq!(routes[0].listen.to_string(), "127.0.0.1:8081");
    assert_eq!(routes[0].audience, AUD, "inherited from the top level");
    assert_eq!(
        routes[0].header,
        AuthHeader::ProxyAuthorization,
        "inherited"
    );
    assert_eq!(routes[1].name, "route-2");
    assert_eq!(
        routes[1].listen,
        ListenAddr::Unix("/tmp/iap-proxy-admin-app.sock".into())
    );
    assert_eq!(routes[1].audience, "456-def.apps.googleusercontent.com");
    assert_eq!(
        routes[1].header,
        AuthHeader::Authorization,
        "the route's own value wins"
    );
}

#[test]
fn a_top_level_upstream_is_a_route_too_and_flags_reach_every_route() {
    let s = load_file(TWO_ROUTES, &["--upstream", UP, "--token-wait", "7"]).unwrap();
    let routes = &s.routes;
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[0].name, DEFAULT_ROUTE);
    assert_eq!(routes[0].listen.to_string(), "127.0.0.1:8080");
    assert!(
        routes
            .iter()
            .all(|r| r.token_wait == Duration::from_secs(7))
    );
}

#[test]
fn route_mistakes_are_each_reported() {
    let table: &[(&str, &str)] = &[
        (
            "[[routes]]\nupstream = \"https://a.example.com\"\n",
            "needs its own `listen`",
        ),
        (
            "[[routes]]\nlisten = \"127.0.0.1:9001\"\n",
            "needs its own `upstream`",
        ),
        (
            "[[routes]]\nlisten = \"127.0.0.1:9001\"\nupstream = \"https://a.example.com\"\nlog_format = \"json\"\n",
            "`log_format` is process-wide",
        ),
        (
            "[[routes]]\nlisten = \"127.0.0.1:9001\"\nupstream = \"https://a.example.com\"\nupstreem = \"x\"\n",
            "`upstreem` is not a route key",
        ),
        (
            "[[routes]]\nlisten = \"0.0.0.0:9001\"\nupstream = \"https://a.example.com\"\n",
            "[[routes]] #1: listen = \"0.0.0.0:9001\"",
        ),
        (
            "[[routes]]\nlisten = \"127.0.0.1:9001\"\nupstream = \"http://a.example.com\"\n",
            "[[routes]] #1: upstream",
        ),
        (
            "[[routes]]\nlisten = \"127.0.0.1:9001\"\nupstream = \"https://a.example.com\"\n\
             [[routes]]\nlisten = \"127.0.0.1:9001\"\nupstream = \"https://b.example.com\"\n",
            "both listen on 127.0.0.1:9001",
        ),
        (
            "[[routes]]\nname = \"has space\"\nlisten = \"127.0.0.1:9001\"\nupstream = \"https://a.example.com\"\n",
            "letters, digits",
        ),
        ("routes = 3\n", "array of tables"),
    ];
    for (toml, want) in table {
        let toml = format!("audience = \"{AUD}\"\n{toml}");
        let errs = load_file(&toml, &[]).expect_err(toml.as_str());
        assert!(
            errs.to_string().contains(want),
            "want {want:?} for\n{toml}\ngot: {errs}"
        );
    }
}

#[test]
fn sidecar_keys() {
    let s = load_ok(
        &[
            "--admin-listen",
            "127.0.0.1:9091",
            "--max-sigterm-delay",
            "15",
        ],
        &[],
    );
    assert_eq!(
        s.process.admin_listen,
        Some("127.0.0.1:9091".parse().unwrap())
    );
    assert_eq!(s.process.max_sigterm_delay, Duration::from_secs(15));
    let errs = load_err(&["--upstream", UP, "--admin-listen", "0.0.0.0:9091"], &[]);
    assert_one_error(&errs, &["admin_listen", "--allow-non-loopback"]);
    let s = load_ok(
        &["--admin-listen", "0.0.0.0:9091", "--allow-non-loopback"],
        &[],
    );
    assert!(s.process.admin_listen.is_some());
    let errs = load_err(&["--upstream", UP, "--listen", "unix:"], &[]);
    assert_one_error(&errs, &["listen", "socket path"]);
    let s = load_ok(&["--listen", "unix:/run/iap.sock"], &[]);
    assert_eq!(s.routes[0].listen, ListenAddr::Unix("/run/iap.sock".into()));
    let dir = TempDir::new();
    let missing = dir.missing("secret");
    let errs = load_err(&["--upstream", UP, "--client-secret-file", &missing], &[]);
    assert_one_error(&errs, &["client_secret_file", "cannot be read"]);
}
