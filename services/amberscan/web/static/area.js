"use strict";

// /area draws (or resumes) a sampling design; /area/ID steps through its sample in review order.
// Each verdict is a review (POST /api/reviews); the estimate comes back from
// GET /api/area/designs/ID, per reporting unit from POST /api/area/designs/ID/estimate. A change
// design (new damage between two vintages) shows each tile at both dates; its judgement is the
// two dates' reviews: new mining (later confirmed, earlier rejected), there before (both
// confirmed), none at the later date (later rejected).
const designId = location.pathname.split("/")[2] || "";
let run = null;
let units = null;

const fmt = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const ci = (i, d = 2) => (i && i.low !== null ? `${fmt(i.low, d)} – ${fmt(i.high, d)}` : "–");

function describe(e) {
  if (!e.mining_ha) return `no estimate yet: ${run.report.reviewed} of ${run.report.sampled} sampled tiles judged (every stratum needs one)`;
  const m = e.mining_ha;
  const what = run.report.kind === "change" ? `new mining ${run.report.year_before}–${run.report.year}` : "mining";
  return `${what} ${fmt(m.estimate)} ha (95 % CI ${ci(m)}), mapped ${fmt(e.mapped_ha)} ha; ${run.report.reviewed} of ${run.report.sampled} judged`;
}

function row(table, cells) {
  const tr = amber.el("tr");
  for (const c of cells) tr.append(amber.el("td", {}, c));
  table.append(tr);
  return tr;
}

function showFigures() {
  const e = units ? units.estimate : run.report.estimate;
  document.getElementById("estimate").textContent = describe(e);
  const figures = document.querySelector("#figures tbody");
  figures.replaceChildren();
  for (const [name, i, d] of [["mining area (ha)", e.mining_ha, 2], ["share of the region", e.proportion, 4], ["user's accuracy", e.users_accuracy, 3], ["producer's accuracy", e.producers_accuracy, 3], ["overall accuracy", e.overall_accuracy, 3]]) {
    row(figures, [name, i ? fmt(i.estimate, d) : "–", i && i.se !== null ? `SE ${fmt(i.se, d)}` : "", `95 % CI ${ci(i, d)}`]);
  }
  row(figures, ["mapped (damaged-area polygons, ha)", fmt(e.mapped_ha), "", `flagged tiles ${fmt(e.mapped_tiles_ha)} ha of ${fmt(e.region_ha)} ha`]);
  const body = document.querySelector("#unit-table tbody");
  body.replaceChildren();
  for (const u of units ? units.units : []) {
    const m = u.mining_ha;
    const tr = row(body, [u.name, m ? fmt(m.estimate) : "–", ci(m), fmt(u.mapped_ha), u.users_accuracy ? fmt(u.users_accuracy.estimate, 3) : "–", u.producers_accuracy ? fmt(u.producers_accuracy.estimate, 3) : "–", String(u.reviewed)]);
    tr.dataset.unit = u.name;
  }
}

function show() {
  showFigures();
  const strata = document.querySelector("#strata tbody");
  strata.replaceChildren();
  for (const s of run.report.strata) row(strata, [s.name, String(s.tiles), fmt(s.area_ha), String(s.sampled), String(s.reviewed)]);
  const body = document.querySelector("#sample tbody");
  body.replaceChildren();
  run.report.tiles.forEach((t, i) => {
    const tr = row(body, [String(i + 1), t.tile_id, t.imagery_date || "undated", t.review, t.reference_ha === null ? "" : fmt(t.reference_ha)]);
    tr.dataset.index = String(i);
    if (i === run.index) tr.className = "current";
    tr.addEventListener("click", () => run.go(i));
  });
  if (!run.report.tiles.length) {
    document.getElementById("position").textContent = "the sample is empty";
    document.body.dataset.ready = "1";
    return;
  }
  const t = run.report.tiles[run.index];
  document.getElementById("position").textContent = `tile ${run.index + 1} of ${run.report.tiles.length}: ${t.tile_id}, ${t.review}`;
  const q = new URLSearchParams({ imagery_date: t.imagery_date, model: t.model_version });
  const labelling = new URLSearchParams(q);
  if (run.report.blind) labelling.set("blind", "1");
  document.getElementById("label").href = `/label/${encodeURIComponent(t.tile_id)}?${labelling}`;
  // A blind design shows the imagery only, not the map's scores.
  q.set("view", run.report.blind ? "image" : "scores");
  q.set("size", "640");
  const img = document.getElementById("tile");
  img.onerror = () => amber.status(`tile ${t.tile_id}: no stored imagery to show`, true);
  img.src = `/api/tiles/${encodeURIComponent(t.tile_id)}/overlay.png?${q}`;
  const change = run.report.kind === "change";
  document.getElementById("before-figure").classList.toggle("hidden", !change);
  document.getElementById("change-buttons").classList.toggle("hidden", !change);
  document.getElementById("vintage-buttons").classList.toggle("hidden", change);
  document.getElementById("after-caption").textContent = change ? `later: ${t.imagery_date}` : "";
  if (change) {
    q.set("imagery_date", t.imagery_date_before);
    document.getElementById("tile-before").src = `/api/tiles/${encodeURIComponent(t.tile_id)}/overlay.png?${q}`;
    document.getElementById("before-caption").textContent = `earlier: ${t.imagery_date_before}`;
  }
  document.body.dataset.ready = "1";
}

// The design and its estimate, and again the estimate per reporting unit when units were sent.
async function fetchReport() {
  const report = await amber.getJSON(`/api/area/designs/${encodeURIComponent(designId)}`);
  if (units) units = { ...(await amber.post(`/api/area/designs/${encodeURIComponent(designId)}/estimate`, { units: units.sent })), sent: units.sent };
  return report;
}

// A vintage design's judgement is one review; a change design's, the reviews of both dates
// (`before`: the earlier date's verdict, or null when the later one is rejected).
async function judge(verdict, before = null) {
  await run.judge(async (t) => {
    const body = { tile_id: t.tile_id, imagery_date: t.imagery_date, model_version: t.model_version, verdict, reviewer: document.getElementById("reviewer").value };
    await amber.post("/api/reviews", body);
    if (before) await amber.post("/api/reviews", { ...body, imagery_date: t.imagery_date_before, verdict: before });
    return `tile ${t.tile_id}: ${verdict}${before ? `, earlier ${before}` : ""}`;
  });
}

async function uploadUnits(file) {
  try {
    document.body.dataset.ready = "0";
    const sent = JSON.parse(await file.text());
    const answer = await amber.post(`/api/area/designs/${encodeURIComponent(designId)}/estimate`, { units: sent });
    units = { ...answer, sent };
    show();
  } catch (e) {
    amber.status(e.message, true);
    document.body.dataset.ready = "1";
  }
}

amber.initToken();
if (!designId) {
  amber.drawSample("/api/area/designs", "/area", () => ({ bbox: document.getElementById("bbox").value, year_before: document.getElementById("year_before").value, n: Number(document.getElementById("n").value), seed: Number(document.getElementById("seed").value), blind: document.getElementById("blind").checked, reviewer: document.getElementById("reviewer").value }));
} else {
  document.getElementById("title").textContent = `Area estimate ${designId}`;
  document.getElementById("confirm").addEventListener("click", () => judge("confirmed"));
  document.getElementById("reject").addEventListener("click", () => judge("rejected"));
  document.getElementById("new-damage").addEventListener("click", () => judge("confirmed", "rejected"));
  document.getElementById("old-damage").addEventListener("click", () => judge("confirmed", "confirmed"));
  document.getElementById("no-damage").addEventListener("click", () => judge("rejected"));
  document.getElementById("units").addEventListener("change", (ev) => { if (ev.target.files.length) uploadUnits(ev.target.files[0]); });
  run = amber.sampleRun(fetchReport, show);
}
