-- An order whose stock is reserved while its customer pays, for a provider that authorises
-- (Stripe). Added on its own: a new enum value cannot be used in the transaction adding it.
ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'awaiting_payment' AFTER 'pending';
