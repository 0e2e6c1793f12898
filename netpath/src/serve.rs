//! The agent's HTTP endpoint: `/metrics` (Prometheus text), `/healthz` and `/readyz`
//! (JSON; 200 when ok, 503 when not). Anything else is a 404 or 405; what is not
//! HTTP at all gets hyper's 400 and the connection closes.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response,
    StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::{health, metrics::AgentMetrics, netlink::Netlink, state::AgentState};

/// A client that sends no complete request head within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers read: the agent's latest state (which names the pin directory)
/// and its counters.
pub struct Shared {
    state: Mutex<Option<AgentState>>,
    pub metrics: AgentMetrics,
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(None),
            metrics: AgentMetrics::default(),
        })
    }

    pub fn set_state(&self, s: &AgentState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
    }

    fn state(&self) -> Option<AgentState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--metrics-addr {0}: cannot listen there ({1}); is another agent using it? Pick another address or `off`")]
    Bind(SocketAddr, std::io::Error),
}

/// Binds first (a taken port is a start-up error, before anything is loaded), then
/// serves on the current runtime until the process ends.
pub async fn start(addr: SocketAddr, shared: Arc<Shared>) -> Result<SocketAddr, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Bind(addr, e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(addr, e))?;
    let nl = Netlink::new().ok();
    tokio::spawn(accept_loop(listener, shared, nl));
    Ok(bound)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, nl: Option<Netlink>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, typically: wait rather than spin.
                tracing::warn!("metrics endpoint: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (shared, nl) = (shared.clone(), nl.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(shared.clone(), nl.clone(), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("metrics endpoint: connection: {e}");
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    nl: Option<Netlink>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ));
    }
    let state = shared.state();
    Ok(match req.uri().path() {
        "/metrics" => {
            let dir = state
                .as_ref()
                .map(|s| s.pin_dir.clone())
                .unwrap_or_default();
            let m = shared.metrics.clone();
            let now = crate::state::unix_ms();
            // Reading a large map is thousands of syscalls: off the runtime's threads.
            let page = tokio::task::spawn_blocking(move || {
                crate::metrics::render(&dir, &state.unwrap_or_default(), &m, now)
            })
            .await;
            match page {
                Ok(Ok(text)) => reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Ok(Err(e)) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e:#}\n"),
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        "/readyz" => json(&health::readiness(state.as_ref())),
        "/healthz" => match &nl {
            Some(nl) => json(&health::health(nl, state.as_ref(), true).await),
            None => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "no netlink socket to check attachments\n".into(),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    })
}

fn json(r: &health::Report) -> Response<Full<Bytes>> {
    let status = if r.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string_pretty(r).unwrap_or_default() + "\n";
    reply(status, "application/json", body)
}

fn reply(status: StatusCode, kind: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(kind) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}
