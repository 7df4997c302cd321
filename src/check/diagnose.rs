//! From what came back (a credential error, a token's claims, the upstream's answers) to a
//! step in plain words, with the fix. Never given the token itself, only its claims.

use url::Url;

use super::probe::{Answer, Reach};
use super::report::{Diagnosis, Step};
use crate::auth::error::{
    BadToken, CredentialError, FetchError, NOT_FOUND_FIXES, not_found_summary,
};
use crate::auth::jwt::Claims;
use crate::iap::{self, Discovered};

pub(super) const ACCESSOR_ROLE: &str = "roles/iap.httpsResourceAccessor";
pub(super) const SHOWN_CHARS: usize = 200;
/// A token issued further ahead than this says the local clock is behind.
const SKEW_WARN_SECS: u64 = 300;

pub(super) fn host(upstream: &Url) -> String {
    let host = upstream.host_str().unwrap_or("the upstream");
    match upstream.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// "59m", "1h 5m", "42s": how far away a time is, in the largest two units.
pub(super) fn human(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 if secs % 60 == 0 => format!("{}m", secs / 60),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ if secs % 3600 < 60 => format!("{}h", secs / 3600),
        _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// `serviceAccount:EMAIL` or `user:EMAIL`, as IAM bindings name principals.
pub(super) fn member(email: Option<&str>) -> String {
    match email {
        Some(e) if e.ends_with(".gserviceaccount.com") => format!("serviceAccount:{e}"),
        Some(e) => format!("user:{e}"),
        None => "MEMBER".into(),
    }
}

pub(super) fn audience_fix(iap: &str, user_login: bool) -> String {
    if user_login {
        format!(
            "either impersonate a service account: --impersonate-service-account SA@PROJECT.iam.gserviceaccount.com\n\
             (and leave --audience unset: auto; you need roles/iam.serviceAccountTokenCreator on SA), or add your\n\
             OAuth client to the IAP application's programmatic-access allowlist:\n\
             gcloud iap settings set iap-settings.yaml --project=PROJECT --resource-type=iap_web\n\
             (iap-settings.yaml: accessSettings: {{oauthSettings: {{programmaticClients: [CLIENT_ID]}}}}); IAP's client is {iap}"
        )
    } else {
        format!("use --audience {iap} (or leave it unset: auto)")
    }
}

/// A credential that could not be found or built.
pub(super) fn credentials_error(err: &CredentialError) -> Step {
    const NAME: &str = "credentials";
    match err {
        CredentialError::NotFound { looked } => Step::fail(NAME, not_found_summary(looked))
            .fix(format!("one of:\n{NOT_FOUND_FIXES}"))
            .diagnosis(Diagnosis::NoCredentials),
        CredentialError::UserAudience {
            file,
            client_id,
            audience,
        } => Step::fail(
            NAME,
            format!(
                "{} holds your own Google login (authorized_user, OAuth client {client_id}); its ID tokens\n\
                 always carry aud = {client_id}, but IAP expects {audience}: IAP accepts them only when\n\
                 {client_id} is on the IAP application's programmatic-access allowlist",
                file.path.display()
            ),
        )
        .fix(audience_fix(audience, true).replace("CLIENT_ID", client_id))
        .diagnosis(Diagnosis::UserClientNotAllowlisted),
        other => Step::fail(NAME, other.to_string()),
    }
}

/// A token that could not be had from a built source.
pub(super) fn token_error(err: &FetchError) -> Step {
    const NAME: &str = "token";
    match err {
        FetchError::ImpersonationDenied { caller, target, .. } => Step::fail(
            NAME,
            format!(
                "impersonation denied: {caller} may not mint ID tokens as {target}; it needs\n\
                 roles/iam.serviceAccountOpenIdTokenCreator (or roles/iam.serviceAccountTokenCreator) on {target}\n\
                 ({err})"
            ),
        )
        .fix(format!(
            "gcloud iam service-accounts add-iam-policy-binding {target} --member=MEMBER \
             --role=roles/iam.serviceAccountOpenIdTokenCreator\n\
             (MEMBER: user:YOU@EXAMPLE.COM for your login, serviceAccount:SA_EMAIL for a key, principal://… for a federated identity)"
        ))
        .diagnosis(Diagnosis::ImpersonationDenied),
        FetchError::BadToken(reason @ BadToken::NotAJwt { .. }) => Step::fail(
            NAME,
            format!(
                "the credential returned something that is not an ID token ({reason}); that is what an\n\
                 OAuth access token (ya29.…) looks like. IAP accepts only a Google-signed ID token (a JWT)"
            ),
        )
        .fix(
            "give it a credential that can mint ID tokens: --credentials KEY.json (a service-account key),\n\
             or --impersonate-service-account SA@PROJECT.iam.gserviceaccount.com on top of your login;\n\
             with --credentials gcloud, gcloud must print an ID token: `gcloud auth print-identity-token --audiences=AUDIENCE`",
        )
        .diagnosis(Diagnosis::AccessToken),
        other => Step::fail(NAME, other.to_string()),
    }
}

/// What a fetched token says about itself, compared with what IAP expects.
pub(super) fn token_claims(
    claims: &Claims,
    iap_audience: Option<&str>,
    self_signed: bool,
    user_login: bool,
    now: u64,
) -> Step {
    const NAME: &str = "token";
    let kind = if self_signed {
        "self-signed JWT"
    } else {
        "ID token"
    };
    let email = claims.email.as_deref().unwrap_or("(no email claim)");
    let aud = claims.aud.as_deref().unwrap_or("(none)");
    let what = format!("{kind} for {email}, aud {aud}");
    if claims.exp <= now {
        return Step::fail(
            NAME,
            format!(
                "{what}, already expired when received: exp was {} ago.\n\
                 Either this machine's clock is wrong, or the credential handed out a stale cached token",
                human(now - claims.exp)
            ),
        )
        .fix(
            "compare `date -u` with the real UTC time and fix the clock (e.g. `sudo timedatectl set-ntp true`);\n\
             with gcloud, refresh its login: `gcloud auth login` or `gcloud auth application-default login`",
        )
        .diagnosis(Diagnosis::ExpiredToken);
    }
    let left = format!("{what}, expires in {}", human(claims.exp - now));
    if let Some(ahead) = claims.iat.and_then(|iat| iat.checked_sub(now)) {
        if ahead > SKEW_WARN_SECS {
            return Step::warn(
                NAME,
                format!(
                    "{left}; but it was issued {} in this machine's future: the clock is behind",
                    human(ahead)
                ),
            )
            .fix("compare `date -u` with the real UTC time and fix the clock");
        }
    }
    if self_signed {
        return Step::ok(NAME, left);
    }
    match iap_audience {
        Some(iap) if aud != iap => Step::warn(
            NAME,
            format!(
                "{left}; but IAP's OAuth client ID is {iap}: IAP refuses this token unless {aud} is on its\n\
                 programmatic-access allowlist"
            ),
        )
        .fix(audience_fix(iap, user_login).replace("CLIENT_ID", aud)),
        _ if claims.email.is_none() => Step::warn(
            NAME,
            format!("{left}; IAP needs an email claim to know who is asking"),
        ),
        _ => Step::ok(NAME, left),
    }
}

/// The unauthenticated GET: the TLS step, then (when there was an answer) the IAP step.
/// Returns what it revealed of the audience.
pub(super) fn upstream_probe(reach: &Reach, upstream: &Url) -> (Vec<Step>, Option<Discovered>) {
    let host = host(upstream);
    let answer = match reach {
        Reach::Answer(a) => a,
        Reach::Tls {
            message,
            certificate,
        } => {
            return (
                vec![tls_failure(&host, message, certificate.as_ref())],
                None,
            );
        }
        other => return (vec![unreachable("upstream", &host, other)], None),
    };
    let tls = if upstream.scheme() == "https" {
        Step::ok("upstream TLS", format!("certificate of {host} trusted"))
    } else {
        Step::warn("upstream TLS", format!("plain http to {host}: no TLS"))
    };
    let found = iap::from_answer(answer.status, &answer.headers, upstream);
    let iap = match &found {
        Some(Discovered::IapClientId(id)) => Step::ok(
            "IAP",
            format!("the upstream answers like IAP; its OAuth client ID is {id}"),
        ),
        Some(Discovered::CloudRunUrl(url)) => Step::warn(
            "IAP",
            format!(
                "no IAP sign-in redirect (answered {}); as a Cloud Run service its audience is {url}",
                answer.status
            ),
        )
        .diagnosis(Diagnosis::NotIap),
        None => Step::warn(
            "IAP",
            format!(
                "the upstream does not answer like IAP: without credentials IAP answers 302 to accounts.google.com\n\
                 with x-goog-iap-generated-response: true; this answered {}{}. It may not be behind IAP;\n\
                 the authenticated request decides",
                answer.status,
                location(answer)
            ),
        )
        .fix("check that --upstream is the IAP-protected URL (the load balancer's or App Engine's, not a backend's)")
        .diagnosis(Diagnosis::NotIap),
    };
    (vec![tls, iap], found)
}

pub(super) fn location(answer: &Answer) -> String {
    answer
        .headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| {
            format!(
                " (location: {})",
                l.chars().take(SHOWN_CHARS).collect::<String>()
            )
        })
        .unwrap_or_default()
}

fn tls_failure(host: &str, message: &str, certificate: Option<&rustls::CertificateError>) -> Step {
    use rustls::CertificateError as C;
    let ca_fix = format!(
        "--upstream-ca CA.pem, the PEM of the CA that signed {host}'s certificate (behind a TLS-inspecting\n\
         corporate proxy: your company's root CA); `openssl s_client -connect {host} -showcerts </dev/null` shows the chain"
    );
    let (detail, fix) = match certificate {
        Some(C::UnknownIssuer) | Some(C::BadSignature) | None => (
            format!("the certificate of {host} is not trusted here ({message})"),
            ca_fix,
        ),
        Some(C::NotValidForName) | Some(C::NotValidForNameContext { .. }) => (
            format!("the certificate of {host} is not issued for that name ({message})"),
            "use the host name the certificate names in --upstream".to_owned(),
        ),
        Some(C::Expired) | Some(C::ExpiredContext { .. }) | Some(C::NotValidYet) => (
            format!("the certificate of {host} is outside its validity period ({message})"),
            "check this machine's clock (`date -u`); otherwise the server's certificate needs renewing"
                .to_owned(),
        ),
        Some(_) => (
            format!("the certificate of {host} was refused ({message})"),
            ca_fix,
        ),
    };
    Step::fail("upstream TLS", detail)
        .fix(fix)
        .diagnosis(Diagnosis::UpstreamTlsUntrusted)
}

pub(super) fn unreachable(name: &'static str, host: &str, reach: &Reach) -> Step {
    let why = match reach {
        Reach::Timeout(waited) => format!("no answer within {}s", waited.as_secs()),
        Reach::Unreachable(reason) => reason.clone(),
        Reach::Tls { message, .. } => message.clone(),
        Reach::Answer(a) => a.status.to_string(),
    };
    Step::fail(name, format!("cannot reach {host}: {why}"))
        .fix(format!(
            "check the URL in --upstream, that {host} resolves (`getent hosts {}`) and is reachable from here;\n\
             behind a corporate proxy, set HTTPS_PROXY",
            host.split(':').next().unwrap_or(host)
        ))
        .diagnosis(Diagnosis::UpstreamUnreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(59), "59s");
        assert_eq!(human(600), "10m");
        assert_eq!(human(3599), "59m 59s");
        assert_eq!(human(3600), "1h");
        assert_eq!(human(3660), "1h 1m");
    }

    #[test]
    fn members_by_kind() {
        assert_eq!(
            member(Some("a@p.iam.gserviceaccount.com")),
            "serviceAccount:a@p.iam.gserviceaccount.com"
        );
        assert_eq!(member(Some("me@example.com")), "user:me@example.com");
        assert_eq!(member(None), "MEMBER");
    }

    #[test]
    fn expired_and_skewed_tokens() {
        let claims = |iat, exp| Claims {
            exp,
            aud: Some("a".into()),
            iss: None,
            email: Some("e@x".into()),
            iat: Some(iat),
        };
        let s = token_claims(&claims(100, 400), Some("a"), false, false, 1000);
        assert_eq!(s.diagnosis, Some(Diagnosis::ExpiredToken));
        assert!(s.detail.contains("10m ago"), "{}", s.detail);
        let s = token_claims(&claims(2000, 5000), Some("a"), false, false, 1000);
        assert!(s.detail.contains("clock is behind"), "{}", s.detail);
        let s = token_claims(&claims(1000, 4540), Some("b"), false, false, 1000);
        assert!(s.fix.unwrap().contains("--audience b"));
        let s = token_claims(&claims(1000, 4540), Some("a"), false, false, 1000);
        assert_eq!(s.detail, "ID token for e@x, aud a, expires in 59m");
    }

    #[test]
    fn not_found_splits_the_fixes_out() {
        use crate::auth::error::Looked;
        let err = CredentialError::NotFound {
            looked: vec![Looked::CredentialsFlag],
        };
        let s = credentials_error(&err);
        assert_eq!(s.diagnosis, Some(Diagnosis::NoCredentials));
        assert!(s.detail.contains("Looked at") && s.detail.contains("--credentials"));
        assert!(!s.detail.contains("Fix it"));
        let fix = s.fix.unwrap();
        assert!(
            fix.contains("gcloud auth application-default login"),
            "{fix}"
        );
        // Together they say what the error itself says.
        let whole = err.to_string();
        assert_eq!(whole, format!("{}\nFix it with {fix}", s.detail));
    }

    #[test]
    fn token_diagnoses_match_on_variants() {
        let not_jwt = FetchError::BadToken(BadToken::NotAJwt { segments: 2 });
        let s = token_error(&not_jwt);
        assert_eq!(s.diagnosis, Some(Diagnosis::AccessToken));
        assert!(s.detail.contains("found 2"), "{}", s.detail);
        // Another unusable token is not taken for an access token.
        let other = FetchError::BadToken(BadToken::NoExp);
        assert_eq!(token_error(&other).diagnosis, None);
        let denied = FetchError::ImpersonationDenied {
            caller: "c".into(),
            target: "t@p".into(),
            delegates: vec!["d@p".into()],
            detail: "denied".into(),
        };
        let s = token_error(&denied);
        assert_eq!(s.diagnosis, Some(Diagnosis::ImpersonationDenied));
        assert!(s.fix.unwrap().contains("add-iam-policy-binding t@p"));
    }
}
