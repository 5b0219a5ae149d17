"use strict";

// /audit draws a sample; /audit/ID steps through it. Each verdict is a review (POST /api/reviews),
// so the estimate and its 95 % interval come back from GET /api/audits/ID after every step.
const auditId = location.pathname.split("/")[2] || "";
let run = null;

function describe(r) {
  if (r.precision === null) return `precision: no tile judged yet (${r.sampled} sampled)`;
  const [low, high] = r.ci95;
  return `precision ${r.precision.toFixed(3)} (95 % CI ${low.toFixed(3)}–${high.toFixed(3)}), ${r.reviewed} of ${r.sampled} judged: ${r.confirmed} confirmed, ${r.rejected} rejected`;
}

function show() {
  document.getElementById("estimate").textContent = describe(run.report);
  const body = document.querySelector("#sample tbody");
  body.replaceChildren();
  run.report.tiles.forEach((t, i) => {
    const tr = amber.el("tr", { "data-index": String(i), class: i === run.index ? "current" : "" });
    tr.append(amber.el("td", {}, i + 1), amber.el("td", {}, t.tile_id), amber.el("td", {}, t.imagery_date || "undated"), amber.el("td", {}, t.review));
    tr.addEventListener("click", () => run.go(i));
    body.append(tr);
  });
  if (!run.report.tiles.length) {
    document.getElementById("position").textContent = "the sample is empty: no flagged tile matched";
    document.body.dataset.ready = "1";
    return;
  }
  const t = run.report.tiles[run.index];
  document.getElementById("position").textContent = `tile ${run.index + 1} of ${run.report.tiles.length}: ${t.tile_id}, ${t.review}`;
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

async function judge(verdict) {
  await run.judge(async (t) => {
    const body = { tile_id: t.tile_id, imagery_date: t.imagery_date, model_version: t.model_version, verdict, reviewer: document.getElementById("reviewer").value };
    if (verdict === "rejected" && document.getElementById("mark").checked) body.mark_not_mining = true;
    const saved = await amber.post("/api/reviews", body);
    const marked = saved.marked_not_mining.length ? `, ${saved.marked_not_mining.length} superpixels marked not mining` : "";
    return `tile ${t.tile_id}: ${verdict}${marked}`;
  });
}

amber.initToken();
if (!auditId) {
  amber.drawSample("/api/audits", "/audit", () => ({ n: Number(document.getElementById("n").value), reviewer: document.getElementById("reviewer").value }));
} else {
  document.getElementById("title").textContent = `Precision audit ${auditId}`;
  document.getElementById("confirm").addEventListener("click", () => judge("confirmed"));
  document.getElementById("reject").addEventListener("click", () => judge("rejected"));
  run = amber.sampleRun(() => amber.getJSON(`/api/audits/${encodeURIComponent(auditId)}`), show);
}
