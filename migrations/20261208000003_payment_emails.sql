-- Receipts: an email when money is taken or given back, with the amounts as they were.
ALTER TABLE emails
    -- `capture`, `receipt` or `refund`; NULL for an email about a status change.
    ADD COLUMN payment_kind text,
    ADD COLUMN payment_amount_minor bigint,
    ADD COLUMN amount_paid_minor bigint,
    ADD COLUMN amount_refunded_minor bigint,
    ADD CONSTRAINT emails_payment_kind_known
        CHECK (payment_kind IS NULL OR payment_kind IN ('capture', 'receipt', 'refund'));
