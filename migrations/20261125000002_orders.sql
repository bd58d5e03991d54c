-- Catalogue, orders, their timeline, notifications, and the messaging tables
-- (outbox for publishing, processed_messages for exactly-once consumption).
CREATE TYPE order_status AS ENUM
    ('pending', 'confirmed', 'processing', 'shipped', 'delivered', 'cancelled', 'refunded');

CREATE TABLE products (
    id              uuid        NOT NULL,
    sku             text        NOT NULL,
    name            text        NOT NULL,
    description     text,
    price_minor     bigint      NOT NULL,
    currency        char(3)     NOT NULL DEFAULT 'USD',
    -- stock counts units available to sell; reserved counts units held for confirmed or
    -- processing orders (taken out of stock, not yet shipped).
    stock           integer     NOT NULL DEFAULT 0,
    reserved        integer     NOT NULL DEFAULT 0,
    is_active       boolean     NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT products_pkey PRIMARY KEY (id),
    CONSTRAINT products_price_not_negative CHECK (price_minor >= 0),
    CONSTRAINT products_stock_not_negative CHECK (stock >= 0),
    CONSTRAINT products_reserved_not_negative CHECK (reserved >= 0)
);
CREATE UNIQUE INDEX products_sku_key ON products (lower(sku));
CREATE INDEX products_name_idx ON products (lower(name));

CREATE TABLE orders (
    id                  uuid         NOT NULL,
    customer_id         uuid         NOT NULL,
    status              order_status NOT NULL DEFAULT 'pending',
    -- The status once every accepted command is applied; checked by the API.
    projected_status    order_status NOT NULL DEFAULT 'pending',
    -- Last command sequence number handed out, and the last one a worker applied.
    last_seq            bigint       NOT NULL DEFAULT 1,
    applied_seq         bigint       NOT NULL DEFAULT 0,
    currency            char(3)      NOT NULL,
    total_amount_minor  bigint       NOT NULL,
    items_count         integer      NOT NULL,
    customer_name       text         NOT NULL,
    customer_email      text         NOT NULL,
    customer_phone      text,
    shipping_address    text         NOT NULL,
    notes               text,
    tracking_number     text,
    created_at          timestamptz  NOT NULL DEFAULT now(),
    updated_at          timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT orders_pkey PRIMARY KEY (id),
    CONSTRAINT orders_customer_fkey FOREIGN KEY (customer_id) REFERENCES users (id),
    CONSTRAINT orders_total_not_negative CHECK (total_amount_minor >= 0),
    CONSTRAINT orders_applied_seq_within_last CHECK (applied_seq <= last_seq)
);
CREATE INDEX orders_customer_idx ON orders (customer_id, created_at DESC);
CREATE INDEX orders_status_idx ON orders (status, created_at DESC);
CREATE INDEX orders_created_idx ON orders (created_at DESC);

CREATE TABLE order_items (
    id                  uuid    NOT NULL,
    order_id            uuid    NOT NULL,
    product_id          uuid    NOT NULL,
    product_name        text    NOT NULL,
    product_sku         text    NOT NULL,
    product_description text,
    quantity            integer NOT NULL,
    unit_price_minor    bigint  NOT NULL,
    total_price_minor   bigint  NOT NULL,
    CONSTRAINT order_items_pkey PRIMARY KEY (id),
    CONSTRAINT order_items_order_fkey FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE,
    CONSTRAINT order_items_product_fkey FOREIGN KEY (product_id) REFERENCES products (id),
    CONSTRAINT order_items_quantity_positive CHECK (quantity > 0),
    CONSTRAINT order_items_one_line_per_product UNIQUE (order_id, product_id)
);

-- The timeline: every request, transition, refusal and notification of an order.
CREATE TABLE order_events (
    id              uuid        NOT NULL,
    order_id        uuid        NOT NULL,
    kind            text        NOT NULL,
    from_status     order_status,
    to_status       order_status,
    actor_id        uuid,
    actor_role      text        NOT NULL,
    reason          text,
    seq             bigint,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT order_events_pkey PRIMARY KEY (id),
    CONSTRAINT order_events_order_fkey FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE,
    CONSTRAINT order_events_kind_known CHECK (kind IN
        ('created', 'status_change_requested', 'cancel_requested', 'status_changed', 'rejected', 'notified'))
);
CREATE INDEX order_events_order_idx ON order_events (order_id, created_at, id);

CREATE TABLE notifications (
    id              uuid        NOT NULL,
    user_id         uuid        NOT NULL,
    order_id        uuid,
    kind            text        NOT NULL,
    message         text        NOT NULL,
    read_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_pkey PRIMARY KEY (id),
    CONSTRAINT notifications_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT notifications_order_fkey FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE
);
CREATE INDEX notifications_user_idx ON notifications (user_id, created_at DESC);

-- Events written in the same transaction as the change they announce; the relay
-- publishes them and stamps published_at after the broker confirms.
CREATE TABLE outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    event_id        uuid        NOT NULL,
    order_id        uuid        NOT NULL,
    seq             bigint      NOT NULL,
    routing_key     text        NOT NULL,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    -- Times the broker confirmed it; the watchdog re-publishes a command only a few times.
    publications    integer     NOT NULL DEFAULT 0,
    -- Why the last publication was refused (unroutable, nacked), if it was.
    last_error      text,
    CONSTRAINT outbox_pkey PRIMARY KEY (id),
    CONSTRAINT outbox_event_id_key UNIQUE (event_id)
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
-- The watchdog finds the commands of an order that were never applied.
CREATE INDEX outbox_order_seq_idx ON outbox (order_id, seq);
-- It looks for orders whose accepted commands are not all applied.
CREATE INDEX orders_unapplied_idx ON orders (updated_at) WHERE applied_seq < last_seq;

-- Inbox: one row per event a worker applied, written in the same transaction as the effect.
CREATE TABLE processed_messages (
    event_id        uuid        NOT NULL,
    order_id        uuid        NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT processed_messages_pkey PRIMARY KEY (event_id)
);

CREATE TABLE idempotency_keys (
    user_id         uuid        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    response_status smallint,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (user_id, key),
    CONSTRAINT idempotency_keys_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
