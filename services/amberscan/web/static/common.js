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
    const value = input && input.value ? input.value : localStorage.getItem("amberscan-token") || "";
    if (input && input.value) localStorage.setItem("amberscan-token", input.value);
    return value;
  },
  initToken() {
    const input = document.getElementById("token");
    if (input) input.value = localStorage.getItem("amberscan-token") || "";
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
  tileQuery(p) {
    return new URLSearchParams({ imagery_date: p.imagery_date, model: p.model_version }).toString();
  },
  demoNotice:
    "DEMO: real 2014-2016 imagery from the texty.org.ua amber data set placed at illustrative coordinates; not a finding at these places.",
};
