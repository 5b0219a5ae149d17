"use strict";

// /audit draws a sample; /audit/ID steps through it. Each verdict is a review (POST /api/reviews),
// so the estimate and its 95 % interval come back from GET /api/audits/ID after every step.
const auditId = location.pathname.split("/")[2] || "";
let report = null;
let index = 0;

function describe(r) {
  if (r.precision === null) return `precision: no tile judged yet (${r.sampled} sampled)`;
  const [low, high] = r.ci95;
  return `precision ${r.precision.toFixed(3)} (95 % CI ${low.toFixed(3)}–${high.toFixed(3)}), ${r.reviewed} of ${r.sampled} judged: ${r.confirmed} confirmed, ${r.rejected} rejected`;
}

function show() {
  document.getElementById("estimate").textContent = describe(report);
  const body = document.querySelector("#sample tbody");
  body.replaceChildren();
  report.tiles.forEach((t, i) => {
    const tr = amber.el("tr", { "data-index": String(i), class: i === index ? "current" : "" });
    tr.append(amber.el("td", {}, i + 1), amber.el("td", {}, t.tile_id), amber.el("td", {}, t.imagery_date || "undated"), amber.el("td", {}, t.review));
    tr.addEventListener("click", () => { index = i; show(); });
    body.append(tr);
  });
  if (!report.tiles.length) {
    document.getElementById("position").textContent = "the sample is empty: no flagged tile matched";
    document.body.dataset.ready = "1";
    return;
  }
  const t = report.tiles[index];
  document.getElementById("position").textContent = `tile ${index + 1} of ${report.tiles.length}: ${t.tile_id}, ${t.review}`;
  const q = new URLSearchParams({ imagery_date: t.imagery_date, model: t.model_version });
  document.getElementById("debugger").href = `/tile/${encodeURIComponent(t.tile_id)}?${q}`;
  q.set("view", "scores");
  q.set("size", "640");
  document.getElementById("tile").src = `/api/tiles/${encodeURIComponent(t.tile_id)}/overlay.png?${q}`;
  amber.getJSON(`/api/tiles/${encodeURIComponent(t.tile_id)}?${new URLSearchParams({ imagery_date: t.imagery_date, model: t.model_version })}`)
    .then((d) => {
      const facts = document.querySelector("#facts tbody");
      facts.replaceChildren();
      for (const [k, v] of [["rule outcome", d.rule], ["hectares", d.hectares.toFixed(2)], ["model", d.model_version], ["review", d.review + (d.reviewer ? " by " + d.reviewer : "")]]) {
        const tr = amber.el("tr");
        tr.append(amber.el("th", {}, k), amber.el("td", {}, v));
        facts.append(tr);
      }
      if (d.demo) amber.status(amber.demoNotice);
    })
    .catch((e) => amber.status(e.message, true))
    .finally(() => { document.body.dataset.ready = "1"; });
}

async function load() {
  report = await amber.getJSON(`/api/audits/${encodeURIComponent(auditId)}`);
  index = Math.min(index, Math.max(0, report.tiles.length - 1));
  show();
}

async function judge(verdict) {
  const t = report.tiles[index];
  if (!t) return;
  const body = { tile_id: t.tile_id, imagery_date: t.imagery_date, model_version: t.model_version, verdict, reviewer: document.getElementById("reviewer").value };
  if (verdict === "rejected" && document.getElementById("mark").checked) body.mark_not_mining = true;
  try {
    document.body.dataset.ready = "0";
    const saved = await amber.post("/api/reviews", body);
    const marked = saved.marked_not_mining.length ? `, ${saved.marked_not_mining.length} superpixels marked not mining` : "";
    amber.status(`tile ${t.tile_id}: ${verdict}${marked}`);
    const next = report.tiles.findIndex((x, i) => i > index && x.review === "unreviewed");
    await load();
    if (next >= 0) { index = next; show(); }
  } catch (e) {
    amber.status(e.message, true);
    document.body.dataset.ready = "1";
  }
}

amber.initToken();
if (!auditId) {
  amber.drawSample("/api/audits", "/audit", () => ({ n: Number(document.getElementById("n").value), reviewer: document.getElementById("reviewer").value }));
} else {
  document.getElementById("run").classList.remove("hidden");
  document.getElementById("title").textContent = `Precision audit ${auditId}`;
  document.getElementById("confirm").addEventListener("click", () => judge("confirmed"));
  document.getElementById("reject").addEventListener("click", () => judge("rejected"));
  document.getElementById("previous").addEventListener("click", () => { index = Math.max(0, index - 1); show(); });
  document.getElementById("next").addEventListener("click", () => { index = Math.min(report.tiles.length - 1, index + 1); show(); });
  load().catch((e) => amber.status(e.message, true));
}
