"use strict";

// One point per superpixel: its feature vector projected to 2-D (see /api/explore).
const PALETTES = {
  outcome: {
    TP: ["#6a040f", "labelled mining, predicted mining (TP)"],
    FN: ["#7209b7", "labelled mining, predicted not (FN)"],
    FP: ["#f4a261", "labelled not mining, predicted mining (FP)"],
    TN: ["#2a9d8f", "labelled not mining, predicted not (TN)"],
    positive: ["#d62828", "unlabelled, predicted mining"],
    negative: ["#8ecae6", "unlabelled, predicted not mining"],
  },
  class: {
    mining: ["#d62828", "labelled mining"],
    not_mining: ["#2a9d8f", "labelled not mining"],
    unlabelled: ["#adb5bd", "unlabelled"],
  },
};
let data = null;

function colourBy() {
  return document.getElementById("colour").value;
}

function legend() {
  const box = document.getElementById("legend");
  box.replaceChildren();
  const palette = PALETTES[colourBy()];
  const counts = (data && data.counts[colourBy()]) || {};
  for (const [k, [colour, name]] of Object.entries(palette)) {
    const row = amber.el("div");
    const swatch = amber.el("i");
    swatch.style.background = colour;
    row.append(swatch, document.createTextNode(`${name}: ${counts[k] || 0}`));
    box.append(row);
  }
}

function showTip(p, event) {
  const tip = document.getElementById("tooltip");
  tip.replaceChildren();
  if (p.image) tip.append(amber.el("img", { src: p.image, alt: "superpixel crop" }));
  if (data.source === "labelled") {
    tip.append(amber.el("div", {}, p.name));
    tip.append(amber.el("div", {}, "labelled crop: no tile debugger for these"));
  } else {
    tip.append(amber.el("div", {}, `tile ${p.tile_id}${p.demo ? " (DEMO)" : ""} · superpixel ${p.segment_index}`));
    tip.append(amber.el("div", {}, p.imagery_date || "undated"));
  }
  tip.append(amber.el("div", {}, `${PALETTES.outcome[p.outcome][1]} · score ${p.score.toFixed(3)}`));
  tip.style.left = event.pageX + 14 + "px";
  tip.style.top = event.pageY + 14 + "px";
  tip.classList.remove("hidden");
}

function paint() {
  legend();
  const plot = document.getElementById("plot");
  plot.replaceChildren();
  const tip = document.getElementById("tooltip");
  const by = colourBy();
  for (const p of data.points) {
    const attrs = { class: `pt pt-${p.outcome} cls-${p.class}`, title: "" };
    if (p.link) attrs.href = p.link;
    const dot = amber.el(p.link ? "a" : "span", attrs);
    dot.style.left = 10 + p.x * 620 + "px";
    dot.style.top = 10 + (1 - p.y) * 460 + "px";
    dot.style.background = PALETTES[by][by === "class" ? p.class : p.outcome][0];
    dot.addEventListener("mouseenter", (e) => showTip(p, e));
    dot.addEventListener("mouseleave", () => tip.classList.add("hidden"));
    plot.append(dot);
  }
}

async function draw() {
  const params = new URLSearchParams();
  const source = document.getElementById("source").value;
  const scan = document.getElementById("scan_id").value.trim();
  params.set("source", source);
  if (source === "scan" && scan) params.set("scan_id", scan);
  history.replaceState(null, "", "/explore?" + params);
  document.body.dataset.ready = "";
  amber.status(source === "labelled" ? "computing features of the labelled crops…" : "reading the scan's features…");
  data = await amber.getJSON("/api/explore?" + params);
  amber.status("");
  if (data.scan_id) document.getElementById("scan_id").value = data.scan_id;
  const hint = data.source === "labelled" ? "Hover for the crop." : "Hover for the crop, click to open the tile debugger.";
  document.getElementById("about").textContent = data.points.length ? `${data.about}. ${hint}` : data.about;
  document.getElementById("notes").textContent = data.notes.join("; ");
  paint();
  document.body.dataset.ready = "1";
}

const initial = new URLSearchParams(location.search);
document.getElementById("source").value = initial.get("source") === "labelled" ? "labelled" : "scan";
document.getElementById("scan_id").value = initial.get("scan_id") || "";
if (initial.get("colour") === "class") document.getElementById("colour").value = "class";
document.getElementById("colour").addEventListener("change", () => data && paint());
document.getElementById("apply").addEventListener("click", () => draw().catch((e) => amber.status(e.message, true)));
draw().catch((e) => amber.status(e.message, true));
