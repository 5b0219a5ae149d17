"use strict";

const state = { layer: null, map: null, loaded: 0, popupOpen: false, stale: false };

function styleOf(p) {
  const weight = 1 + 3 * p.max_score;
  if (p.review === "confirmed") return { color: "#000", fillColor: "#6a040f", fillOpacity: 0.55, weight };
  if (p.review === "rejected") return { color: "#495057", fillColor: "#adb5bd", fillOpacity: 0.35, weight, dashArray: "4 4" };
  if (p.flagged) return { color: "#9d0208", fillColor: "#d62828", fillOpacity: 0.45, weight };
  const fill = p.max_score >= 0.5 ? "#f4a261" : "#2a9d8f";
  return { color: fill, fillColor: fill, fillOpacity: 0.25, weight };
}

function filters() {
  const params = new URLSearchParams();
  const year = document.getElementById("year").value;
  const model = document.getElementById("model").value;
  if (year) params.set("year", year);
  if (model) params.set("model", model);
  return params;
}

function popupOf(p) {
  const box = amber.el("div", { class: "popup" });
  const title = amber.el("strong", {}, "tile " + p.tile_id);
  box.append(title);
  if (p.demo) box.append(amber.el("span", { class: "demo-tag" }, "DEMO"));
  const rows = [
    ["verdict", p.flagged ? "FLAGGED" : "not flagged"],
    ["positives", `${p.positives} of ${p.segment_count} (rule: > ${p.min_positives})`],
    ["hectares", p.hectares.toFixed(2)],
    ["max score", p.max_score.toFixed(3)],
    ["imagery", p.imagery_date || "undated"],
    ["model", p.model_version],
    ["review", p.review + (p.reviewer ? " by " + p.reviewer : "")],
  ];
  const table = amber.el("table");
  for (const [k, v] of rows) {
    const tr = amber.el("tr");
    tr.append(amber.el("th", {}, k), amber.el("td", {}, v));
    table.append(tr);
  }
  box.append(table);
  const link = amber.el("a", { href: "/tile/" + encodeURIComponent(p.tile_id) + "?" + amber.tileQuery(p), class: "open-debugger" }, "open tile debugger");
  box.append(link);
  const buttons = amber.el("div");
  for (const verdict of ["confirmed", "rejected"]) {
    const b = amber.el("button", { type: "button", class: "review-" + verdict }, verdict === "confirmed" ? "confirm" : "reject");
    b.addEventListener("click", async () => {
      try {
        await amber.post("/api/reviews", { tile_id: p.tile_id, imagery_date: p.imagery_date, model_version: p.model_version, verdict });
        amber.status("review saved: " + verdict);
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

async function loadDetections() {
  const b = state.map.getBounds();
  const params = filters();
  params.set("bbox", [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(6)).join(","));
  params.set("limit", "1000");
  const features = [];
  let offset = 0;
  for (let page = 0; page < 20; page++) {
    params.set("offset", String(offset));
    const fc = await amber.getJSON("/api/detections?" + params.toString());
    features.push(...fc.features);
    if (fc.next_offset === null || fc.next_offset === undefined) break;
    offset = fc.next_offset;
  }
  if (state.layer) state.layer.remove();
  state.layer = L.geoJSON({ type: "FeatureCollection", features }, {
    style: (f) => ({ ...styleOf(f.properties), className: `det det-${f.properties.flagged ? "flagged" : "clear"} det-${f.properties.review}` }),
    onEachFeature: (f, layer) => layer.bindPopup(() => popupOf(f.properties)),
  }).addTo(state.map);
  state.loaded = features.length;
  document.body.dataset.detections = String(features.length);
  amber.status(`${features.length} detections in view`);
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
    ["flagged, unreviewed", s.reviews.unreviewed_flagged],
  ];
  for (const [k, v] of rows) {
    const tr = amber.el("tr", { "data-key": k });
    tr.append(amber.el("th", {}, k), amber.el("td", {}, v));
    body.append(tr);
  }
  const years = document.querySelector("#by-year tbody");
  years.replaceChildren();
  for (const [year, y] of Object.entries(s.by_year)) {
    const tr = amber.el("tr");
    tr.append(amber.el("td", {}, year), amber.el("td", {}, y.tiles), amber.el("td", {}, y.flagged), amber.el("td", {}, y.hectares.toFixed(2)));
    years.append(tr);
  }
  const notice = document.getElementById("demo-notice");
  notice.textContent = s.demo ? amber.demoNotice : "";
  notice.classList.toggle("hidden", !s.demo);
}

function fillSelect(id, values) {
  const select = document.getElementById(id);
  const current = select.value;
  while (select.options.length > 1) select.remove(1);
  for (const v of values) select.append(amber.el("option", { value: v }, v));
  select.value = values.includes(current) ? current : "";
}

async function refresh() {
  const params = filters();
  const s = await amber.getJSON("/api/summary?" + params.toString());
  fillSummary(s);
  document.getElementById("export-geojson").href = "/api/export.geojson?" + params.toString();
  document.getElementById("export-csv").href = "/api/export.csv?" + params.toString();
  await loadDetections();
  return s;
}

async function main() {
  amber.initToken();
  document.getElementById("token").addEventListener("change", () => amber.token());
  const config = await amber.getJSON("/api/config");
  state.map = L.map("map");
  L.tileLayer(config.tiles_url, { maxZoom: 20, maxNativeZoom: 18, attribution: "imagery: configured provider" }).addTo(state.map);
  const s = await amber.getJSON("/api/summary");
  fillSelect("year", s.years);
  fillSelect("model", s.models);
  if (s.extent) {
    state.map.fitBounds([[s.extent[1], s.extent[0]], [s.extent[3], s.extent[2]]], { padding: [20, 20] });
  } else {
    state.map.setView([50.8, 26.5], 9);
  }
  // Opening a popup near the edge pans the map; reloading then would replace the layer and close
  // the popup the user just opened, so a pan under an open popup reloads when it closes.
  const reload = () => loadDetections().catch((e) => amber.status(e.message, true));
  state.map.on("popupopen", () => { state.popupOpen = true; });
  state.map.on("popupclose", () => {
    state.popupOpen = false;
    if (state.stale) { state.stale = false; reload(); }
  });
  state.map.on("moveend", () => { if (state.popupOpen) state.stale = true; else reload(); });
  for (const id of ["year", "model"]) document.getElementById(id).addEventListener("change", () => refresh().catch((e) => amber.status(e.message, true)));
  await refresh();
  document.body.dataset.ready = "1";
}

main().catch((e) => amber.status(e.message, true));
