/**
 * The demo's sample database `shop`: customers with personal data (email, phone, card numbers), products
 * and orders; enough rows that a careless DELETE or a bulk export matters.
 */
export const SHOP_SCHEMA = `
CREATE TABLE customers (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL,
  email       text NOT NULL UNIQUE,
  phone       text,
  card_number text NOT NULL,
  country     text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN customers.email IS 'PII';
COMMENT ON COLUMN customers.phone IS 'PII';
COMMENT ON COLUMN customers.card_number IS 'PII: payment card number (demo data, not real cards)';

CREATE TABLE products (
  id          serial PRIMARY KEY,
  name        text NOT NULL,
  price_cents integer NOT NULL CHECK (price_cents > 0)
);

CREATE TABLE orders (
  id          bigserial PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES customers (id),
  product_id  integer NOT NULL REFERENCES products (id),
  quantity    integer NOT NULL CHECK (quantity > 0),
  status      text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')),
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_idx ON orders (customer_id);

INSERT INTO products (name, price_cents)
SELECT initcap(adj || ' ' || noun), 500 + (i * 737) % 20000
FROM generate_series(1, 40) AS i,
     LATERAL (SELECT (ARRAY['red','blue','quiet','fast','small','large','green','golden'])[1 + i % 8] AS adj,
                     (ARRAY['kettle','lamp','chair','backpack','notebook'])[1 + i % 5] AS noun) AS words;

INSERT INTO customers (name, email, phone, card_number, country, created_at)
SELECT first || ' ' || last,
       lower(first || '.' || last || i || '@example.com'),
       '+1-555-' || lpad((i * 7919 % 10000)::text, 4, '0'),
       '4' || lpad((i::bigint * 982451653 % 1000000000000000)::text, 15, '0'),
       (ARRAY['DE','FR','US','GB','NL','SE','JP','BR'])[1 + i % 8],
       now() - (i || ' hours')::interval
FROM generate_series(1, 2000) AS i,
     LATERAL (SELECT (ARRAY['Ada','Alan','Grace','Edsger','Barbara','Donald','Frances','Ken'])[1 + i % 8] AS first,
                     (ARRAY['Lovelace','Turing','Hopper','Dijkstra','Liskov','Knuth','Allen','Thompson'])[1 + (i / 8) % 8] AS last) AS n;

INSERT INTO orders (customer_id, product_id, quantity, status, created_at)
SELECT 1 + (i * 31) % 2000, 1 + i % 40, 1 + i % 3,
       (ARRAY['new','paid','shipped','cancelled'])[1 + i % 4],
       now() - (i || ' minutes')::interval
FROM generate_series(1, 10000) AS i;

ANALYZE;
`;

/**
 * The role stepgate logs in as (not the superuser): what the sample and the README's walkthrough need and
 * nothing more. Reads of every table; rows of orders and customers may be written (so an approved
 * `DELETE FROM orders` runs); products only read; no DDL (PostgreSQL 15 gives PUBLIC no CREATE on schema
 * public), no TRUNCATE, no superuser: a statement the rules let through still meets the server's
 * privileges (an approved DROP TABLE fails with "must be owner").
 */
export const APP_ROLE = 'shop_app';

export const APP_GRANTS = `
REVOKE ALL ON SCHEMA public FROM ${APP_ROLE};
GRANT USAGE ON SCHEMA public TO ${APP_ROLE};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${APP_ROLE};
GRANT INSERT, UPDATE, DELETE ON orders, customers TO ${APP_ROLE};
GRANT USAGE ON SEQUENCE orders_id_seq, customers_id_seq TO ${APP_ROLE};
`;
