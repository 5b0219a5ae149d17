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

-- Review loop (web map). A reviewer's verdict on a tile's imagery of one date: the latest one
-- counts, under every model (issue 23: a model change must not make a rejected tile unreviewed).
-- `model_version` is the model whose detection the reviewer saw.
CREATE TABLE IF NOT EXISTS reviews (
    tile_id       text NOT NULL,
    imagery_date  text NOT NULL,
    model_version text NOT NULL,
    verdict       text NOT NULL CHECK (verdict IN ('confirmed', 'rejected')),
    reviewer      text NOT NULL,
    note          text NOT NULL DEFAULT '',
    reviewed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tile_id, imagery_date)
);
-- A database made before issue 23 keyed reviews by model too: keep each (tile, date)'s newest.
DO $$
BEGIN
    IF (SELECT array_length(c.conkey, 1) FROM pg_constraint c
        WHERE c.conrelid = to_regclass('reviews') AND c.contype = 'p') = 3 THEN
        DELETE FROM reviews r WHERE EXISTS (
            SELECT 1 FROM reviews n
            WHERE n.tile_id = r.tile_id AND n.imagery_date = r.imagery_date
              AND (n.reviewed_at, n.ctid) > (r.reviewed_at, r.ctid));
        ALTER TABLE reviews DROP CONSTRAINT reviews_pkey;
        ALTER TABLE reviews ADD PRIMARY KEY (tile_id, imagery_date);
    END IF;
END $$;

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

-- Issue 14, the map at survey scale (web app): review history and the map's low-zoom aggregates.
-- Every review action, kept: who did what to which detection, and when. `reviews` (above) holds
-- the current verdict, which is the latest event's.
CREATE TABLE IF NOT EXISTS review_events (
    event_id      bigserial PRIMARY KEY,
    tile_id       text NOT NULL,
    imagery_date  text NOT NULL,
    model_version text NOT NULL,
    action        text NOT NULL CHECK (action IN ('confirmed', 'rejected', 'cleared', 'mining',
                                                  'not_mining', 'label_cleared')),
    segment_index integer CHECK (segment_index >= 0),   -- a relabel's superpixel
    reviewer      text NOT NULL,
    note          text NOT NULL DEFAULT '',
    at            timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS review_events_detection_idx
    ON review_events (tile_id, imagery_date, model_version, at);

-- The newest detection: what the map's refresher polls to see that detections changed.
CREATE INDEX IF NOT EXISTS detections_detected_at_idx ON detections (detected_at);

-- Issue 12 item 4, exclusion areas (web app): known legal quarries, sand pits, construction
-- sites. A detection whose tile's centre lies in one is kept but marked excluded: shown so on the
-- map, left out of the flagged hectares, listed by reason.
CREATE TABLE IF NOT EXISTS exclusion_areas (
    area_id    bigserial PRIMARY KEY,
    region     text NOT NULL DEFAULT '',
    reason     text NOT NULL,
    name       text NOT NULL DEFAULT '',
    geom       geometry(MultiPolygon, 4326) NOT NULL CHECK (ST_IsValid(geom)),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS exclusion_areas_geom_idx ON exclusion_areas USING gist (geom);

-- Issue 14 (continued): the map's aggregates, which count the exclusions too.
-- The map's aggregates at low zooms: per grid cell (the zoom-`level` tile, 15, 13 or 11,
-- containing the scan tile) the counts of each kind of verdict a filter can ask for. `latest`: the tile's newest
-- verdict (all vintages); `latest_year`: its newest in that imagery year (a vintage);
-- `latest_model` / `latest_year_model`: the same among one model's verdicts. `change` compares a
-- tile's vintage with its previous one (newest run each): new, gone, same, first.
-- Flagged tiles inside an exclusion area count apart (`excluded`), not in `flagged`/`hectares`.
-- Refreshed by the web app when detections or reviews changed (`AMBERSCAN_MAP_REFRESH_S`).
-- Its definition changes with the code: an older one (see the comment) is dropped and rebuilt.
DO $$
BEGIN
    IF to_regclass('map_cells') IS NOT NULL
       AND coalesce(obj_description(to_regclass('map_cells'), 'pg_class'), '') <> 'map_cells v3'
    THEN
        DROP MATERIALIZED VIEW map_cells;
    END IF;
END $$;
CREATE MATERIALIZED VIEW IF NOT EXISTS map_cells AS
WITH base AS (
    SELECT d.tile_id, d.z, d.x, d.y, d.flagged, d.hectares, d.model_version, d.demo,
           d.provider = 'synthetic' AS synthetic, d.imagery_date, d.detected_at,
           ST_XMin(d.tile_geom) AS west, ST_YMin(d.tile_geom) AS south,
           ST_XMax(d.tile_geom) AS east, ST_YMax(d.tile_geom) AS north,
           CASE WHEN d.imagery_date ~ '^[0-9]{4}' THEN left(d.imagery_date, 4)
                ELSE 'unknown' END AS year,
           -- as web/queries.py REVIEW_STATE: a rejection a later model flags again
           CASE WHEN r.verdict IS NULL THEN 'unreviewed'
                WHEN r.verdict = 'rejected' AND d.flagged AND r.model_version <> d.model_version
                THEN 'reflagged' ELSE r.verdict END AS review,
           x.reason IS NOT NULL AS excluded
    FROM detections d
    LEFT JOIN reviews r ON r.tile_id = d.tile_id AND r.imagery_date = d.imagery_date
    LEFT JOIN LATERAL (SELECT e.reason FROM exclusion_areas e
                       WHERE e.geom && d.tile_geom
                         AND ST_Intersects(e.geom, ST_Centroid(d.tile_geom))
                       ORDER BY e.area_id LIMIT 1) x ON true
), by_tile AS (
    SELECT *, row_number() OVER w = 1 AS latest,
           lag(year) OVER w IS DISTINCT FROM year AS latest_year
    FROM base
    WINDOW w AS (PARTITION BY z, x, y ORDER BY imagery_date COLLATE "C" DESC, detected_at DESC)
), ranked AS (
    SELECT *, row_number() OVER m = 1 AS latest_model,
           lag(year) OVER m IS DISTINCT FROM year AS latest_year_model
    FROM by_tile
    WINDOW m AS (PARTITION BY z, x, y, model_version COLLATE "C"
                 ORDER BY imagery_date COLLATE "C" DESC, detected_at DESC)
), vintages AS (
    SELECT z, x, y, year, lead(flagged) OVER v AS before, lead(year) OVER v AS before_year
    FROM by_tile WHERE latest_year
    WINDOW v AS (PARTITION BY z, x, y ORDER BY year COLLATE "C" DESC)
), changed AS (
    SELECT r.*, CASE WHEN NOT r.latest_year OR v.before_year IS NULL THEN 'first'
                     WHEN r.flagged AND NOT v.before THEN 'new'
                     WHEN v.before AND NOT r.flagged THEN 'gone'
                     ELSE 'same' END AS change
    FROM ranked r
    LEFT JOIN vintages v ON (v.z, v.x, v.y, v.year) = (r.z, r.x, r.y, r.year) AND r.latest_year
), l15 AS (
    SELECT x >> (z - 15) AS cx, y >> (z - 15) AS cy, year, model_version, review, latest,
           latest_year, latest_model, latest_year_model, change,
           count(*) AS tiles, count(*) FILTER (WHERE flagged AND NOT excluded) AS flagged,
           coalesce(sum(hectares) FILTER (WHERE flagged AND NOT excluded), 0) AS hectares,
           count(*) FILTER (WHERE flagged AND excluded) AS excluded,
           coalesce(sum(hectares) FILTER (WHERE flagged AND excluded), 0) AS excluded_hectares,
           count(*) FILTER (WHERE demo) AS demo, count(*) FILTER (WHERE synthetic) AS synthetic,
           min(west) AS west, min(south) AS south, max(east) AS east, max(north) AS north
    FROM changed WHERE z >= 15
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
)
SELECT 15 AS level, * FROM l15
UNION ALL
SELECT l.level, cx >> (15 - l.level), cy >> (15 - l.level), year, model_version, review, latest,
       latest_year, latest_model, latest_year_model, change,
       sum(tiles)::bigint, sum(flagged)::bigint, sum(hectares), sum(excluded)::bigint,
       sum(excluded_hectares), sum(demo)::bigint, sum(synthetic)::bigint, min(west), min(south),
       max(east), max(north)
FROM l15 CROSS JOIN (VALUES (11), (13)) AS l (level)
GROUP BY l.level, 2, 3, year, model_version, review, latest, latest_year, latest_model,
         latest_year_model, change
WITH NO DATA;
CREATE UNIQUE INDEX IF NOT EXISTS map_cells_key ON map_cells
    (level, cx, cy, year, model_version, review, latest, latest_year, latest_model,
     latest_year_model, change);
COMMENT ON MATERIALIZED VIEW map_cells IS 'map_cells v3';

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
-- Issue 26: the lease's fencing token, one more at each claim; a round's writes check it, so a
-- replica whose lease another took writes nothing more.
ALTER TABLE watches ADD COLUMN IF NOT EXISTS lease_token bigint NOT NULL DEFAULT 0;
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

-- Issue 28: sample-based area estimates. A design is a stratified random sample of the tiles of
-- one region, vintage and model (one design per the three: drawing again resumes it), on the
-- map's own strata (flagged; unflagged with a high score; the rest; crossed with the user's
-- strata when given). `area_tiles` is its population, frozen when drawn (each tile's stratum,
-- area, the map's class and damaged area, centre); a sampled tile has its place in the random
-- review order. The reference observations are the reviews (verdict) and superpixel labels.
CREATE TABLE IF NOT EXISTS area_designs (
    design_id     bigserial PRIMARY KEY,
    region_key    text NOT NULL,                -- sha256 of the region's normalised WKB
    region        geometry(Geometry, 4326) NOT NULL,
    year          text NOT NULL,                -- the vintage; '' for each tile's newest
    model_version text NOT NULL,
    seed          bigint NOT NULL,
    high_score    double precision NOT NULL,
    blind         boolean NOT NULL DEFAULT true,
    strata        jsonb NOT NULL,               -- [{name, tiles, area_ha, anticipated, sampled}]
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    kind          text NOT NULL DEFAULT 'vintage',  -- or 'change': new damage from year_before
    year_before   text NOT NULL DEFAULT ''          -- a change design's earlier vintage
);
-- New damage between two vintages (issue 28): a design is one per (region, kind, vintages,
-- model); a database made before it had one per (region, vintage, model) and no kind.
ALTER TABLE area_designs ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'vintage';
ALTER TABLE area_designs ADD COLUMN IF NOT EXISTS year_before text NOT NULL DEFAULT '';
ALTER TABLE area_designs DROP CONSTRAINT IF EXISTS area_designs_region_key_year_model_version_key;
CREATE UNIQUE INDEX IF NOT EXISTS area_designs_key_idx
    ON area_designs (region_key, kind, year_before, year, model_version);
CREATE TABLE IF NOT EXISTS area_tiles (
    design_id     bigint NOT NULL REFERENCES area_designs ON DELETE CASCADE,
    tile_id       text NOT NULL,
    imagery_date  text NOT NULL,
    model_version text NOT NULL,
    stratum       text NOT NULL,
    mapped        boolean NOT NULL,             -- flagged, outside every exclusion area
    top_score     real NOT NULL,
    tile_ha       double precision NOT NULL,
    damaged_ha    double precision NOT NULL,    -- the map's damaged area in the tile
    centre        geometry(Point, 4326) NOT NULL,
    position      integer,                      -- review order of a sampled tile; NULL: not sampled
    imagery_date_before text,                   -- a change design's earlier vintage's imagery
    PRIMARY KEY (design_id, tile_id)
);
ALTER TABLE area_tiles ADD COLUMN IF NOT EXISTS imagery_date_before text;
CREATE UNIQUE INDEX IF NOT EXISTS area_tiles_sample_idx
    ON area_tiles (design_id, position) WHERE position IS NOT NULL;
-- Issue 30: alerts for watched regions. A subscription: a region, a level (flagged: new damage;
-- high: new damage above AMBERSCAN_ALERT_HIGH_SCORE; confirmed: by a reviewer) and a
-- destination (a webhook with its own signing secret, an e-mail address, or the Atom feed).
CREATE TABLE IF NOT EXISTS alert_subscriptions (
    subscription_id bigserial PRIMARY KEY,
    watch_id        bigint NOT NULL REFERENCES watches ON DELETE CASCADE,
    level           text NOT NULL CHECK (level IN ('flagged', 'high', 'confirmed')),
    kind            text NOT NULL CHECK (kind IN ('webhook', 'email', 'feed')),
    target          text NOT NULL DEFAULT '',
    secret          text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- An alert is an event keyed by (region, tile, imagery date, level): recorded once, whichever
-- replica or round sees it first (no model in the key: a replay never alerts again).
CREATE TABLE IF NOT EXISTS alert_events (
    event_id      bigserial UNIQUE,
    watch_id      bigint NOT NULL REFERENCES watches ON DELETE CASCADE,
    tile_id       text NOT NULL,
    imagery_date  text NOT NULL,
    level         text NOT NULL CHECK (level IN ('flagged', 'high', 'confirmed')),
    model_version text NOT NULL,
    hectares      double precision NOT NULL,
    score         double precision NOT NULL,
    scan_id       text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (watch_id, tile_id, imagery_date, level)
);
-- A round's events are recorded once its scan has a status for every tile (or waited long).
ALTER TABLE watch_rounds ADD COLUMN IF NOT EXISTS alerted_at timestamptz;
-- A delivery: one subscription's new events (or a sample, `test`), pending → sent | failed. A
-- replica claims a pending one (claim_until, and claim_token one more per claim: its writes
-- are fenced by it), sends it, and records the outcome; a feed's deliveries are published as
-- they are made.
CREATE TABLE IF NOT EXISTS alert_deliveries (
    delivery_id     bigserial PRIMARY KEY,
    subscription_id bigint NOT NULL REFERENCES alert_subscriptions ON DELETE CASCADE,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    test            boolean NOT NULL DEFAULT false,
    attempts        integer NOT NULL DEFAULT 0,
    claim_owner     text,
    claim_until     timestamptz,
    claim_token     bigint NOT NULL DEFAULT 0,
    last_error      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz
);
CREATE INDEX IF NOT EXISTS alert_deliveries_pending_idx
    ON alert_deliveries (delivery_id) WHERE state = 'pending';
-- Each event goes into one delivery per subscription (the key decides between replicas).
CREATE TABLE IF NOT EXISTS alert_delivery_events (
    subscription_id bigint NOT NULL,
    event_id        bigint NOT NULL REFERENCES alert_events (event_id) ON DELETE CASCADE,
    delivery_id     bigint NOT NULL REFERENCES alert_deliveries ON DELETE CASCADE,
    PRIMARY KEY (subscription_id, event_id)
);
CREATE INDEX IF NOT EXISTS alert_delivery_events_delivery_idx
    ON alert_delivery_events (delivery_id);
-- The delivery log: every attempt, by whom, and how it ended.
CREATE TABLE IF NOT EXISTS alert_attempts (
    attempt_id  bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES alert_deliveries ON DELETE CASCADE,
    attempt     integer NOT NULL,
    owner       text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('sent', 'retry', 'failed', 'published')),
    status      integer,
    error       text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS alert_attempts_delivery_idx ON alert_attempts (delivery_id);
