-- Helpers shared by every matcher file (run first).
--
-- Times: the message tables hold TIMESTAMPTZ_NS; every matcher works on
-- BIGINT nanoseconds (epoch_ns) so no step can round to microseconds, and
-- match.py turns them back into timestamp[ns, UTC] on output.

-- First non-null element of a list (the "try these paths in order" rule).
CREATE OR REPLACE TEMP MACRO first_of(xs) AS
    list_filter(xs, lambda v: v IS NOT NULL)[1];

-- A scalar at a JSON path, as text; NULL when the document is not JSON.
CREATE OR REPLACE TEMP MACRO jstr(doc, path) AS
    CASE WHEN path IS NOT NULL AND json_valid(doc) THEN json_extract_string(doc, path) END;

-- The same value with its JSON type kept ("1" and 1 are different request ids).
CREATE OR REPLACE TEMP MACRO jkey(doc, path) AS
    CASE WHEN path IS NOT NULL AND json_valid(doc)
         THEN nullif(json_extract(doc, path)::VARCHAR, 'null') END;

-- Codes that mean success in the venues' error fields (OKX "0", KuCoin
-- "200000", Hyperliquid "ok"; an empty string is no code).
CREATE OR REPLACE TEMP MACRO ok_code(v) AS v IN ('0', '200000', 'ok', '');

-- First error code found at ``paths`` (ignoring success codes), else NULL.
CREATE OR REPLACE TEMP MACRO error_code_at(doc, paths) AS
    first_of(list_transform(paths, lambda p: CASE WHEN NOT ok_code(jstr(doc, p))
                                                  THEN jstr(doc, p) END));

-- accepted / rejected / error from a transport status (HTTP or the WS API's
-- ``status``) and the venue error code: 5xx and the venue's "unknown outcome"
-- codes are ``error`` (venues.md 1: "Treat it as an ack of unknown outcome").
CREATE OR REPLACE TEMP MACRO ack_status(transport_status, code, unknown_codes) AS
    CASE WHEN transport_status >= 500 OR list_contains(unknown_codes, code) THEN 'error'
         WHEN transport_status >= 400 OR code IS NOT NULL THEN 'rejected'
         ELSE 'accepted' END;

-- A percent-decoded form value; kept as sent when it does not decode to UTF-8.
CREATE OR REPLACE TEMP MACRO form_value(v) AS coalesce(try(url_decode(v)), v);

-- ``a=1&b=2`` as a list of {k, v} (a list, not a MAP: keys may repeat).
CREATE OR REPLACE TEMP MACRO form_pairs(s) AS
    list_transform(list_filter(string_split(coalesce(s, ''), '&'), lambda kv: kv <> ''),
                   lambda kv: {'k': form_value(split_part(kv, '=', 1)),
                               'v': form_value(substr(kv, length(split_part(kv, '=', 1)) + 2))});

-- One REST parameter: a JSON path into the body, or a name looked up in the
-- request's parameters (query string first, then the form body: Binance
-- accepts them in either or both, so they are merged), then at the top level
-- of a JSON body.
CREATE OR REPLACE TEMP MACRO rest_param(params, body, name) AS
    CASE WHEN starts_with(name, '$') THEN jstr(body, name)
         ELSE coalesce(list_filter(params, lambda e: e.k = name)[1].v,
                       jstr(body, '$.' || name)) END;

CREATE OR REPLACE TEMP MACRO rest_params(params, body, names) AS
    first_of(list_transform(names, lambda n: nullif(rest_param(params, body, n), '')));

-- First non-empty value at ``paths`` (venues send "" for "no id": OKX ordId
-- of a rejected order, Binance ``C`` of a new order).
CREATE OR REPLACE TEMP MACRO json_paths(doc, paths) AS
    first_of(list_transform(paths, lambda p: nullif(jstr(doc, p), '')));

-- Value of a FIX tag in the ``fields`` list of a fix_messages row.
CREATE OR REPLACE TEMP MACRO fix_tag(fields, t) AS
    list_filter(fields, lambda f: f.tag = t)[1].value;
