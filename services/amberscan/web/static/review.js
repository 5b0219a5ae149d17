"use strict";

// /review: the review queue (GET /api/review-queue, ordered by web/queue.py's rule), one tile per
// screen, verdicts from the keyboard through POST /api/reviews with the token. The next tile's
// images and facts are fetched while the current one is shown, and a verdict moves on at once:
// its answer comes back while the reviewer already looks at the next tile.
const FILTERS = ["scan", "bbox", "year"];
const REFILL_BELOW = 5;
let queue = []; // tiles still to show, in the queue's order
let current = null; // the tile on screen
let matched = 0; // tiles in the queue when it was last fetched
let judgedThen = 0; // verdicts of this session by then
const done = []; // this session's actions, newest last: {tile, verdict | "skipped", request, marked}
const seen = new Set(); // tiles judged or skipped this session: never shown again unless undone
const cache = new Map(); // tile key -> {detail, images, ready}
const counts = { confirmed: 0, rejected: 0, skipped: 0 };
let pending = 0;

const key = (t) => `${t.tile_id}|${t.imagery_date}`;
const target = (t) => ({ tile_id: t.tile_id, imagery_date: t.imagery_date, model_version: t.model_version });

function overlay(t, date, model) {
  const q = new URLSearchParams({ imagery_date: date, model, view: "scores", size: "640" });
  return `/api/tiles/${encodeURIComponent(t.tile_id)}/overlay.png?${q}`;
}

function prefetch(t) {
  if (!t) return null;
  if (cache.has(key(t))) return cache.get(key(t));
  const sources = [overlay(t, t.imagery_date, t.model_version)];
  if (t.previous) sources.push(overlay(t, t.previous.imagery_date, t.previous.model_version));
  const images = sources.map((src) => {
    const image = new Image();
    image.src = src;
    return image;
  });
  const detail = amber.getJSON(`/api/tiles/${encodeURIComponent(t.tile_id)}?${amber.tileQuery(t)}`);
  detail.catch(() => {});
  const ready = Promise.all([detail.catch(() => null), ...images.map((i) => i.decode().catch(() => null))]);
  const entry = { detail, images, ready };
  cache.set(key(t), entry);
  return entry;
}

function filterQuery() {
  const q = new URLSearchParams({ limit: "50" });
  for (const name of FILTERS) {
    const value = document.getElementById(name).value.trim();
    if (value) q.set(name, value);
  }
  return q;
}

async function refill() {
  const answer = await amber.getJSON(`/api/review-queue?${filterQuery()}`);
  matched = answer.matched;
  judgedThen = counts.confirmed + counts.rejected - pending;
  document.getElementById("rule").textContent = "Order: " + answer.rule;
  const held = new Set([...queue.map(key), ...(current ? [key(current)] : [])]);
  for (const t of answer.tiles) if (!seen.has(key(t)) && !held.has(key(t))) queue.push(t);
  prefetch(queue[0]);
}

function progress() {
  const judged = counts.confirmed + counts.rejected;
  document.getElementById("progress").textContent =
    `this session: ${judged} judged (${counts.confirmed} confirmed, ${counts.rejected} rejected), ` +
    `${counts.skipped} skipped; ${Math.max(0, matched - (judged - judgedThen))} left in the queue` +
    (pending ? `; ${pending} verdict(s) on their way` : "");
  document.body.dataset.judged = String(judged);
  document.body.dataset.pending = String(pending);
}

function row(cells, tag = "td") {
  const tr = amber.el("tr");
  for (const c of cells) tr.append(amber.el(tag, {}, c));
  return tr;
}

function place(id, image, alt) {
  const old = document.getElementById(id);
  image.id = id;
  image.alt = alt;
  old.replaceWith(image);
}

async function show(t) {
  current = t;
  document.body.dataset.ready = "0";
  progress();
  if (!t) {
    document.body.dataset.tile = "";
    document.getElementById("position").textContent = "the queue is empty under these filters";
    document.body.dataset.ready = "1";
    return;
  }
  document.body.dataset.tile = key(t);
  const entry = prefetch(t);
  prefetch(queue[0]); // the next tile loads while this one is looked at
  document.getElementById("position").textContent =
    `tile ${t.tile_id}, imagery ${t.imagery_date || "undated"}, priority ${t.priority.toFixed(3)}: ` +
    (t.reasons.length ? t.reasons.join("; ") : "far from the decision, nothing disputed");
  place("current", entry.images[0], "the tile as the model saw it, superpixels coloured by score");
  document.getElementById("current-caption").textContent =
    `${t.imagery_date || "undated"}, model ${t.model_version}: ${t.flagged ? "FLAGGED" : "not flagged"}`;
  const previousFigure = document.getElementById("previous-figure");
  previousFigure.classList.toggle("hidden", !t.previous);
  if (t.previous) {
    place("previous", entry.images[1], "the same tile in its previous vintage");
    document.getElementById("previous-caption").textContent =
      `previous vintage ${t.previous.imagery_date}, model ${t.previous.model_version}: ` +
      (t.previous.flagged ? "FLAGGED" : "not flagged");
  }
  let d = null;
  try {
    d = await entry.detail;
  } catch (e) {
    amber.status(`tile ${t.tile_id}: ${e.message}`, true);
  }
  if (current !== t) return;
  const facts = document.querySelector("#facts tbody");
  facts.replaceChildren();
  const shown = [
    ["rule outcome", d ? d.rule : ""],
    ["threshold", `${t.threshold.toFixed(4)}; decisive score ${t.decisive_score === null ? "none" : t.decisive_score.toFixed(4)}`],
    ["scan", t.scan_id],
    ["review", t.review],
  ];
  if (t.other_model) shown.push(["other model", `${t.other_model}: ${t.other_flagged ? "flagged" : "not flagged"}`]);
  for (const [k, v] of shown) facts.append(row([k, v]));
  const body = document.querySelector("#superpixels tbody");
  body.replaceChildren();
  if (d) {
    const ordered = [...d.superpixels].sort((a, b) => b.score - a.score).slice(0, 12);
    for (const s of ordered) body.append(row([s.index, s.score.toFixed(3), s.positive ? "yes" : "", s.label]));
    document.getElementById("demo-notice").classList.toggle("hidden", !d.demo);
    document.getElementById("demo-notice").textContent = d.demo ? amber.demoNotice : "";
  }
  await entry.ready;
  if (current === t) document.body.dataset.ready = "1";
}

async function advance() {
  const next = queue.shift() || null;
  const showing = show(next);
  if (queue.length < REFILL_BELOW) {
    refill()
      .then(() => (current === null && queue.length ? advance() : null))
      .catch((e) => amber.status(e.message, true));
  }
  await showing;
}

function judge(verdict, mark) {
  const t = current;
  if (!t || document.body.dataset.ready !== "1") return;
  if (document.body.dataset.writes !== "1") {
    amber.status("read-only: type the review token to give verdicts", true);
    return;
  }
  const body = { ...target(t), verdict, reviewer: document.getElementById("reviewer").value };
  if (mark) body.mark_not_mining = true;
  const record = { tile: t, verdict, marked: [] };
  done.push(record);
  seen.add(key(t));
  cache.delete(key(t));
  counts[verdict] += 1;
  pending += 1;
  record.request = amber
    .post("/api/reviews", body)
    .then((saved) => {
      record.marked = saved.marked_not_mining;
      record.previous = saved.previous;
      record.previousLabels = saved.previous_labels || {};
      const marked = saved.marked_not_mining.length ? `, ${saved.marked_not_mining.length} superpixels marked not mining` : "";
      amber.status(`tile ${t.tile_id}: ${saved.review} by ${saved.reviewer}${marked}`);
    })
    .catch((e) => {
      // Not saved: take it back and show the tile again.
      done.splice(done.indexOf(record), 1);
      seen.delete(key(t));
      counts[verdict] -= 1;
      amber.status(`tile ${t.tile_id} not saved: ${e.message}`, true);
      if (current) queue.unshift(current);
      show(t);
    })
    .finally(() => {
      pending -= 1;
      progress();
    });
  advance();
}

function skip() {
  if (!current || document.body.dataset.ready !== "1") return;
  done.push({ tile: current, verdict: "skipped" });
  seen.add(key(current));
  counts.skipped += 1;
  advance();
}

async function undo() {
  const record = done.pop();
  if (!record) return;
  const t = record.tile;
  document.body.dataset.ready = "0";
  try {
    if (record.verdict !== "skipped") {
      await record.request;
      // Put back what the verdict replaced (a reflagged tile's earlier rejection, a superpixel
      // someone had labelled), not merely clear it.
      const who = document.getElementById("reviewer").value;
      const before = record.previous;
      const restored = before
        ? { verdict: before.verdict, note: `undo: restores ${before.reviewer}'s verdict of ${before.reviewed_at}` }
        : { verdict: "clear" };
      await amber.post("/api/reviews", { ...target(t), ...restored, reviewer: who });
      for (const segment of record.marked) {
        const label = record.previousLabels[String(segment)] || "clear";
        await amber.post("/api/labels", { ...target(t), segment, label, reviewer: who });
      }
    }
    counts[record.verdict] -= 1;
    seen.delete(key(t));
    if (current) queue.unshift(current);
    amber.status(`tile ${t.tile_id}: ${record.verdict === "skipped" ? "skip" : record.verdict} undone`);
    await show(t);
  } catch (e) {
    done.push(record);
    amber.status(`undo failed: ${e.message}`, true);
    document.body.dataset.ready = "1";
  }
}

const KEYS = {
  c: () => judge("confirmed", false),
  r: () => judge("rejected", false),
  m: () => judge("rejected", true),
  s: skip,
  ArrowRight: skip,
  u: undo,
};

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement || event.ctrlKey || event.metaKey || event.altKey) return;
  const action = KEYS[event.key];
  if (!action) return;
  event.preventDefault();
  action();
});

async function start() {
  queue = [];
  current = null;
  try {
    await refill();
    await advance();
  } catch (e) {
    amber.status(e.message, true);
    document.body.dataset.ready = "1";
  }
}

amber.initToken();
const initial = new URLSearchParams(location.search);
for (const name of FILTERS) document.getElementById(name).value = initial.get(name) || "";
document.getElementById("apply").addEventListener("click", () => {
  const q = filterQuery();
  q.delete("limit");
  history.replaceState(null, "", `/review${q.toString() ? "?" + q : ""}`);
  start();
});
start();
