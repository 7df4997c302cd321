//! `iap-proxy check`: runs one route once, as the proxy would, and explains each of the usual
//! mistakes with its fix. Steps, in the order shown:
//! credentials → upstream TLS → IAP (does it answer like IAP, with which client ID) → token
//! (its claims against IAP's client ID) → request (one authenticated GET).
//!
//! The upstream is asked first (without credentials) because with `--audience auto` its
//! answer is the audience the credentials need. The token itself is never shown: only its
//! claims, and every text is scrubbed of it before the report is returned.

mod diagnose;
mod probe;
mod report;
mod request;

use std::time::{SystemTime, UNIX_EPOCH};

pub use report::{CheckReport, Diagnosis, Outcome, REQUEST, Step};

use crate::auth::{self, TokenHttp};
use crate::config::{Env, ProcessSettings, RouteSettings, TokenKind};
use crate::iap::Discovered;
use crate::outbound::clients::Clients;
use crate::outbound::egress::Egress;
use crate::outbound::tls;

/// Checks one route, under the process's route. Never fails itself: every problem is a step.
pub async fn check(route: &RouteSettings, process: &ProcessSettings, env: &Env) -> CheckReport {
    let mut report = CheckReport {
        route: route.name.clone(),
        upstream: route.upstream.to_string(),
        steps: Vec::new(),
    };
    let tls = match tls::client_config(process.upstream_ca.as_deref()) {
        Ok(tls) => tls,
        Err(err) => {
            report
                .steps
                .push(Step::fail("upstream TLS", err.to_string()));
            return report;
        }
    };
    let egress = match Egress::from_env(env) {
        Ok(e) => e,
        Err(err) => {
            report.steps.push(Step::fail("egress", err.to_string()));
            return report;
        }
    };
    let clients = Clients::with_egress(tls.clone(), &egress);

    let reach = probe::get(&clients.main, &route.upstream, None, route.upstream_timeout).await;
    let (upstream_steps, found) = diagnose::upstream_probe(&reach, &route.upstream);
    let reachable = matches!(reach, probe::Reach::Answer(_));
    let iap_audience = match &found {
        Some(Discovered::IapClientId(id)) => Some(id.as_str()),
        _ => None,
    };
    let audience = match route.explicit_audience() {
        Some(a) => Some(a.to_owned()),
        None => found.as_ref().map(|f| f.audience().to_owned()),
    };

    let Some(audience) = audience else {
        report.steps.extend(upstream_steps);
        report.steps.push(
            Step::fail(
                "audience",
                "--audience is auto, but the upstream did not reveal IAP's OAuth client ID",
            )
            .fix("pass --audience IAP_CLIENT_ID (Security > Identity-Aware Proxy > the resource's menu > OAuth client in the console)"),
        );
        return report;
    };
    let options = auth::SourceOptions {
        credentials: route.credentials.as_deref(),
        credentials_from: &route.credentials_from,
        metadata_wait: process.metadata_wait,
        audience: &audience,
        impersonate: &route.impersonate_service_account,
        iam_endpoint: &route.iam_endpoint,
        token_kind: route.token_kind,
        upstream: Some(&route.upstream),
    };
    let http = TokenHttp::with_egress(tls, &egress);
    let chosen = match auth::choose_source(&options, env, http).await {
        Ok(chosen) => chosen,
        Err(err) => {
            report.steps.push(diagnose::credentials_error(&err));
            report.steps.extend(upstream_steps);
            return report;
        }
    };
    report.steps.push(Step::ok(
        "credentials",
        format!(
            "{}, found via {}",
            chosen.source.describe(),
            chosen.found_by
        ),
    ));
    report.steps.extend(upstream_steps);

    let token = match chosen.source.fetch().await {
        Ok(token) => token,
        Err(err) => {
            report.steps.push(diagnose::token_error(&err));
            return report;
        }
    };
    let claims = token.claims();
    let user_login = route.impersonate_service_account.is_empty()
        && chosen.file.as_deref().is_some_and(is_user_file);
    let self_signed = route.token_kind == TokenKind::SelfSignedJwt;
    report.steps.push(diagnose::token_claims(
        claims,
        iap_audience,
        self_signed,
        user_login,
        now_secs(),
    ));

    if reachable {
        let reach = probe::get(
            &clients.main,
            &route.upstream,
            Some((route.header, token.bearer())),
            route.upstream_timeout,
        )
        .await;
        let sent = request::Sent {
            claims,
            iap_audience: if self_signed { None } else { iap_audience },
            user_login,
            header: route.header,
        };
        report
            .steps
            .push(request::request(&reach, &route.upstream, &sent));
    }
    redact(&mut report, token.expose());
    report
}

/// An `authorized_user` file: its ID tokens are the user's, for gcloud's own OAuth client.
fn is_user_file(path: &std::path::Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["type"] == "authorized_user")
}

/// Belt and braces: no text built from an upstream's or a tool's answer may carry the token.
fn redact(report: &mut CheckReport, token: &str) {
    if token.len() < 16 {
        return;
    }
    for step in &mut report.steps {
        step.detail = step.detail.replace(token, "<token>");
        if let Some(fix) = &mut step.fix {
            *fix = fix.replace(token, "<token>");
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
