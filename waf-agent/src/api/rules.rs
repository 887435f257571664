//! Rules and exceptions through the API: list the rules, test a raw request against them,
//! and add or remove time-boxed exceptions, which the running proxy consults at once and
//! the agent keeps in `state_dir/exceptions.json` across restarts.

use std::path::{Path, PathBuf};

use axum::{
    body::Bytes,
    extract::{Query, State},
    Json,
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{handlers::Failure, model::*, Control};
use crate::inspect::{
    engine::Engine,
    exceptions::{Exception, RuntimeExceptions},
    parse_raw_request,
};

type Result<T> = std::result::Result<Json<T>, Failure>;

fn engine(c: &Control) -> std::result::Result<Engine, Failure> {
    let config = c
        .config
        .read()
        .map_err(|_| Failure::Internal("configuration lock".into()))?
        .clone();
    Engine::from_config(&config)
        .map(|e| e.with_runtime_exceptions(c.exceptions.clone()))
        .map_err(|e| Failure::Internal(e.to_string()))
}

/// The loaded L7 rules.
#[utoipa::path(get, path = "/v1/rules", tag = "rules", responses((status = 200, body = Vec<RuleInfo>)))]
pub async fn list_rules(State(c): State<Control>) -> Result<Vec<RuleInfo>> {
    let engine = engine(&c)?;
    let mut out: Vec<RuleInfo> = engine
        .rules()
        .iter()
        .map(|r| RuleInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            category: r.category.name().to_owned(),
            score: r.score,
            action: r.action.map(|a| a.name().to_owned()),
            paranoia_level: r.paranoia_level,
        })
        .collect();
    // The libinjection detectors are built in, not rule files; they can be excepted too.
    for (id, name, category) in [
        (
            crate::inspect::detect::SQLI_ID,
            "SQL injection (libinjection)",
            "sql_injection",
        ),
        (
            crate::inspect::detect::XSS_ID,
            "Cross-site scripting (libinjection)",
            "xss",
        ),
    ] {
        out.push(RuleInfo {
            id: id.to_owned(),
            name: name.to_owned(),
            category: category.to_owned(),
            score: None,
            action: None,
            paranoia_level: 1,
        });
    }
    Ok(Json(out))
}

/// Runs a raw HTTP request (the body of this call) through the rules; nothing is forwarded.
#[utoipa::path(post, path = "/v1/rules/test", tag = "rules", request_body(content = String, content_type = "text/plain"),
    responses((status = 200, body = RuleTestResult), (status = 400, body = ErrorBody)))]
pub async fn test_rules(State(c): State<Control>, body: Bytes) -> Result<RuleTestResult> {
    let engine = engine(&c)?;
    let request = parse_raw_request(&body)
        .map_err(|e| Failure::BadRequest(format!("not an HTTP request: {e}")))?;
    let i = engine.inspect(&request);
    Ok(Json(RuleTestResult {
        verdict: format!("{:?}", i.verdict).to_lowercase(),
        score: i.score,
        threshold: engine.threshold(),
        matches: i
            .matches
            .iter()
            .map(|m| RuleMatch {
                rule_id: m.rule_id.clone(),
                rule_name: m.rule_name.clone(),
                category: m.category.name().to_owned(),
                score: m.score,
                name: m.name.clone(),
                excerpt: m.excerpt.clone(),
            })
            .collect(),
        excepted: i.excepted,
    }))
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn body_of(id: &str, e: &Exception) -> ExceptionBody {
    ExceptionBody {
        id: Some(id.to_owned()),
        rule_id: e.rule_id.clone(),
        path: e.path.clone(),
        parameter: e.parameter.clone(),
        source: e.source.map(|s| s.to_string()),
        expires: rfc3339(e.expires),
        reason: e.reason.clone(),
    }
}

/// Exceptions in force: those from rule files and those added at run time.
#[utoipa::path(get, path = "/v1/exceptions", tag = "exceptions", responses((status = 200, body = Vec<ExceptionBody>)))]
pub async fn list_exceptions(State(c): State<Control>) -> Result<Vec<ExceptionBody>> {
    let mut out: Vec<ExceptionBody> = engine(&c)?
        .file_exceptions()
        .iter()
        .map(|e| body_of("file", e))
        .collect();
    let runtime = c
        .exceptions
        .read()
        .map_err(|_| Failure::Internal("exceptions lock".into()))?;
    out.extend(runtime.iter().map(|(id, e)| body_of(id, e)));
    Ok(Json(out))
}

/// Adds a time-boxed exception; it applies to the next request.
#[utoipa::path(post, path = "/v1/exceptions", tag = "exceptions", request_body = ExceptionBody,
    responses((status = 200, body = ExceptionBody), (status = 400, body = ErrorBody)))]
pub async fn add_exception(
    State(c): State<Control>,
    Json(b): Json<ExceptionBody>,
) -> Result<ExceptionBody> {
    let e = Exception::new(
        &b.rule_id,
        b.path,
        b.parameter,
        b.source.as_deref(),
        &b.expires,
        b.reason,
    )
    .map_err(Failure::BadRequest)?;
    let id = format!("exc-{}", uuid::Uuid::now_v7().simple());
    let out = body_of(&id, &e);
    {
        let mut list = c
            .exceptions
            .write()
            .map_err(|_| Failure::Internal("exceptions lock".into()))?;
        list.push((id, e));
    }
    persist(&c.exceptions, &c.state_dir)
        .map_err(|e| Failure::Internal(format!("saving exceptions: {e}")))?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct IdQuery {
    /// The exception's id, as listed.
    pub id: String,
}

/// Removes a run-time exception.
#[utoipa::path(delete, path = "/v1/exceptions", tag = "exceptions", params(IdQuery),
    responses((status = 200, body = Target), (status = 400, body = ErrorBody)))]
pub async fn remove_exception(
    State(c): State<Control>,
    Query(q): Query<IdQuery>,
) -> Result<Target> {
    let removed = {
        let mut list = c
            .exceptions
            .write()
            .map_err(|_| Failure::Internal("exceptions lock".into()))?;
        let before = list.len();
        list.retain(|(id, _)| *id != q.id);
        before != list.len()
    };
    if !removed {
        return Err(Failure::BadRequest(format!(
            "no run-time exception {:?}",
            q.id
        )));
    }
    persist(&c.exceptions, &c.state_dir)
        .map_err(|e| Failure::Internal(format!("saving exceptions: {e}")))?;
    Ok(Json(Target { target: q.id }))
}

fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("exceptions.json")
}

/// Writes the run-time exceptions, atomically (temporary file, then rename).
pub fn persist(list: &RuntimeExceptions, state_dir: &Path) -> std::io::Result<()> {
    let bodies: Vec<ExceptionBody> = list
        .read()
        .map_err(|_| std::io::Error::other("exceptions lock"))?
        .iter()
        .map(|(id, e)| body_of(id, e))
        .collect();
    let text = serde_json::to_vec_pretty(&bodies).map_err(std::io::Error::other)?;
    let tmp = file(state_dir).with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, file(state_dir))
}

/// Reads the run-time exceptions kept by an earlier run; expired and unreadable ones are
/// dropped (the latter with a warning).
pub fn restore(state_dir: &Path) -> RuntimeExceptions {
    let list: RuntimeExceptions = Default::default();
    let Ok(text) = std::fs::read(file(state_dir)) else {
        return list;
    };
    let bodies: Vec<ExceptionBody> = match serde_json::from_slice(&text) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an unreadable exceptions file");
            return list;
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Ok(mut l) = list.write() {
        for b in bodies {
            match Exception::new(
                &b.rule_id,
                b.path,
                b.parameter,
                b.source.as_deref(),
                &b.expires,
                b.reason,
            ) {
                Ok(e) if e.expires > now => l.push((b.id.unwrap_or_default(), e)),
                Ok(_) => {}
                Err(reason) => tracing::warn!(%reason, "ignoring a stored exception"),
            }
        }
    }
    list
}
