//! The HTTP API of the contract (`/v1/...`, `/health`, `/metrics`): a module per route group,
//! bearer-token auth, one error table, request metrics and a tracing span per request.

pub mod accounts;
pub mod days;
pub mod error;
pub mod json;
pub mod ops;
pub mod transfers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use cluster::Shards;
use ledger::Currency;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::Instrument;

use crate::config::Config;
use crate::limits::{BODY_BYTES_MAX, REQUEST_TIMEOUT};
use crate::telemetry;
use error::ApiError;

pub struct AppState {
    pub shards: Arc<Shards>,
    /// The account actors: the door for single transfers.
    pub accounts: actors::Accounts,
    pub config: Arc<Config>,
    pub currency: Currency,
    pub prometheus: PrometheusHandle,
    pub request_seq: AtomicU64,
    /// Requests in service; past `HTTP_CONCURRENCY_MAX` the node answers 429 `overloaded`.
    pub inflight: tokio::sync::Semaphore,
}

pub type App = Arc<AppState>;

pub fn router(state: App) -> Router {
    let v1 = Router::new()
        .route("/v1/accounts", post(accounts::create).get(accounts::list))
        .route("/v1/accounts/batch", post(accounts::create_many))
        .route("/v1/accounts/{id}", get(accounts::get))
        .route("/v1/accounts/{id}/statement", get(accounts::statement))
        .route("/v1/ledger/summary", get(accounts::summary))
        .route("/v1/transfers", post(transfers::create))
        .route("/v1/transfers/batch", post(transfers::batch))
        .route("/v1/transfers/{id}", get(transfers::get))
        .route("/v1/transfers/{id}/post", post(transfers::post))
        .route("/v1/transfers/{id}/void", post(transfers::void))
        .route("/v1/transfers/{id}/reverse", post(transfers::reverse))
        .route("/v1/cluster", get(ops::cluster))
        .route("/v1/admin/log", get(ops::log))
        .route("/v1/admin/replica", get(ops::replica))
        .route(
            "/v1/admin/tariff",
            put(ops::set_tariff).get(ops::get_tariff),
        )
        .route(
            "/v1/admin/accounts/{id}/status",
            put(ops::set_account_status),
        )
        .route("/v1/admin/schedule", put(days::set_schedule))
        .route("/v1/admin/days", get(days::days))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    #[cfg(feature = "chaos")]
    let v1 = v1.merge(
        Router::new()
            .route("/v1/admin/failpoints/{name}", put(ops::set_fail_point))
            .route("/v1/admin/chaos/peers/{id}", put(ops::set_peer_fault))
            .route(
                "/v1/admin/chaos",
                get(ops::peer_faults).delete(ops::heal_peer_faults),
            )
            .route_layer(middleware::from_fn_with_state(state.clone(), authorize)),
    );
    Router::new()
        .merge(v1)
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new("method_not_allowed", "this route does not take that method")
}

/// Bearer-token check for every `/v1/` route; compared in constant time.
async fn authorize(State(app): State<App>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let valid = presented
        .is_some_and(|token| constant_time_eq(token.as_bytes(), app.config.token.as_bytes()));
    if !valid {
        return ApiError::new(
            "unauthorized",
            "a valid Authorization: Bearer token is required",
        )
        .into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A span, a deadline, a request counter and a latency histogram for every request.
async fn observe(State(app): State<App>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().to_string();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || {
                format!(
                    "{}-{}",
                    app.config.node_id,
                    app.request_seq.fetch_add(1, Ordering::Relaxed)
                )
            },
            String::from,
        );
    let span = tracing::info_span!("request", %request_id, %route, %method);
    let started = Instant::now();
    let Ok(_permit) = app.inflight.try_acquire() else {
        let response = ApiError::new("overloaded", "too many requests in service; retry later")
            .into_response();
        telemetry::record_request(
            &route,
            &method,
            response.status().as_u16(),
            started.elapsed(),
        );
        return response;
    };
    let response =
        match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request).instrument(span)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                "unavailable",
                "the request timed out; the outcome of a write is unknown: retry with the same id",
            )
            .into_response(),
        };
    telemetry::record_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
