-- The relay backs off per row and parks rows that keep failing, so a few bad rows can
-- never stop the rest from going out.
ALTER TABLE outbox
    -- Failed publications since the last success (refused, unroutable, not an envelope).
    ADD COLUMN attempts         integer     NOT NULL DEFAULT 0,
    -- When a relay may take the row next: after a back-off, or after another relay's
    -- claim on it lapses (a relay that died mid-round).
    ADD COLUMN next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- Set aside after too many failures; an operator re-queues it (`worker outbox requeue`).
    ADD COLUMN parked_at        timestamptz,
    -- A worker sent this command to the dead-letter queue (reason in last_error); the
    -- watchdog leaves it there for an operator instead of publishing a second copy.
    ADD COLUMN dead_lettered_at timestamptz,
    -- A worker last scheduled a retry of this command: it is in a delay queue, not lost.
    ADD COLUMN retried_at       timestamptz;

DROP INDEX outbox_unpublished_idx;
CREATE INDEX outbox_due_idx ON outbox (id) WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_parked_idx ON outbox (id) WHERE parked_at IS NOT NULL AND published_at IS NULL;

-- An order whose next command cannot be applied (dead-lettered, or never arriving) is
-- flagged instead of silently standing still; staff resolve it (re-drive or skip).
ALTER TABLE orders
    ADD COLUMN stalled_reason text,
    ADD COLUMN stalled_at     timestamptz,
    -- The command holding the order up (applied_seq + 1 when it stalled).
    ADD COLUMN stalled_seq    bigint;
CREATE INDEX orders_stalled_idx ON orders (stalled_at) WHERE stalled_at IS NOT NULL;

-- An operator skipping a command that can never be applied leaves a timeline entry.
ALTER TABLE order_events DROP CONSTRAINT order_events_kind_known;
ALTER TABLE order_events ADD CONSTRAINT order_events_kind_known CHECK (kind IN
    ('created', 'status_change_requested', 'cancel_requested', 'status_changed', 'rejected',
     'notified', 'skipped'));
