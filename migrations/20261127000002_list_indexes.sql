-- Order lists sort by (created_at DESC, id DESC): indexes in exactly that order let a page
-- be read straight from the index, for one customer's orders and for everyone's.
DROP INDEX orders_customer_idx;
CREATE INDEX orders_customer_idx ON orders (customer_id, created_at DESC, id DESC);
DROP INDEX orders_created_idx;
CREATE INDEX orders_created_idx ON orders (created_at DESC, id DESC);
