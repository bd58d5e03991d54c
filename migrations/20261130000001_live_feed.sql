-- The live order feed: one row per applied transition and per stall flagged or cleared,
-- numbered in commit order (rows are numbered under a transaction-scoped advisory lock
-- taken just before commit), so a reader that sees row N sees every row before it.
-- Live streams replay it after a reconnect and fill gaps in what the broker brought.
CREATE SEQUENCE order_feed_id_seq AS bigint;

CREATE TABLE order_feed (
    id bigint NOT NULL,
    order_id uuid NOT NULL,
    customer_id uuid NOT NULL,
    kind text NOT NULL,
    from_status order_status,
    status order_status NOT NULL,
    tracking_number text,
    actor_role text NOT NULL,
    reason text,
    created_at timestamptz NOT NULL,
    CONSTRAINT order_feed_pkey PRIMARY KEY (id),
    CONSTRAINT order_feed_order_fkey FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE,
    CONSTRAINT order_feed_kind_known CHECK (kind IN ('status_changed', 'stalled', 'resumed'))
);
CREATE INDEX order_feed_customer_idx ON order_feed (customer_id, id);
CREATE INDEX order_feed_order_idx ON order_feed (order_id, id);
CREATE INDEX order_feed_created_idx ON order_feed (created_at);

-- Single-use, short-lived tickets that let a browser's EventSource (which cannot send
-- headers) open a stream. Only a hash is stored.
CREATE TABLE stream_tickets (
    ticket_hash bytea NOT NULL,
    user_id uuid NOT NULL,
    -- The user's token version when issued: signing out everywhere voids it too.
    token_version integer NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT stream_tickets_pkey PRIMARY KEY (ticket_hash),
    CONSTRAINT stream_tickets_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX stream_tickets_user_idx ON stream_tickets (user_id, expires_at);
CREATE INDEX stream_tickets_expiry_idx ON stream_tickets (expires_at);
