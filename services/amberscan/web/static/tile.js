"use strict";

// The tile debugger (/tile/ID) and the labelling page (/label/ID) share this page and script;
// the path says which one it is.
const mode = location.pathname.startsWith("/label/") ? "label" : "tile";
document.title = mode === "label" ? "amberscan labelling" : "amberscan tile debugger";
document.getElementById("title").textContent = mode === "label" ? "Label superpixels" : "Tile debugger";
document.getElementById("other-view").textContent = mode === "label" ? "tile debugger" : "labelling page";
const tileId = decodeURIComponent(location.pathname.split("/").pop());
const query = new URLSearchParams(location.search);
// A blind labelling page (`?blind=1`, from a blind area design) shows no score, flag or verdict
// of the model: the superpixels are marked on what the imagery shows.
const blind = mode === "label" && query.get("blind") === "1";
document.body.classList.toggle("blind", blind);
let detail = null;
let selected = null;

function apiQuery() {
  const q = new URLSearchParams();
  if (detail) {
    q.set("imagery_date", detail.imagery_date);
    q.set("model", detail.model_version);
  } else {
    if (query.has("imagery_date")) q.set("imagery_date", query.get("imagery_date"));
    if (query.get("model")) q.set("model", query.get("model"));
  }
  return q;
}

function reloadImage() {
  const q = apiQuery();
  q.set("view", mode === "label" ? "labels" : "scores");
  q.set("t", String(Date.now()));
  document.getElementById("overlay").src = `/api/tiles/${encodeURIComponent(tileId)}/overlay.png?${q}`;
}

function fillFacts(d) {
  const body = document.querySelector("#facts tbody");
  body.replaceChildren();
  const rows = [
    ["tile", d.tile_id],
    ["rule outcome", d.rule],
    ["imagery date", d.imagery_date || "undated"],
    ["model version", d.model_version],
    ["backbone version", d.backbone_version],
    d.threshold_source === "registry"
      ? ["score threshold", `${d.threshold} (classifier ${d.model_version})`]
      : ["score threshold (implied)", d.positives > 0 ? `${d.threshold} (lowest positive score)` : `above ${d.max_score} (no positive superpixel)`],
    ["hectares", d.hectares.toFixed(2)],
    ["provider", d.provider],
    ["scan", d.scan_id],
    ["review", d.review + (d.reviewer ? " by " + d.reviewer + " at " + d.reviewed_at : "")],
  ];
  const shown = blind ? new Set(["tile", "imagery date", "provider"]) : null;
  for (const [k, v] of rows) {
    if (shown && !shown.has(k)) continue;
    const tr = amber.el("tr", { "data-key": k });
    tr.append(amber.el("th", {}, k), amber.el("td", {}, v));
    body.append(tr);
  }
  const notice = document.getElementById("demo-notice");
  notice.textContent = d.demo ? amber.demoNotice : "";
  notice.classList.toggle("hidden", !d.demo);
  const q = new URLSearchParams({ imagery_date: d.imagery_date, model: d.model_version });
  document.getElementById("other-view").href = `/${mode === "tile" ? "label" : "tile"}/${encodeURIComponent(d.tile_id)}?${q}`;
  if (d.problem) amber.status(d.problem, true);
}

function fillSuperpixels(d) {
  const body = document.querySelector("#superpixels tbody");
  body.replaceChildren();
  for (const sp of d.superpixels) {
    const tr = amber.el("tr", { "data-segment": String(sp.index) });
    if (sp.index === selected) tr.style.background = "#ffe8a3";
    tr.append(amber.el("td", {}, sp.index));
    if (!blind) tr.append(amber.el("td", {}, sp.score.toFixed(3)), amber.el("td", {}, sp.positive ? "yes" : ""));
    tr.append(amber.el("td", {}, sp.label.replace("_", " ")), amber.el("td", {}, sp.area_px));
    body.append(tr);
  }
}

const ACTIONS = { confirmed: "confirmed", rejected: "rejected", cleared: "review cleared", mining: "labelled mining", not_mining: "labelled not mining", label_cleared: "label cleared" };

async function loadHistory(d) {
  const q = new URLSearchParams({ imagery_date: d.imagery_date, model: d.model_version });
  const h = await amber.getJSON(`/api/tiles/${encodeURIComponent(d.tile_id)}/history?${q}`);
  const body = document.querySelector("#history tbody");
  body.replaceChildren();
  for (const e of h.events) {
    const tr = amber.el("tr", { "data-action": e.action });
    const what = (ACTIONS[e.action] || e.action) + (e.segment === null ? "" : ` (superpixel ${e.segment})`);
    tr.append(amber.el("td", {}, e.at.replace("T", " ").slice(0, 19)), amber.el("td", {}, e.reviewer), amber.el("td", {}, what), amber.el("td", {}, e.note));
    body.append(tr);
  }
  if (!h.events.length) {
    const tr = amber.el("tr");
    tr.append(amber.el("td", { colspan: "4" }, "no review yet"));
    body.append(tr);
  }
}

async function load() {
  // The previous detail stays in place while this one loads: a click in between (review, relabel)
  // still knows its tile, imagery date and model. Not ready until it is shown: a label or review
  // saved is only on the page once this reload has filled it.
  document.body.dataset.ready = "0";
  const d = await amber.getJSON(`/api/tiles/${encodeURIComponent(tileId)}?${apiQuery()}`);
  detail = d;
  fillFacts(d);
  fillSuperpixels(d);
  reloadImage();
  await loadHistory(d);
  document.body.dataset.ready = "1";
}

async function review(verdict, markNotMining = false) {
  if (!detail) return amber.status("the tile is still loading", true);
  try {
    const body = { tile_id: detail.tile_id, imagery_date: detail.imagery_date, model_version: detail.model_version, verdict, reviewer: document.getElementById("reviewer").value };
    if (markNotMining) body.mark_not_mining = true;
    const saved = await amber.post("/api/reviews", body);
    const marked = saved.marked_not_mining && saved.marked_not_mining.length ? `; superpixels ${saved.marked_not_mining.join(", ")} marked not mining` : "";
    amber.status("review saved: " + verdict + marked);
    await load();
  } catch (e) {
    amber.status(e.message, true);
  }
}

async function label(segment, value) {
  if (!detail) return amber.status("the tile is still loading", true);
  try {
    await amber.post("/api/labels", { tile_id: detail.tile_id, imagery_date: detail.imagery_date, model_version: detail.model_version, segment, label: value, reviewer: document.getElementById("reviewer").value });
    amber.status(`superpixel ${segment}: ${value.replace("_", " ")}`);
    await load();
  } catch (e) {
    amber.status(e.message, true);
  }
}

function controls() {
  const box = document.getElementById("controls");
  if (mode === "tile") {
    for (const [verdict, text] of [["confirmed", "Confirm detection"], ["rejected", "Reject detection"], ["clear", "Clear review"]]) {
      const b = amber.el("button", { type: "button", id: "review-" + verdict, class: "write" }, text);
      b.addEventListener("click", () => review(verdict));
      box.append(b);
    }
    const reject = amber.el("button", { type: "button", id: "reject-and-mark", class: "write", title: "for amberscan train --from-reviews" }, "Reject and mark its positive superpixels not mining");
    reject.addEventListener("click", () => review("rejected", true));
    box.append(reject);
    box.append(amber.el("p", { class: "write" }, "Click a superpixel on the image to select it, then relabel it:"));
  } else {
    box.append(amber.el("p", { class: "write" }, "Choose a class, then click superpixels on the image."));
  }
  const group = amber.el("div", { id: "label-buttons", class: "write" });
  for (const [value, text] of [["mining", "mining"], ["not_mining", "not mining"], ["clear", "clear label"]]) {
    const id = "class-" + value;
    const radio = amber.el("input", { type: "radio", name: "class", id, value });
    if (value === "mining") radio.checked = true;
    group.append(radio, amber.el("label", { for: id }, text));
  }
  if (mode === "tile") {
    const apply = amber.el("button", { type: "button", id: "relabel" }, "Relabel selected superpixel");
    apply.addEventListener("click", () => {
      if (selected === null) return amber.status("select a superpixel first", true);
      label(selected, document.querySelector("input[name=class]:checked").value);
    });
    group.append(apply);
  }
  box.append(group);
  box.append(amber.el("div", { id: "selection" }));
}

document.getElementById("overlay").addEventListener("click", async (event) => {
  if (!detail || !detail.size) return;
  const img = event.currentTarget;
  // The tile's own size, not naturalWidth: that is 0 while a reloaded overlay is loading.
  const [width, height] = detail.size;
  const col = Math.min(width - 1, Math.floor((event.offsetX * width) / img.clientWidth));
  const row = Math.min(height - 1, Math.floor((event.offsetY * height) / img.clientHeight));
  try {
    const q = apiQuery();
    q.set("row", String(row));
    q.set("col", String(col));
    const hit = await amber.getJSON(`/api/tiles/${encodeURIComponent(tileId)}/segment?${q}`);
    selected = hit.segment;
    document.getElementById("selection").textContent = `superpixel ${hit.segment}: ${blind ? "" : `score ${hit.score}, `}label ${hit.label || "none"}`;
    if (mode === "label" && document.body.dataset.writes !== "1") amber.status("labelling needs the server's token (the Token field)", true);
    else if (mode === "label") await label(hit.segment, document.querySelector("input[name=class]:checked").value);
    else fillSuperpixels(detail);
  } catch (e) {
    amber.status(e.message, true);
  }
});

amber.initToken();
controls();
load().catch((e) => amber.status(e.message, true));
