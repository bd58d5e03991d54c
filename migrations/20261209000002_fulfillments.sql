-- Fulfilments: an order ships in parcels, each with its carrier, tracking number and
-- status, each carrying some units of some lines.

-- Per line: units shipped (written by the worker as fulfilments apply) and units claimed
-- by fulfilment commands the api accepted (so two parcels accepted at once cannot ship
-- one unit twice; a refused command gives its claim back).
ALTER TABLE order_items
    ADD COLUMN quantity_shipped integer NOT NULL DEFAULT 0,
    ADD COLUMN quantity_claimed integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT order_items_shipped_within CHECK (quantity_shipped BETWEEN 0 AND quantity),
    ADD CONSTRAINT order_items_claimed_within CHECK (quantity_claimed BETWEEN 0 AND quantity);

-- Orders shipped before fulfilments existed shipped whole.
UPDATE order_items i SET quantity_shipped = i.quantity, quantity_claimed = i.quantity
FROM orders o
WHERE o.id = i.order_id AND o.status IN ('shipped', 'delivered', 'refunded');

CREATE TABLE fulfillments (
    id              uuid        NOT NULL,
    order_id        uuid        NOT NULL,
    -- The command that created it: one fulfilment per command, however often delivered.
    seq             bigint      NOT NULL,
    status          text        NOT NULL,
    carrier         text,
    tracking_number text        NOT NULL,
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CONSTRAINT fulfillments_pkey PRIMARY KEY (id),
    CONSTRAINT fulfillments_order_fkey FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE,
    CONSTRAINT fulfillments_one_per_command UNIQUE (order_id, seq),
    CONSTRAINT fulfillments_status_known CHECK (status IN ('shipped', 'delivered')),
    CONSTRAINT fulfillments_delivered_when CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);

CREATE TABLE fulfillment_lines (
    fulfillment_id uuid    NOT NULL,
    order_item_id  uuid    NOT NULL,
    quantity       integer NOT NULL,
    CONSTRAINT fulfillment_lines_pkey PRIMARY KEY (fulfillment_id, order_item_id),
    CONSTRAINT fulfillment_lines_fulfillment_fkey FOREIGN KEY (fulfillment_id)
        REFERENCES fulfillments (id) ON DELETE CASCADE,
    CONSTRAINT fulfillment_lines_item_fkey FOREIGN KEY (order_item_id)
        REFERENCES order_items (id) ON DELETE CASCADE,
    CONSTRAINT fulfillment_lines_quantity_positive CHECK (quantity > 0)
);
CREATE INDEX fulfillment_lines_item_idx ON fulfillment_lines (order_item_id);

-- The timeline and the live feed record parcels as they ship and arrive.
ALTER TABLE order_events DROP CONSTRAINT order_events_kind_known;
ALTER TABLE order_events ADD CONSTRAINT order_events_kind_known CHECK (kind IN
    ('created', 'status_change_requested', 'cancel_requested', 'status_changed', 'rejected',
     'notified', 'skipped', 'payment_requested', 'payment_changed', 'fulfillment_requested',
     'fulfillment_changed'));
ALTER TABLE order_feed DROP CONSTRAINT order_feed_kind_known;
ALTER TABLE order_feed ADD CONSTRAINT order_feed_kind_known
    CHECK (kind IN ('status_changed', 'stalled', 'resumed', 'payment_changed', 'fulfillment_changed'));
