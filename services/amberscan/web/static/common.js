// Shared helpers. Data from the server is only ever placed with textContent or attributes.
"use strict";

const amber = {
  el(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== "") node.textContent = String(text);
    return node;
  },
  token() {
    const input = document.getElementById("token");
    if (!input) return localStorage.getItem("amberscan-token") || "";
    if (input.value) localStorage.setItem("amberscan-token", input.value);
    else localStorage.removeItem("amberscan-token");
    return input.value;
  },
  // Write controls (class "write": review, relabel, draw a sample...) show only when the server
  // takes writes (it has AMBERSCAN_WEB_TOKEN) and the page has a token to send; the token field
  // itself only when the server takes writes. body[data-writes] is "1" when they show;
  // body[data-writable] says, once the server has answered, whether it takes writes.
  initToken() {
    const input = document.getElementById("token");
    if (input) {
      input.value = localStorage.getItem("amberscan-token") || "";
      input.addEventListener("input", () => { amber.token(); amber.showWrites(); });
    }
    amber.showWrites();
    amber.getJSON("/api/config").then((config) => {
      amber.writesEnabled = Boolean(config.writes_enabled);
      document.body.dataset.writable = amber.writesEnabled ? "1" : "0";
      amber.showWrites();
    }).catch((e) => amber.status(e.message, true));
  },
  writesEnabled: false,
  showWrites() {
    const input = document.getElementById("token");
    const field = input && input.closest("label");
    if (field) field.classList.toggle("hidden", !amber.writesEnabled);
    document.body.dataset.writes = amber.writesEnabled && input && input.value ? "1" : "0";
  },
  async getJSON(url) {
    const response = await fetch(url);
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  },
  async post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + amber.token() },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  },
  status(text, isError = false) {
    const node = document.getElementById("status");
    if (!node) return;
    node.textContent = text;
    node.className = isError ? "status error" : "status";
  },
  // A sample page's first screen (/audit, /area): the "draw" button posts `body()` with the year
  // and model filled in, then opens the new sample at `page`/ID.
  drawSample(url, page, body) {
    document.getElementById("create").classList.remove("hidden");
    document.getElementById("draw").addEventListener("click", async () => {
      const sent = body();
      for (const k of ["year", "model"]) if (document.getElementById(k).value) sent[k] = document.getElementById(k).value;
      try {
        const created = await amber.post(url, sent);
        location.href = `${page}/${created.id}`;
      } catch (e) {
        amber.status(e.message, true);
      }
    });
    document.body.dataset.ready = "1";
  },
  // A sample page's second screen (/audit/ID, /area/ID): `run.report.tiles` stepped through from
  // `run.index`. `fetchReport()` gives the sample with its figures, `show()` draws `run`. A
  // judgement saves the tile (`save(tile)` posts its reviews and answers the status line), reloads
  // the figures and goes on to the next unreviewed tile; "previous" and "next" step by one.
  sampleRun(fetchReport, show) {
    const run = {
      report: null,
      index: 0,
      go(i) {
        run.index = Math.max(0, Math.min(run.report.tiles.length - 1, i));
        show();
      },
      async load() {
        run.report = await fetchReport();
        run.index = Math.min(run.index, Math.max(0, run.report.tiles.length - 1));
        show();
      },
      async judge(save) {
        const t = run.report.tiles[run.index];
        if (!t) return;
        try {
          document.body.dataset.ready = "0";
          amber.status(await save(t));
          const next = run.report.tiles.findIndex((x, i) => i > run.index && x.review === "unreviewed");
          await run.load();
          if (next >= 0) run.go(next);
        } catch (e) {
          amber.status(e.message, true);
          document.body.dataset.ready = "1";
        }
      },
    };
    document.getElementById("run").classList.remove("hidden");
    document.getElementById("previous").addEventListener("click", () => run.go(run.index - 1));
    document.getElementById("next").addEventListener("click", () => run.go(run.index + 1));
    run.load().catch((e) => amber.status(e.message, true));
    return run;
  },
  tileQuery(p) {
    return new URLSearchParams({ imagery_date: p.imagery_date, model: p.model_version }).toString();
  },
  demoNotice:
    "DEMO: real 2014-2016 imagery from the texty.org.ua amber data set placed at illustrative coordinates; not a finding at these places.",
};
