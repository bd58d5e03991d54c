-- Money on every order, in integer minor units, and the append-only ledger of what a
-- payment provider (or staff, for money taken by hand) did with it. The amounts are moved
-- only by the worker, through `common::domain::payment`; the checks below hold the same
-- invariants, so no code path can write money that drifts.
CREATE TYPE payment_status AS ENUM
    ('unpaid', 'authorized', 'partially_paid', 'paid', 'partially_refunded', 'refunded', 'voided', 'failed');

ALTER TABLE orders
    ADD COLUMN payment_provider text NOT NULL DEFAULT 'manual',
    ADD COLUMN payment_status payment_status NOT NULL DEFAULT 'unpaid',
    ADD COLUMN amount_authorized_minor bigint NOT NULL DEFAULT 0,
    ADD COLUMN amount_captured_minor bigint NOT NULL DEFAULT 0,
    ADD COLUMN amount_refunded_minor bigint NOT NULL DEFAULT 0,
    -- Refunds the API accepted, applied or still queued: it accepts one only while this
    -- stays within what is captured, so two refunds racing cannot both be accepted.
    ADD COLUMN refunds_accepted_minor bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT orders_payment_provider_known CHECK (payment_provider IN ('manual')),
    ADD CONSTRAINT orders_payment_amounts_ordered CHECK (
        0 <= amount_refunded_minor
        AND amount_refunded_minor <= amount_captured_minor
        AND amount_captured_minor <= amount_authorized_minor
        AND amount_authorized_minor <= total_amount_minor),
    ADD CONSTRAINT orders_refunds_accepted_within_captured CHECK (
        amount_refunded_minor <= refunds_accepted_minor
        AND refunds_accepted_minor <= amount_captured_minor),
    ADD CONSTRAINT orders_payment_status_matches_amounts CHECK (
        CASE payment_status
            WHEN 'unpaid' THEN amount_authorized_minor = 0
            WHEN 'failed' THEN amount_authorized_minor = 0
            WHEN 'voided' THEN amount_authorized_minor = 0
            WHEN 'authorized' THEN amount_authorized_minor > 0 AND amount_captured_minor = 0
            WHEN 'partially_paid' THEN amount_captured_minor > 0
                AND amount_captured_minor < total_amount_minor AND amount_refunded_minor = 0
            WHEN 'paid' THEN amount_captured_minor > 0
                AND amount_captured_minor = total_amount_minor AND amount_refunded_minor = 0
            WHEN 'partially_refunded' THEN amount_refunded_minor > 0
                AND amount_refunded_minor < amount_captured_minor
            WHEN 'refunded' THEN amount_refunded_minor > 0
                AND amount_refunded_minor = amount_captured_minor
        END);

-- One row per operation applied to an order's money, never changed or removed. The
-- provider's reference for it (for money recorded by hand, the command's event id) is
-- unique, so an operation delivered twice is applied once.
CREATE TABLE payment_transactions (
    id                 uuid        NOT NULL,
    order_id           uuid        NOT NULL,
    kind               text        NOT NULL,
    amount_minor       bigint      NOT NULL,
    provider           text        NOT NULL,
    provider_reference text        NOT NULL,
    -- Who recorded it (staff, for money taken by hand; NULL for a provider's event).
    actor_id           uuid,
    note               text,
    -- The order's payment once it applied.
    payment_status     payment_status NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_transactions_pkey PRIMARY KEY (id),
    CONSTRAINT payment_transactions_order_fkey FOREIGN KEY (order_id) REFERENCES orders (id),
    CONSTRAINT payment_transactions_once UNIQUE (provider, provider_reference),
    CONSTRAINT payment_transactions_kind_known
        CHECK (kind IN ('authorization', 'failure', 'capture', 'void', 'receipt', 'refund')),
    CONSTRAINT payment_transactions_amount_not_negative CHECK (amount_minor >= 0)
);
CREATE INDEX payment_transactions_order_idx ON payment_transactions (order_id, created_at);

CREATE FUNCTION payment_transactions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the payment ledger is append-only: % is not allowed', TG_OP;
END
$$;
CREATE TRIGGER payment_transactions_append_only
    BEFORE UPDATE OR DELETE ON payment_transactions
    FOR EACH ROW EXECUTE FUNCTION payment_transactions_append_only();
CREATE TRIGGER payment_transactions_no_truncate
    BEFORE TRUNCATE ON payment_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION payment_transactions_append_only();

-- The timeline and the live feed record money as it moves.
ALTER TABLE order_events DROP CONSTRAINT order_events_kind_known;
ALTER TABLE order_events ADD CONSTRAINT order_events_kind_known CHECK (kind IN
    ('created', 'status_change_requested', 'cancel_requested', 'status_changed', 'rejected',
     'notified', 'skipped', 'payment_requested', 'payment_changed'));
ALTER TABLE order_feed DROP CONSTRAINT order_feed_kind_known;
ALTER TABLE order_feed ADD CONSTRAINT order_feed_kind_known
    CHECK (kind IN ('status_changed', 'stalled', 'resumed', 'payment_changed'));
