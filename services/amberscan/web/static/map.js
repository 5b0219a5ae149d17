// The map: MapLibre GL JS over the app's vector tiles (/tiles/detections/{z}/{x}/{y}.mvt).
// Zoomed out the tiles hold aggregated cells, zoomed in one polygon per scan tile and, from
// zoom 14, the damaged-area polygons of flagged tiles.
import * as maplibregl from "/static/vendor/maplibre-gl/maplibre-gl.mjs";
import { MIN_ZOOM as SCANNED_ZOOM, Swipe, scannedSource, scannedUrl } from "/static/compare.js";
import * as permalink from "/static/permalink.js";

// settling: the map was moved or its data changed, and has not yet been seen loaded since.
const state = { map: null, config: null, version: 0, popup: null, settling: false, refreshing: 0, link: permalink.read(), swipe: null };
// Start the map's worker now, while the page fetches its configuration and summary.
maplibregl.prewarm();

function filters() {
  const params = new URLSearchParams();
  for (const id of ["year", "model", "review", "change"]) {
    const value = document.getElementById(id).value;
    if (value && !(id === "change" && !document.getElementById("year").value)) params.set(id, value);
  }
  return params;
}

function tileUrl() {
  const params = filters();
  params.set("v", String(state.version));
  return `${location.origin}/tiles/detections/{z}/{x}/{y}.mvt?${params}`;
}

const reviewed = (value) => ["==", ["get", "review"], value];
const DETECTION_COLOUR = [
  "case",
  ["==", ["get", "change"], "new"], "#7209b7",
  ["==", ["get", "change"], "gone"], "#4cc9f0",
  reviewed("confirmed"), "#6a040f",
  reviewed("rejected"), "#adb5bd",
  reviewed("reflagged"), "#e85d04",
  ["get", "excluded"], "#577590",
  ["get", "flagged"], "#d62828",
  [">=", ["get", "max_score"], 0.5], "#f4a261",
  "#2a9d8f",
];

// The layers each checkbox of the Layers panel shows or hides (the permalink's `layers`).
const LAYER_GROUPS = { base: ["imagery"], scanned: ["scanned"], detections: ["cells", "detections", "detection-outlines", "exclusions", "damage"] };
const chosenLayers = () => permalink.LAYERS.filter((group) => document.getElementById("layer-" + group).checked);
const visibility = (id) => {
  const group = Object.keys(LAYER_GROUPS).find((g) => LAYER_GROUPS[g].includes(id));
  return chosenLayers().includes(group) ? "visible" : "none";
};

function applyLayers() {
  for (const ids of Object.values(LAYER_GROUPS)) for (const id of ids) state.map.setLayoutProperty(id, "visibility", visibility(id));
}

function saveLink() {
  if (!state.map) return;
  const centre = state.map.getCenter();
  permalink.write({
    filters: Object.fromEntries(permalink.FILTERS.map((id) => [id, document.getElementById(id).value])),
    layers: chosenLayers(),
    before: document.getElementById("before").value,
    swipe: state.swipe ? state.swipe.percent : 50,
    view: { zoom: state.map.getZoom(), center: [centre.lng, centre.lat] },
  });
}

// The style with each layer shown or hidden as the Layers panel says.
function styleShown(config) {
  const shown = style(config);
  const grouped = Object.values(LAYER_GROUPS).flat();
  for (const layer of shown.layers) if (grouped.includes(layer.id)) layer.layout = { ...(layer.layout || {}), visibility: visibility(layer.id) };
  return shown;
}

function style(config) {
  return {
    version: 8,
    sources: {
      imagery: { type: "raster", tiles: [config.tiles_url], tileSize: 256, maxzoom: 18, attribution: "imagery: configured provider" },
      scanned: scannedSource(document.getElementById("year").value),
      detections: { type: "vector", tiles: [tileUrl()], minzoom: 0, maxzoom: 17 },
      exclusions: { type: "geojson", data: `${location.origin}/api/exclusions` },
    },
    layers: [
      { id: "imagery", type: "raster", source: "imagery" },
      { id: "scanned", type: "raster", source: "scanned", minzoom: SCANNED_ZOOM },
      {
        id: "cells",
        type: "fill",
        source: "detections",
        "source-layer": "cells",
        maxzoom: config.detail_zoom,
        paint: {
          "fill-color": ["case", [">", ["get", "flagged"], 0], ["interpolate", ["linear"], ["get", "flagged_share"], 0, "#fcbf49", 0.05, "#f77f00", 0.2, "#d62828", 0.5, "#6a040f"], "#2a9d8f"],
          "fill-opacity": ["case", [">", ["get", "flagged"], 0], 0.75, 0.25],
          // No outline pass: one shader less to compile before the first view (software WebGL).
          "fill-antialias": false,
        },
      },
      {
        id: "detections",
        type: "fill",
        source: "detections",
        "source-layer": "detections",
        minzoom: config.detail_zoom,
        paint: { "fill-color": DETECTION_COLOUR, "fill-opacity": ["case", ["get", "flagged"], 0.45, 0.25] },
      },
      {
        id: "detection-outlines",
        type: "line",
        source: "detections",
        "source-layer": "detections",
        minzoom: config.detail_zoom,
        paint: { "line-color": DETECTION_COLOUR, "line-width": ["+", 1, ["*", 3, ["get", "max_score"]]] },
      },
      {
        id: "exclusions",
        type: "line",
        source: "exclusions",
        minzoom: 9,
        paint: { "line-color": "#577590", "line-width": 2, "line-dasharray": [3, 2] },
      },
      {
        id: "damage",
        type: "fill",
        source: "detections",
        "source-layer": "damage",
        minzoom: config.damage_zoom,
        paint: { "fill-color": "#ffba08", "fill-opacity": 0.8, "fill-outline-color": "#9d0208" },
      },
    ],
  };
}

function popupOf(p) {
  const box = amber.el("div", { class: "popup" });
  box.append(amber.el("strong", {}, "tile " + p.tile_id));
  if (p.demo) box.append(amber.el("span", { class: "demo-tag" }, "DEMO"));
  if (p.synthetic) box.append(amber.el("span", { class: "demo-tag" }, "SYNTHETIC"));
  const rows = [
    ["verdict", p.flagged ? "FLAGGED" : "not flagged"],
    ["positives", `${p.positives} of ${p.segment_count} (rule: > ${p.min_positives})`],
    ["hectares", Number(p.hectares).toFixed(2)],
    ["max score", Number(p.max_score).toFixed(3)],
    ["imagery", p.imagery_date || "undated"],
    ["model", p.model_version],
    ["review", p.review + (p.reviewer ? " by " + p.reviewer : "")],
  ];
  if (p.excluded) rows.push(["EXCLUDED", `in an exclusion area: ${p.exclusion_reason} (not counted in the flagged hectares)`]);
  if (p.change) rows.push(["change", { new: "new damage since the previous vintage", gone: "no longer flagged", same: "unchanged", first: "first vintage" }[p.change] || p.change]);
  const table = amber.el("table");
  for (const [k, v] of rows) {
    const tr = amber.el("tr");
    tr.append(amber.el("th", {}, k), amber.el("td", {}, v));
    table.append(tr);
  }
  box.append(table);
  box.append(amber.el("a", { href: "/tile/" + encodeURIComponent(p.tile_id) + "?" + amber.tileQuery(p), class: "open-debugger" }, "open tile debugger"));
  const buttons = amber.el("div", { class: "write" });
  for (const verdict of ["confirmed", "rejected"]) {
    const b = amber.el("button", { type: "button", class: "review-" + verdict }, verdict === "confirmed" ? "confirm" : "reject");
    b.addEventListener("click", async () => {
      try {
        await amber.post("/api/reviews", { tile_id: p.tile_id, imagery_date: p.imagery_date, model_version: p.model_version, verdict });
        amber.status("review saved: " + verdict);
        if (state.popup) state.popup.remove();
        await refresh();
      } catch (e) {
        amber.status(e.message, true);
      }
    });
    buttons.append(b);
  }
  box.append(buttons);
  return box;
}

function fillSummary(s) {
  const body = document.querySelector("#summary tbody");
  body.replaceChildren();
  const rows = [
    ["tiles scanned", s.tiles],
    ["flagged", s.flagged],
    ["hectares (flagged)", s.hectares.toFixed(2)],
    ["confirmed", s.reviews.confirmed],
    ["rejected", s.reviews.rejected],
    ["flagged again against a rejection", s.reviews.reflagged],
    ["flagged, unreviewed", s.reviews.unreviewed_flagged],
    ["excluded (exclusion areas)", `${s.excluded.flagged} flagged, ${s.excluded.hectares.toFixed(2)} ha`],
  ];
  for (const r of s.excluded.by_reason) rows.push([`  ${r.reason}`, `${r.areas} areas, ${r.flagged} flagged, ${r.hectares.toFixed(2)} ha`]);
  for (const [k, v] of rows) {
    const tr = amber.el("tr", { "data-key": k });
    tr.append(amber.el("th", {}, k), amber.el("td", {}, v));
    body.append(tr);
  }
  const years = document.querySelector("#by-year tbody");
  years.replaceChildren();
  for (const [year, y] of Object.entries(s.by_year)) {
    const tr = amber.el("tr", { "data-year": year });
    const fresh = y.new_hectares === null ? "" : y.new_hectares.toFixed(2);
    tr.append(amber.el("td", {}, year), amber.el("td", {}, y.tiles), amber.el("td", {}, y.flagged), amber.el("td", {}, y.hectares.toFixed(2)), amber.el("td", {}, fresh));
    years.append(tr);
  }
  const notice = document.getElementById("demo-notice");
  notice.textContent = s.demo ? amber.demoNotice : "";
  notice.classList.toggle("hidden", !s.demo);
  const synthetic = document.getElementById("synthetic-notice");
  synthetic.textContent = s.synthetic ? `SYNTHETIC: ${s.synthetic} generated detections (amberscan survey-fixture), for measuring the map at survey scale; not findings.` : "";
  synthetic.classList.toggle("hidden", !s.synthetic);
}

// The sample-based area estimate (issue 28) of the newest sampling design of the vintage and
// model shown (a new-damage design when the change view shows new damage), or none.
function estimateQuery() {
  const params = new URLSearchParams({ year: document.getElementById("year").value, limit: "1" });
  const model = document.getElementById("model").value;
  if (model) params.set("model", model);
  const fresh = document.getElementById("change").value === "new" && document.getElementById("year").value;
  params.set("kind", fresh ? "change" : "vintage");
  return "/api/area/designs?" + params.toString();
}

function fillEstimate(answer) {
  const box = document.getElementById("area-estimate");
  const design = answer.designs[0];
  box.classList.toggle("hidden", !design);
  document.body.dataset.areaDesign = design ? String(design.id) : "";
  if (!design) return;
  const e = design.estimate;
  const m = e.mining_ha;
  const what = design.kind === "change" ? `new mining ${design.year_before}–${design.year}` : "mining";
  const judged = `${design.reviewed} of ${design.sampled} sample tiles judged`;
  let text;
  if (!m) text = `Sample-based estimate: not yet (${judged})`;
  else if (m.se === null) text = `Sample-based ${what}: ${m.estimate.toFixed(2)} ha, no interval yet (${judged})`;
  else text = `Sample-based ${what}: ${m.estimate.toFixed(2)} ± ${(m.high - m.estimate).toFixed(2)} ha (95 % CI ${m.low.toFixed(2)} – ${m.high.toFixed(2)}; ${judged})`;
  document.getElementById("area-estimate-text").textContent = text;
  document.getElementById("area-estimate-link").href = `/area/${design.id}`;
}

function fillSelect(id, values) {
  const select = document.getElementById(id);
  const current = select.value;
  while (select.options.length > 1) select.remove(1);
  for (const v of values) select.append(amber.el("option", { value: v }, v));
  select.value = values.includes(current) ? current : "";
}

function rendered() {
  // Counts of what is drawn now, for people and tests: a feature near a tile edge is drawn from
  // each vector tile that holds it, so scan tiles are counted by id.
  const features = (layer) => state.map.queryRenderedFeatures({ layers: [layer] });
  const tiles = (layer) => new Set(features(layer).map((f) => f.properties.tile_id)).size;
  document.body.dataset.cells = String(features("cells").length);
  document.body.dataset.detections = String(tiles("detections"));
  document.body.dataset.damage = String(tiles("damage"));
  document.body.dataset.zoom = state.map.getZoom().toFixed(2);
}

// The map was moved or its data changed: not settled until it has loaded what that asks for.
function unsettle() {
  document.body.dataset.idle = "0";
  state.settling = true;
}

// The map has loaded and drawn what it was last asked for: the counts of what is drawn, and
// body[data-idle] = "1" for tests.
function settled() {
  // A refresh still fetching its summary has not asked the map for its new data yet: an "idle"
  // meanwhile is the old view's.
  if (state.refreshing) return;
  state.settling = false;
  rendered();
  document.body.dataset.idle = "1";
  if (document.body.dataset.ready !== "1") {
    document.body.dataset.renderedMs = String(Math.round(performance.now()));
    document.body.dataset.ready = "1";
  }
}

async function refresh() {
  const params = filters();
  document.getElementById("change").disabled = !document.getElementById("year").value;
  state.refreshing += 1;
  unsettle();
  let s, estimate;
  try {
    [s, estimate] = await Promise.all([amber.getJSON("/api/summary?" + params.toString()), amber.getJSON(estimateQuery())]);
  } finally {
    state.refreshing -= 1;
  }
  fillSummary(s);
  fillEstimate(estimate);
  for (const format of ["geojson", "csv", "gpkg", "fgb"]) {
    document.getElementById("export-" + format).href = `/api/export.${format}?` + params.toString();
  }
  state.version += 1;
  unsettle();
  state.map.getSource("detections").setTiles([tileUrl()]);
  state.map.getSource("exclusions").setData(`${location.origin}/api/exclusions?v=${state.version}`);
  state.map.getSource("scanned").setTiles([scannedUrl(document.getElementById("year").value)]);
  saveLink();
  return s;
}

async function main() {
  document.body.dataset.scriptMs = String(Math.round(performance.now()));
  amber.initToken();
  const [config, s] = await Promise.all([amber.getJSON("/api/config"), amber.getJSON("/api/summary")]);
  state.config = config;
  fillSelect("year", s.years);
  fillSelect("model", s.models);
  fillSelect("before", s.years);
  // The permalink's state, where the page offers it (a vintage or model no longer there is dropped).
  const link = state.link;
  for (const id of permalink.FILTERS) fillFromLink(id, link.filters[id] || "");
  fillFromLink("before", link.before);
  for (const group of permalink.LAYERS) document.getElementById("layer-" + group).checked = link.layers.includes(group);
  document.getElementById("change").disabled = !document.getElementById("year").value;
  const filtered = filters().toString();
  const [shown, estimate] = await Promise.all([filtered ? amber.getJSON("/api/summary?" + filtered) : s, amber.getJSON(estimateQuery())]);
  const options = { container: "map", style: styleShown(state.config), attributionControl: { compact: true }, maxZoom: 19, fadeDuration: 0 };
  // ?bbox=W,S,E,N (an alert's map link) fits the map to it; else the permalink's view; else the detections' extent.
  const asked = (new URLSearchParams(location.search).get("bbox") || "").split(",").map(Number);
  const bbox = asked.length === 4 && asked.every(Number.isFinite) ? asked : null;
  const extent = bbox || (link.view ? null : s.extent);
  if (extent) options.bounds = [[extent[0], extent[1]], [extent[2], extent[3]]];
  else if (link.view) {
    options.center = link.view.center;
    options.zoom = link.view.zoom;
  } else options.center = [26.5, 50.8];
  options.fitBoundsOptions = { padding: 20 };
  if (!extent && !link.view) options.zoom = 9;
  state.map = new maplibregl.Map(options);
  window.amberMap = state.map;
  unsettle();
  state.map.addControl(new maplibregl.NavigationControl({ showCompass: false }));
  state.map.on("click", "detections", (e) => {
    const p = e.features[0].properties;
    state.popup = new maplibregl.Popup({ maxWidth: "320px" }).setLngLat(e.lngLat).setDOMContent(popupOf(p)).addTo(state.map);
  });
  state.map.on("click", "cells", (e) => state.map.flyTo({ center: e.lngLat, zoom: Math.max(state.map.getZoom() + 3, state.config.detail_zoom) }));
  for (const layer of ["detections", "cells"]) {
    state.map.on("mouseenter", layer, () => { state.map.getCanvas().style.cursor = "pointer"; });
    state.map.on("mouseleave", layer, () => { state.map.getCanvas().style.cursor = ""; });
  }
  state.map.on("load", () => { document.body.dataset.loadMs = String(Math.round(performance.now())); });
  state.map.on("idle", settled);
  // MapLibre fires "idle" only at the end of a frame, and a reload that finishes without asking
  // for one more (seen with new tile URLs and the exclusions reloaded unchanged) leaves the map
  // loaded and silent; so look as well. loaded() is false from the moment a move or new data is
  // asked for until every source in view has loaded it.
  setInterval(() => { if (state.settling && state.map.loaded() && !state.map.isMoving()) settled(); }, 250);
  state.map.on("movestart", unsettle);
  state.map.on("moveend", saveLink);
  fillSummary(shown);
  fillEstimate(estimate);
  for (const id of ["year", "model", "review", "change"]) document.getElementById(id).addEventListener("change", () => refresh().catch((e) => amber.status(e.message, true)));
  for (const group of permalink.LAYERS) {
    document.getElementById("layer-" + group).addEventListener("change", () => {
      applyLayers();
      saveLink();
    });
  }
  state.swipe = new Swipe(maplibregl, state.map, state.config, saveLink);
  if (link.before && document.getElementById("before").value) state.swipe.open(link.before, link.swipe);
  document.getElementById("before").addEventListener("change", (e) => {
    state.swipe.open(e.target.value);
    saveLink();
  });
  saveLink();
}

function fillFromLink(id, value) {
  const select = document.getElementById(id);
  if ([...select.options].some((o) => o.value === value)) select.value = value;
}

main().catch((e) => amber.status(e.message, true));
