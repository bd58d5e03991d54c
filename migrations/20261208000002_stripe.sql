-- Stripe as a payment provider: the PaymentIntent of each order, the events Stripe sent
-- (each applied once), and the calls the worker makes to Stripe, queued in the transaction
-- that decided them and made outside any order's transaction.
ALTER TABLE orders
    DROP CONSTRAINT orders_payment_provider_known,
    ADD CONSTRAINT orders_payment_provider_known CHECK (payment_provider IN ('manual', 'stripe')),
    ADD COLUMN payment_intent_id text,
    -- Given only to the order's customer, for their front end to confirm the payment.
    ADD COLUMN payment_client_secret text,
    -- When an order awaiting payment is cancelled unpaid (`PAYMENT_TIMEOUT` after its stock
    -- was reserved).
    ADD COLUMN payment_due_at timestamptz,
    -- Set once the watchdog queued the expiry: however many watchdogs, one command.
    ADD COLUMN payment_expiry_queued boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT orders_payment_intent_once UNIQUE (payment_intent_id);

CREATE INDEX orders_payment_due_idx ON orders (payment_due_at)
    WHERE status = 'awaiting_payment' AND NOT payment_expiry_queued;

-- Every Stripe event received, by its id: a redelivery is acknowledged and changes nothing.
CREATE TABLE stripe_events (
    event_id    text        NOT NULL,
    kind        text        NOT NULL,
    -- The order whose PaymentIntent it names; NULL for one naming no order of ours.
    order_id    uuid,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stripe_events_pkey PRIMARY KEY (event_id),
    CONSTRAINT stripe_events_order_fkey FOREIGN KEY (order_id) REFERENCES orders (id)
);
CREATE INDEX stripe_events_received_idx ON stripe_events (received_at);

-- Calls to Stripe the worker decided (create the PaymentIntent, capture, cancel, refund).
-- A call is made with its idempotency key, so one repeated after a crash acts once; its
-- answer becomes an `order.payment_observed` command in the transaction marking it done.
CREATE TABLE payment_calls (
    id              uuid        NOT NULL,
    order_id        uuid        NOT NULL,
    kind            text        NOT NULL,
    amount_minor    bigint      NOT NULL DEFAULT 0,
    idempotency_key text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    done_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_calls_pkey PRIMARY KEY (id),
    CONSTRAINT payment_calls_order_fkey FOREIGN KEY (order_id) REFERENCES orders (id),
    CONSTRAINT payment_calls_once UNIQUE (idempotency_key),
    CONSTRAINT payment_calls_kind_known
        CHECK (kind IN ('create_intent', 'capture', 'cancel', 'refund')),
    CONSTRAINT payment_calls_amount_not_negative CHECK (amount_minor >= 0)
);
CREATE INDEX payment_calls_due_idx ON payment_calls (next_attempt_at) WHERE done_at IS NULL;
CREATE INDEX payment_calls_order_idx ON payment_calls (order_id, created_at);
