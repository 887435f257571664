//! The OpenAPI document, generated from the handlers, and the pages that render it:
//! Swagger UI at `/docs` and ReDoc at `/redoc`. Both pages load their renderer from a CDN;
//! `/openapi.json` itself needs nothing outside the agent.

use axum::{response::Html, routing::get, Json, Router};
use utoipa::OpenApi;

use super::{handlers, model, Control};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "waf-agent admin API",
        description = "Steer the edge security agent: status, bans, allow list, mode and the panic button, configuration reload."
    ),
    paths(
        handlers::health,
        handlers::status,
        handlers::counters,
        handlers::list_bans,
        handlers::add_ban,
        handlers::remove_ban,
        handlers::list_allow,
        handlers::add_allow,
        handlers::remove_allow,
        handlers::get_mode,
        handlers::put_mode,
        handlers::panic,
        handlers::reload,
        handlers::events,
        handlers::list_feeds,
        handlers::refresh_feed,
        super::rules::list_rules,
        super::rules::test_rules,
        super::rules::list_exceptions,
        super::rules::add_exception,
        super::rules::remove_exception,
    ),
    components(schemas(
        model::Health,
        model::Status,
        model::CounterRow,
        model::MapFill,
        model::Ban,
        model::TopSource,
        model::BanRequest,
        model::Target,
        model::ModeRequest,
        model::PanicRequest,
        model::ModeState,
        model::ReloadOutcome,
        model::ErrorBody,
        model::ErrorDetail,
        model::BanSourceTime,
        model::Feed,
        model::RefreshResult,
    ))
)]
pub struct ApiDoc;

/// The document as pretty JSON, exactly as written to `docs/_generated/openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
        + "\n"
}

pub fn routes() -> Router<Control> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/docs", get(|| async { Html(SWAGGER) }))
        .route("/redoc", get(|| async { Html(REDOC) }))
}

const SWAGGER: &str = r##"<!doctype html>
<html><head><meta charset="utf-8"><title>waf-agent API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({ url: "/openapi.json", dom_id: "#ui" });</script>
</body></html>
"##;

const REDOC: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>waf-agent API</title></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js"></script>
</body></html>
"#;
