//! The API's handlers. Every failure goes through `Failure`, the one place that maps errors
//! to HTTP responses.

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use utoipa::IntoParams;
use waf_common::Mode;

use super::{model::*, Control};
use crate::{
    cli::edge::parse_ttl,
    config::parse_net,
    xdp::{clock, ops},
};

pub enum Failure {
    BadRequest(String),
    Internal(String),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Failure::BadRequest(m) => (StatusCode::BAD_REQUEST, "VALID-3002", m),
            Failure::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "SYS-5000", m),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                http_status: status.as_u16(),
                message,
            },
        };
        (status, Json(body)).into_response()
    }
}

impl From<crate::xdp::maps::MapsError> for Failure {
    fn from(e: crate::xdp::maps::MapsError) -> Failure {
        Failure::Internal(e.to_string())
    }
}

type Result<T> = std::result::Result<Json<T>, Failure>;

pub fn routes() -> Router<Control> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/status", get(status))
        .route("/v1/counters", get(counters))
        .route("/v1/bans", get(list_bans).post(add_ban).delete(remove_ban))
        .route(
            "/v1/allow",
            get(list_allow).post(add_allow).delete(remove_allow),
        )
        .route("/v1/mode", get(get_mode).put(put_mode))
        .route("/v1/panic", post(panic))
        .route("/v1/config/reload", post(reload))
        .route("/v1/events", get(events))
        .route("/v1/feeds", get(list_feeds))
        .route("/v1/feeds/refresh", post(refresh_feed))
        .route("/v1/rules", get(super::rules::list_rules))
        .route("/v1/rules/test", post(super::rules::test_rules))
        .route(
            "/v1/exceptions",
            get(super::rules::list_exceptions)
                .post(super::rules::add_exception)
                .delete(super::rules::remove_exception),
        )
}

fn top(c: &Control) -> Vec<TopSource> {
    c.top
        .lock()
        .map(|t| {
            t.iter()
                .map(|(ip, r, n)| TopSource {
                    source: ip.to_string(),
                    reason: (*r).to_owned(),
                    sampled_drops: *n,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Liveness.
#[utoipa::path(get, path = "/v1/health", tag = "status", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// Mode, interfaces, verdict counters, map fill, bans and top sources.
#[utoipa::path(get, path = "/v1/status", tag = "status", responses((status = 200, body = Status)))]
pub async fn status(State(c): State<Control>) -> Result<Status> {
    let mut status = ops::status(&crate::xdp::lock(&c.maps), top(&c))?;
    status.bans = bans_of(&c);
    Ok(Json(status))
}

/// Packets by verdict and reason, summed over CPUs.
#[utoipa::path(get, path = "/v1/counters", tag = "status", responses((status = 200, body = Vec<CounterRow>)))]
pub async fn counters(State(c): State<Control>) -> Result<Vec<CounterRow>> {
    let maps = crate::xdp::lock(&c.maps);
    Ok(Json(ops::status(&maps, Vec::new())?.counters))
}

/// Active bans at the NIC, each with every source that bans it.
#[utoipa::path(get, path = "/v1/bans", tag = "bans", responses((status = 200, body = Vec<Ban>)))]
pub async fn list_bans(State(c): State<Control>) -> Result<Vec<Ban>> {
    Ok(Json(bans_of(&c)))
}

fn source_name(s: &crate::bans::BanSource) -> String {
    match s {
        crate::bans::BanSource::Manual => "manual".to_owned(),
        crate::bans::BanSource::Playbook(p) => format!("playbook:{p}"),
        crate::bans::BanSource::Crowdsec(f) => format!("crowdsec:{f}"),
    }
}

/// Bans from the ban book, plus any written to the maps directly while the agent was down.
pub fn bans_of(c: &Control) -> Vec<Ban> {
    let book = c
        .reputation
        .lock()
        .map(|e| e.ban_status())
        .unwrap_or_default();
    let mut out: Vec<Ban> = book
        .into_iter()
        .map(|b| Ban {
            target: b.net.to_string(),
            remaining_seconds: b.remaining.as_secs(),
            sources: b
                .sources
                .iter()
                .map(|(s, d)| BanSourceTime {
                    source: source_name(s),
                    remaining_seconds: d.as_secs(),
                })
                .collect(),
        })
        .collect();
    let maps = crate::xdp::lock(&c.maps);
    for b in ops::bans(&maps, clock::monotonic_ns()) {
        if !out.iter().any(|o| o.target == b.target) {
            out.push(b);
        }
    }
    out
}

/// Bans an address or CIDR for a while; a longer existing ban is kept.
#[utoipa::path(post, path = "/v1/bans", tag = "bans", request_body = BanRequest,
    responses((status = 200, body = Ban), (status = 400, body = ErrorBody)))]
pub async fn add_ban(State(c): State<Control>, Json(req): Json<BanRequest>) -> Result<Ban> {
    let net = parse_net(&req.target).map_err(Failure::BadRequest)?;
    let ttl = parse_ttl(&req.ttl).map_err(|e| Failure::BadRequest(format!("{e:#}")))?;
    {
        let mut engine = c
            .reputation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        engine
            .ban(net, crate::bans::BanSource::Manual, ttl, "manual")
            .map_err(|e| Failure::Internal(e.to_string()))?;
    }
    c.events.emit(
        crate::events::SecurityEvent::edge_ban(&net.to_string(), "manual", None)
            .detail("ttl_seconds", ttl.as_secs()),
    );
    let ban = bans_of(&c)
        .into_iter()
        .find(|b| b.target == net.to_string());
    Ok(Json(ban.unwrap_or(Ban {
        target: net.to_string(),
        remaining_seconds: ttl.as_secs(),
        sources: Vec::new(),
    })))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TargetQuery {
    /// Address or CIDR.
    pub target: String,
}

/// Lifts a ban.
#[utoipa::path(delete, path = "/v1/bans", tag = "bans", params(TargetQuery),
    responses((status = 200, body = Target), (status = 400, body = ErrorBody)))]
pub async fn remove_ban(State(c): State<Control>, Query(q): Query<TargetQuery>) -> Result<Target> {
    let net = parse_net(&q.target).map_err(Failure::BadRequest)?;
    c.reputation
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .unban(net);
    // A ban written to the maps while the agent was down is not in the book.
    crate::xdp::lock(&c.maps).ban_clear(net)?;
    c.events.emit(crate::events::SecurityEvent::edge_unban(
        &net.to_string(),
        "manual",
    ));
    Ok(Json(Target {
        target: net.to_string(),
    }))
}

/// The allow list as the NIC holds it.
#[utoipa::path(get, path = "/v1/allow", tag = "allow", responses((status = 200, body = Vec<String>)))]
pub async fn list_allow(State(c): State<Control>) -> Result<Vec<String>> {
    let maps = crate::xdp::lock(&c.maps);
    Ok(Json(
        maps.allow_entries()
            .iter()
            .map(ToString::to_string)
            .collect(),
    ))
}

/// Allow-lists an address or CIDR at run time.
#[utoipa::path(post, path = "/v1/allow", tag = "allow", request_body = Target,
    responses((status = 200, body = Target), (status = 400, body = ErrorBody)))]
pub async fn add_allow(State(c): State<Control>, Json(t): Json<Target>) -> Result<Target> {
    let net = parse_net(&t.target).map_err(Failure::BadRequest)?;
    let mut maps = crate::xdp::lock(&c.maps);
    maps.allow_insert(net)?;
    crate::cli::edge::remember_runtime_allow(maps.pin_dir(), net, true)
        .map_err(|e| Failure::Internal(format!("{e:#}")))?;
    c.events.emit(crate::events::SecurityEvent::allow_changed(
        &net.to_string(),
        true,
        "api",
    ));
    Ok(Json(Target {
        target: net.to_string(),
    }))
}

/// Removes an address or CIDR from the allow list.
#[utoipa::path(delete, path = "/v1/allow", tag = "allow", params(TargetQuery),
    responses((status = 200, body = Target), (status = 400, body = ErrorBody)))]
pub async fn remove_allow(
    State(c): State<Control>,
    Query(q): Query<TargetQuery>,
) -> Result<Target> {
    let net = parse_net(&q.target).map_err(Failure::BadRequest)?;
    let mut maps = crate::xdp::lock(&c.maps);
    maps.allow_remove(net)?;
    crate::cli::edge::remember_runtime_allow(maps.pin_dir(), net, false)
        .map_err(|e| Failure::Internal(format!("{e:#}")))?;
    c.events.emit(crate::events::SecurityEvent::allow_changed(
        &net.to_string(),
        false,
        "api",
    ));
    Ok(Json(Target {
        target: net.to_string(),
    }))
}

/// The NIC mode and panic state.
#[utoipa::path(get, path = "/v1/mode", tag = "mode", responses((status = 200, body = ModeState)))]
pub async fn get_mode(State(c): State<Control>) -> Result<ModeState> {
    let maps = crate::xdp::lock(&c.maps);
    Ok(Json(ops::mode_state(&maps.settings()?)))
}

/// Sets monitor or enforce mode (while panic is on, the mode panic returns to).
#[utoipa::path(put, path = "/v1/mode", tag = "mode", request_body = ModeRequest,
    responses((status = 200, body = ModeState), (status = 400, body = ErrorBody)))]
pub async fn put_mode(State(c): State<Control>, Json(req): Json<ModeRequest>) -> Result<ModeState> {
    let mode = match req.mode.as_str() {
        "monitor" => Mode::Monitor,
        "enforce" => Mode::Enforce,
        other => {
            return Err(Failure::BadRequest(format!(
                "{other:?} is not one of monitor, enforce"
            )))
        }
    };
    let mut maps = crate::xdp::lock(&c.maps);
    let before = ops::mode_state(&maps.settings()?).mode;
    let after = ops::mode_state(&ops::set_mode(&mut maps, mode)?);
    c.events.emit(crate::events::SecurityEvent::mode_changed(
        "edge",
        &before,
        &after.mode,
        "api",
    ));
    Ok(Json(after))
}

/// The panic button: drop everything not allow-listed, optionally for a while.
#[utoipa::path(post, path = "/v1/panic", tag = "mode", request_body = PanicRequest,
    responses((status = 200, body = ModeState), (status = 400, body = ErrorBody)))]
pub async fn panic(State(c): State<Control>, Json(req): Json<PanicRequest>) -> Result<ModeState> {
    let ttl = req
        .ttl
        .as_deref()
        .map(parse_ttl)
        .transpose()
        .map_err(|e| Failure::BadRequest(format!("{e:#}")))?;
    let mut maps = crate::xdp::lock(&c.maps);
    let s = if req.on {
        ops::panic_on(&mut maps, ttl)?
    } else {
        ops::panic_off(&mut maps)?
    };
    c.events
        .emit(crate::events::SecurityEvent::panic_changed(req.on, "api"));
    Ok(Json(ops::mode_state(&s)))
}

/// Re-reads the configuration file and applies it as a whole, or refuses it and keeps the
/// running one.
#[utoipa::path(post, path = "/v1/config/reload", tag = "config", responses((status = 200, body = ReloadOutcome)))]
pub async fn reload(State(c): State<Control>) -> Json<ReloadOutcome> {
    let f = c.reload.clone();
    Json(
        tokio::task::spawn_blocking(move || f())
            .await
            .unwrap_or(ReloadOutcome {
                applied: false,
                problems: vec!["the reload task failed".to_owned()],
                restart_needed: Vec::new(),
            }),
    )
}

/// Security events as they happen, one JSON object per line, redacted. The stream stays
/// open until the client goes away; a reader that falls behind skips events.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    responses((status = 200, description = "newline-delimited JSON security events", content_type = "application/x-ndjson")))]
pub async fn events(State(c): State<Control>) -> Response {
    let rx = c.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let mut line = ev.to_json();
                    line.push(b'\n');
                    return Some((Ok::<_, std::convert::Infallible>(line), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Reputation feeds with their health: entries, age, failures, staleness.
#[utoipa::path(get, path = "/v1/feeds", tag = "feeds", responses((status = 200, body = Vec<Feed>)))]
pub async fn list_feeds(State(c): State<Control>) -> Result<Vec<Feed>> {
    let status = c.reputation.lock().map(|e| e.status()).unwrap_or_default();
    let now = std::time::SystemTime::now();
    Ok(Json(
        status
            .into_iter()
            .map(|f| Feed {
                age_seconds: f.staleness(now).map(|d| d.as_secs()),
                name: f.name,
                format: f.format,
                score: f.score,
                enforced: f.enforced,
                entries: f.entries,
                stale: f.stale,
                last_error: f.last_error,
                failures_total: f.failures_total,
                bad_lines: f.bad_lines,
                suppressed_by_allow: f.suppressed_by_allow,
                refresh_interval_seconds: f.refresh_interval.as_secs(),
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct FeedQuery {
    /// The feed's name.
    pub name: String,
}

/// Fetches a feed now instead of waiting for its interval.
#[utoipa::path(post, path = "/v1/feeds/refresh", tag = "feeds", params(FeedQuery),
    responses((status = 200, body = RefreshResult), (status = 400, body = ErrorBody)))]
pub async fn refresh_feed(
    State(c): State<Control>,
    Query(q): Query<FeedQuery>,
) -> Result<RefreshResult> {
    match c.feeds.refresh_now(&q.name).await {
        Ok(outcome) => Ok(Json(RefreshResult {
            feed: q.name,
            outcome: format!("{outcome:?}"),
        })),
        Err(e) => Err(Failure::BadRequest(e.to_string())),
    }
}
