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
