// The scanned imagery on the map (#27): the tiles the model saw, drawn by the server from the
// blob store (/tiles/imagery/{z}/{x}/{y}.png?vintage=...), and a before/after swipe of two
// vintages: a second, non-interactive map stacked over the main one, showing the "before"
// vintage, clipped with CSS to the left of the divider and kept on the main map's camera.
export const MIN_ZOOM = 14; // web/imagery.py MIN_ZOOM: at most 16 scan tiles per map tile

export function scannedUrl(vintage) {
  const query = new URLSearchParams();
  if (vintage) query.set("vintage", vintage);
  const text = query.toString();
  return `${location.origin}/tiles/imagery/{z}/{x}/{y}.png${text ? "?" + text : ""}`;
}

export function scannedSource(vintage) {
  // maxzoom 18: a zoom-16 scan tile of 1024 px has its own detail down to zoom 18; beyond, MapLibre enlarges.
  return { type: "raster", tiles: [scannedUrl(vintage)], tileSize: 256, minzoom: MIN_ZOOM, maxzoom: 18, attribution: "scanned imagery: amberscan" };
}

function beforeStyle(config, vintage) {
  const detections = new URLSearchParams({ year: vintage });
  return {
    version: 8,
    sources: {
      imagery: { type: "raster", tiles: [config.tiles_url], tileSize: 256, maxzoom: 18 },
      scanned: scannedSource(vintage),
      detections: { type: "vector", tiles: [`${location.origin}/tiles/detections/{z}/{x}/{y}.mvt?${detections}`], minzoom: 0, maxzoom: 17 },
    },
    layers: [
      { id: "imagery", type: "raster", source: "imagery" },
      { id: "scanned", type: "raster", source: "scanned", minzoom: MIN_ZOOM },
      {
        id: "detection-outlines",
        type: "line",
        source: "detections",
        "source-layer": "detections",
        minzoom: config.detail_zoom,
        paint: { "line-color": ["case", ["get", "flagged"], "#d62828", "#2a9d8f"], "line-width": 2 },
      },
    ],
  };
}

// The swipe: `open(vintage)` shows the before map, `close()` removes it, `position(percent)`
// moves the divider. body[data-compare] is the before vintage once its map has loaded.
export class Swipe {
  constructor(maplibregl, main, config, onChange) {
    this.maplibregl = maplibregl;
    this.main = main;
    this.config = config;
    this.onChange = onChange;
    this.before = null;
    this.vintage = "";
    this.percent = 50;
    this.wrapper = document.getElementById("compare");
    this.box = document.getElementById("map-before");
    this.slider = document.getElementById("swipe");
    this.slider.addEventListener("input", () => this.position(Number(this.slider.value), true));
    main.on("move", () => this.follow());
    main.on("resize", () => this.before && this.before.resize());
  }

  open(vintage, percent) {
    if (!vintage) return this.close();
    if (percent !== undefined) this.percent = percent;
    if (this.before && vintage === this.vintage) return this.position(this.percent);
    this.close();
    this.vintage = vintage;
    this.wrapper.classList.remove("hidden");
    document.body.dataset.compare = "";
    this.before = new this.maplibregl.Map({
      container: this.box,
      style: beforeStyle(this.config, vintage),
      interactive: false,
      attributionControl: false,
      fadeDuration: 0,
      center: this.main.getCenter(),
      zoom: this.main.getZoom(),
      maxZoom: 19,
    });
    window.amberBefore = this.before;
    const loaded = () => { document.body.dataset.compare = vintage; };
    this.before.on("idle", loaded);
    this.position(this.percent);
  }

  close() {
    if (this.before) this.before.remove();
    this.before = null;
    this.vintage = "";
    window.amberBefore = null;
    this.wrapper.classList.add("hidden");
    delete document.body.dataset.compare;
  }

  follow() {
    if (this.before) this.before.jumpTo({ center: this.main.getCenter(), zoom: this.main.getZoom(), bearing: this.main.getBearing(), pitch: this.main.getPitch() });
  }

  position(percent, changed = false) {
    this.percent = Math.min(100, Math.max(0, percent));
    this.slider.value = String(this.percent);
    // The before map shows left of the divider; the main map (after) right of it.
    this.box.style.clipPath = `inset(0 ${100 - this.percent}% 0 0)`;
    document.getElementById("swipe-divider").style.left = `${this.percent}%`;
    if (changed && this.onChange) this.onChange();
  }
}
