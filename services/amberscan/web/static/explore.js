"use strict";

// One point per detection: its superpixel-score profile projected to 2-D (see /api/explore).
const COLOURS = { TP: "#6a040f", FP: "#adb5bd", FN: "#7209b7", TN: "#2a9d8f", flagged: "#d62828", unflagged: "#8ecae6" };
const NAMES = { TP: "confirmed, flagged (TP)", FP: "rejected, flagged (FP)", FN: "confirmed, not flagged (FN)", TN: "rejected, not flagged (TN)", flagged: "flagged, unreviewed", unflagged: "not flagged, unreviewed" };

function legend() {
  const box = document.getElementById("legend");
  for (const [k, colour] of Object.entries(COLOURS)) {
    const row = amber.el("div");
    const swatch = amber.el("i");
    swatch.style.background = colour;
    row.append(swatch, document.createTextNode(NAMES[k]));
    box.append(row);
  }
}

function showTip(p, event) {
  const tip = document.getElementById("tooltip");
  tip.replaceChildren();
  const q = new URLSearchParams({ imagery_date: p.imagery_date, model: p.model_version, size: "128" });
  tip.append(amber.el("img", { src: `/api/tiles/${encodeURIComponent(p.tile_id)}/overlay.png?${q}`, alt: "tile" }));
  tip.append(amber.el("div", {}, `tile ${p.tile_id}${p.demo ? " (DEMO)" : ""}`));
  tip.append(amber.el("div", {}, `${p.imagery_date || "undated"} · ${p.model_version}`));
  tip.append(amber.el("div", {}, `${NAMES[p.outcome]} · max score ${p.max_score.toFixed(3)}`));
  tip.style.left = event.pageX + 14 + "px";
  tip.style.top = event.pageY + 14 + "px";
  tip.classList.remove("hidden");
}

async function draw() {
  const params = new URLSearchParams();
  for (const id of ["year", "model"]) {
    const v = document.getElementById(id).value.trim();
    if (v) params.set(id, v);
  }
  const data = await amber.getJSON("/api/explore?" + params);
  document.getElementById("about").textContent = `${data.points.length} detections; ${data.method} of ${data.source}. Hover for the tile, click to open the tile debugger.`;
  const plot = document.getElementById("plot");
  plot.replaceChildren();
  const tip = document.getElementById("tooltip");
  for (const p of data.points) {
    const dot = amber.el("a", { class: "pt pt-" + p.outcome, href: `/tile/${encodeURIComponent(p.tile_id)}?${p.query}`, title: "" });
    dot.style.left = 10 + p.x * 620 + "px";
    dot.style.top = 10 + (1 - p.y) * 460 + "px";
    dot.style.background = COLOURS[p.outcome];
    dot.addEventListener("mouseenter", (e) => showTip(p, e));
    dot.addEventListener("mouseleave", () => tip.classList.add("hidden"));
    plot.append(dot);
  }
  document.body.dataset.ready = "1";
}

legend();
document.getElementById("apply").addEventListener("click", () => draw().catch((e) => amber.status(e.message, true)));
draw().catch((e) => amber.status(e.message, true));
