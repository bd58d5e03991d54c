//! A local HTTP receiver for webhook tests: records every request and answers as scripted
//! (statuses in turn, a delay, a `Location`), counting the requests it is answering at once.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::mail::free_port;

/// One request the receiver took.
#[derive(Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers[name].to_str().expect("ascii")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Script {
    /// Statuses to answer with, in order; then 200.
    answers: VecDeque<u16>,
    /// Time taken over each request before answering.
    delay: Duration,
    /// Sent as `Location` with every answer.
    location: Option<String>,
    received: Vec<Received>,
    /// Requests being answered now, and the most at once since `reset_most_in_flight`.
    in_flight: usize,
    most_in_flight: usize,
}

/// Counts a request as in flight until its handler ends (or is dropped: a client that
/// times out takes the handler's future with it).
struct InFlight(Arc<Mutex<Script>>);

impl InFlight {
    fn start(script: &Arc<Mutex<Script>>) -> Self {
        let mut locked = script.lock().expect("script");
        locked.in_flight += 1;
        locked.most_in_flight = locked.most_in_flight.max(locked.in_flight);
        Self(script.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().expect("script").in_flight -= 1;
    }
}

/// A local HTTP receiver that records every request and answers as scripted.
pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<Script>>,
    stop: CancellationToken,
}

impl Receiver {
    pub async fn start(answers: &[u16]) -> Self {
        Self::start_on(free_port(), answers).await
    }

    pub async fn start_on(port: u16, answers: &[u16]) -> Self {
        let script = Arc::new(Mutex::new(Script {
            answers: answers.iter().copied().collect(),
            ..Script::default()
        }));
        let app = Router::new()
            .route("/hook", post(take))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            script,
            stop,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().expect("script").received.clone()
    }

    pub fn answer_from_now_on(&self, answers: &[u16]) {
        self.script.lock().expect("script").answers = answers.iter().copied().collect();
    }

    pub fn take_time(&self, delay: Duration) {
        self.script.lock().expect("script").delay = delay;
    }

    pub fn reset_most_in_flight(&self) {
        let mut script = self.script.lock().expect("script");
        script.most_in_flight = script.in_flight;
    }

    pub fn most_in_flight(&self) -> usize {
        self.script.lock().expect("script").most_in_flight
    }

    pub fn redirect_to(&self, location: &str) {
        self.script.lock().expect("script").location = Some(location.to_owned());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn take(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (AxumStatus, HeaderMap, &'static str) {
    let _in_flight = InFlight::start(&script);
    let (status, delay, location) = {
        let mut script = script.lock().expect("script");
        script.received.push(Received { headers, body });
        let status = script.answers.pop_front().unwrap_or(200);
        (status, script.delay, script.location.clone())
    };
    tokio::time::sleep(delay).await;
    let mut answer = HeaderMap::new();
    if let Some(location) = location {
        answer.insert("location", location.parse().expect("a header value"));
    }
    let status = AxumStatus::from_u16(status).expect("status");
    (status, answer, "receiver says hi")
}
