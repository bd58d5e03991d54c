-- Units cancelled from an order line before they shipped: their stock goes back on sale,
-- the order's total shrinks, and what an authorisation holds beyond it is released.
ALTER TABLE order_items
    ADD COLUMN quantity_cancelled integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT order_items_units_within
        CHECK (quantity_cancelled >= 0 AND quantity_shipped + quantity_cancelled <= quantity);

-- A release: part of an authorisation given up because the total shrank.
ALTER TABLE payment_transactions DROP CONSTRAINT payment_transactions_kind_known;
ALTER TABLE payment_transactions ADD CONSTRAINT payment_transactions_kind_known
    CHECK (kind IN ('authorization', 'failure', 'capture', 'void', 'receipt', 'refund', 'release'));

ALTER TABLE order_events DROP CONSTRAINT order_events_kind_known;
ALTER TABLE order_events ADD CONSTRAINT order_events_kind_known CHECK (kind IN
    ('created', 'status_change_requested', 'cancel_requested', 'status_changed', 'rejected',
     'notified', 'skipped', 'payment_requested', 'payment_changed', 'fulfillment_requested',
     'fulfillment_changed', 'units_cancelled'));
ALTER TABLE order_feed DROP CONSTRAINT order_feed_kind_known;
ALTER TABLE order_feed ADD CONSTRAINT order_feed_kind_known
    CHECK (kind IN ('status_changed', 'stalled', 'resumed', 'payment_changed', 'fulfillment_changed',
                    'units_cancelled'));
