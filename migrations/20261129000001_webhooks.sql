-- Webhook endpoints that admins register, and every delivery to them with its attempts.

CREATE TABLE webhook_endpoints (
    id              uuid        NOT NULL,
    url             text        NOT NULL,
    description     text        NOT NULL DEFAULT '',
    -- The event types it receives; empty means every type.
    event_types     text[]      NOT NULL DEFAULT '{}',
    enabled         boolean     NOT NULL DEFAULT true,
    -- Why it was switched off by the system (410 Gone, failing too long); NULL otherwise.
    disabled_reason text,
    -- `whsec_…`: needed in the clear to sign, so it is shown once and never returned again.
    secret          text        NOT NULL,
    -- The secret before the last rotation, still signed with until it expires.
    previous_secret text,
    previous_secret_expires_at timestamptz,
    -- When the current unbroken run of failures began; NULL after any success.
    failing_since   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_endpoints_url_check CHECK (length(url) <= 2048)
);

-- One row per event per endpoint, named by the two: the exact body signed (so every
-- attempt sends the same bytes), its state, and when it is next due. Written by the worker
-- that takes the event off the webhook queue; sent by any worker's dispatcher.
CREATE TABLE webhook_deliveries (
    endpoint_id     uuid        NOT NULL,
    -- The event's id: the `webhook-id` header, stable across retries and re-sends.
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    order_id        uuid        NOT NULL,
    body            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',
    -- Attempts in the current schedule (a re-send starts a new one).
    attempts        integer     NOT NULL DEFAULT 0,
    -- When a dispatcher may take it next: due, backed off, or another's claim lapsing.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (endpoint_id, event_id),
    CONSTRAINT webhook_deliveries_endpoint_fkey FOREIGN KEY (endpoint_id)
        REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    CONSTRAINT webhook_deliveries_status_check CHECK (status IN ('pending', 'succeeded', 'failed'))
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log_idx ON webhook_deliveries (endpoint_id, created_at DESC);
CREATE INDEX webhook_deliveries_created_idx ON webhook_deliveries (created_at);

-- Every HTTP attempt, for the delivery log.
CREATE TABLE webhook_attempts (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    endpoint_id     uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    -- NULL when no response came (refused address, connection error, timeout).
    response_status integer,
    latency_ms      integer     NOT NULL,
    -- The first bytes of the response body, or what went wrong.
    response_excerpt text       NOT NULL DEFAULT '',
    error           text,
    CONSTRAINT webhook_attempts_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_attempts_delivery_fkey FOREIGN KEY (endpoint_id, event_id)
        REFERENCES webhook_deliveries (endpoint_id, event_id) ON DELETE CASCADE
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (endpoint_id, event_id, id);
