//! Live order streams (SSE), read as a client reads them, against the real pipeline.

mod limits;
mod streams;

use std::{pin::Pin, time::Duration};

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;

/// How long a test waits for an event it expects.
const EXPECTED_WITHIN: Duration = Duration::from_secs(15);

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// An open stream.
pub struct LiveStream {
    events: Events,
    /// Where the stream said it starts (its `ready` event's id).
    pub start: i64,
}

/// One update, as its `data:` says.
#[derive(Debug, Clone)]
pub struct Update {
    pub id: i64,
    pub kind: String,
    pub data: Value,
}

impl Update {
    pub fn status(&self) -> &str {
        self.data["status"].as_str().unwrap_or_default()
    }

    pub fn order_id(&self) -> &str {
        self.data["order_id"].as_str().unwrap_or_default()
    }
}

impl LiveStream {
    /// Opens `path` (with the bearer `token`, resuming after `last_event_id`), asserting 200.
    pub async fn open(app: &TestApp, path: &str, token: &str, last_event_id: Option<i64>) -> Self {
        Self::open_at(&app.client, &app.address, path, token, last_event_id).await
    }

    /// The same on the api at `base` (another process).
    pub async fn open_at(
        client: &reqwest::Client,
        base: &str,
        path: &str,
        token: &str,
        last_event_id: Option<i64>,
    ) -> Self {
        let mut request = client.get(format!("{base}{path}")).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        Self::from_response(request.send().await.expect("stream opens")).await
    }

    pub async fn from_response(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an event stream"
        );
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let mut events: Events = Box::pin(
            response
                .bytes_stream()
                .eventsource()
                .map(|event| event.map_err(|error| error.to_string())),
        );
        let ready = tokio::time::timeout(EXPECTED_WITHIN, events.next())
            .await
            .expect("a ready event")
            .expect("stream open")
            .expect("readable");
        assert_eq!(ready.event, "ready");
        let start = ready.id.parse().expect("ready carries the resume point");
        Self { events, start }
    }

    /// The next update; panics if none comes within `EXPECTED_WITHIN`.
    pub async fn next(&mut self) -> Update {
        self.next_within(EXPECTED_WITHIN)
            .await
            .expect("an update arrives")
    }

    /// The next update within `limit`, or `None`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Update> {
        let event = tokio::time::timeout(limit, self.events.next()).await.ok()?;
        let event = event.expect("the stream is still open").expect("readable");
        Some(Update {
            id: event.id.parse().expect("numbered"),
            kind: event.event,
            data: serde_json::from_str(&event.data).expect("json data"),
        })
    }

    /// The next event's name (`event:`), whatever it is.
    pub async fn next_name(&mut self) -> String {
        tokio::time::timeout(EXPECTED_WITHIN, self.events.next())
            .await
            .expect("an event arrives")
            .expect("the stream is still open")
            .expect("readable")
            .event
    }

    /// Whether the server ended the stream within `limit`.
    pub async fn ends_within(&mut self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.events.next()).await,
            Ok(None | Some(Err(_)))
        )
    }
}
