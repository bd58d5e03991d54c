-- Customers choose whether order updates reach their inbox; on unless they switch it off.
ALTER TABLE users ADD COLUMN order_emails boolean NOT NULL DEFAULT true;

-- Order emails to send: written by the worker in the transaction that changes the order's
-- status (so none is lost and none is invented), sent by any worker's mailer, retried with
-- back-off. The id is the `order.status_changed` event's, and the email's Message-ID, so a
-- copy sent twice after a crash is recognisably the same email.
CREATE TABLE emails (
    id              uuid         NOT NULL,
    order_id        uuid         NOT NULL,
    status          order_status NOT NULL,
    recipient       text         NOT NULL,
    -- The customer-facing sentence about the change (never a staff note).
    message         text         NOT NULL,
    -- As it was at the change: an email sent late still tells of its own moment.
    tracking_number text,
    created_at      timestamptz  NOT NULL DEFAULT now(),
    -- When a mailer may take it next: after a back-off, or once another's claim lapses.
    next_attempt_at timestamptz  NOT NULL DEFAULT now(),
    attempts        integer      NOT NULL DEFAULT 0,
    last_error      text,
    sent_at         timestamptz,
    -- Refused for good (a malformed address) or failing for a day.
    given_up_at     timestamptz,
    CONSTRAINT emails_pkey PRIMARY KEY (id),
    CONSTRAINT emails_order_fkey FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE
);
CREATE INDEX emails_due_idx ON emails (next_attempt_at) WHERE sent_at IS NULL AND given_up_at IS NULL;
CREATE INDEX emails_done_idx ON emails (coalesce(sent_at, given_up_at));
