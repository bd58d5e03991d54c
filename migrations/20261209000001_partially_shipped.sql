-- An order some of whose units have shipped while others still wait on the shelf. Added on
-- its own: a new enum value cannot be used in the transaction adding it.
ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'partially_shipped' AFTER 'processing';
