-- amberscan's tables, created idempotently in one schema (tests use a schema of their own).
-- PostGIS lives in `public`; the search path reaches it.

CREATE TABLE IF NOT EXISTS detections (
    tile_id          text NOT NULL,              -- scan tile quadkey
    imagery_date     text NOT NULL,              -- ISO date, '' when the provider gives none
    model_version    text NOT NULL,              -- classifier version
    backbone_version text NOT NULL,
    scan_id          text NOT NULL,
    z                integer NOT NULL,
    x                integer NOT NULL,
    y                integer NOT NULL,
    provider         text NOT NULL,
    flagged          boolean NOT NULL,
    positives        integer NOT NULL,
    segment_count    integer NOT NULL,
    min_positives    integer NOT NULL,
    hectares         double precision NOT NULL,
    scores           real[] NOT NULL,
    demo             boolean NOT NULL DEFAULT false,
    image_key        text NOT NULL DEFAULT '',
    labels_key       text NOT NULL DEFAULT '',
    tile_geom        geometry(Polygon, 4326) NOT NULL,
    positives_geom   geometry(MultiPolygon, 4326),
    detected_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tile_id, imagery_date, model_version)
);
CREATE INDEX IF NOT EXISTS detections_tile_geom_idx ON detections USING gist (tile_geom);

CREATE TABLE IF NOT EXISTS scans (
    scan_id        text PRIMARY KEY,
    tiles_expected integer NOT NULL,
    demo           boolean NOT NULL DEFAULT false,
    region         geometry(Geometry, 4326),
    requested_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per tile of a scan: its outcome. Scan progress is counted from here.
CREATE TABLE IF NOT EXISTS scan_tiles (
    scan_id   text NOT NULL,
    tile_id   text NOT NULL,
    status    text NOT NULL CHECK (status IN ('done', 'skipped', 'failed')),
    flagged   boolean NOT NULL DEFAULT false,
    hectares  double precision NOT NULL DEFAULT 0,
    reason    text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scan_id, tile_id)
);

-- Review loop (web map). A reviewer's verdict on one detection: the latest one counts.
CREATE TABLE IF NOT EXISTS reviews (
    tile_id       text NOT NULL,
    imagery_date  text NOT NULL,
    model_version text NOT NULL,
    verdict       text NOT NULL CHECK (verdict IN ('confirmed', 'rejected')),
    reviewer      text NOT NULL,
    note          text NOT NULL DEFAULT '',
    reviewed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tile_id, imagery_date, model_version)
);

-- A person's label of one superpixel of one segmentation (the label image names it), from the
-- tile debugger's relabel or the labelling page; `amberscan train --from-reviews` reads them.
CREATE TABLE IF NOT EXISTS superpixel_labels (
    labels_key    text NOT NULL,
    segment_index integer NOT NULL CHECK (segment_index >= 0),
    image_key     text NOT NULL,
    tile_id       text NOT NULL,
    imagery_date  text NOT NULL,
    label         smallint NOT NULL CHECK (label IN (0, 1)),  -- 1 = mining
    reviewer      text NOT NULL,
    labelled_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (labels_key, segment_index)
);

-- Precision audits: a random sample of flagged detections, judged through `reviews`.
CREATE TABLE IF NOT EXISTS audits (
    audit_id    bigserial PRIMARY KEY,
    requested   integer NOT NULL CHECK (requested > 0),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS audit_tiles (
    audit_id      bigint NOT NULL REFERENCES audits ON DELETE CASCADE,
    tile_id       text NOT NULL,
    imagery_date  text NOT NULL,
    model_version text NOT NULL,
    PRIMARY KEY (audit_id, tile_id, imagery_date, model_version)
);

-- Issue 11: continuous scanning (`amberscan watch`). Watched regions and their lease: a watch
-- replica holds a region's round until lease_until, so replicas share regions without running one
-- twice at once; the cursor is what the provider last reported (newest STAC item datetime, newest
-- WMTS Time value).
CREATE TABLE IF NOT EXISTS watches (
    watch_id      bigserial PRIMARY KEY,
    name          text NOT NULL DEFAULT '',
    region        geometry(Geometry, 4326) NOT NULL,
    geojson       text NOT NULL,
    provider      text NOT NULL,
    sources       text[] NOT NULL DEFAULT '{}',
    collection    text NOT NULL DEFAULT '',
    layers        text[] NOT NULL DEFAULT '{}',
    imagery_date  text NOT NULL DEFAULT '',
    every_s       double precision NOT NULL CHECK (every_s > 0),
    cursor        text NOT NULL DEFAULT '',
    next_round_at timestamptz NOT NULL DEFAULT now(),
    last_round_at timestamptz,
    last_scan_id  text NOT NULL DEFAULT '',
    last_error    text NOT NULL DEFAULT '',
    lease_owner   text,
    lease_until   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Every (tile, imagery date, model) watch enqueued: the key makes each enqueue happen once,
-- across restarts and replicas (a failed tile is enqueued again under the same key, with
-- backoff, attempts counting). A row is recorded before its request is produced and marked sent
-- after; unsent rows are sent again by the next round of their region.
CREATE TABLE IF NOT EXISTS watch_tiles (
    tile_id       text NOT NULL,
    imagery_date  text NOT NULL,
    model_version text NOT NULL,
    watch_id      bigint REFERENCES watches ON DELETE SET NULL,
    scan_id       text NOT NULL,
    attempts      integer NOT NULL DEFAULT 1,
    sent          boolean NOT NULL DEFAULT false,
    enqueued_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tile_id, imagery_date, model_version)
);
CREATE INDEX IF NOT EXISTS watch_tiles_scan_idx ON watch_tiles (scan_id);
-- Each round that enqueued something is a scan (its progress in scans / scan_tiles).
CREATE TABLE IF NOT EXISTS watch_rounds (
    scan_id    text PRIMARY KEY,
    watch_id   bigint REFERENCES watches ON DELETE CASCADE,
    tiles      integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
