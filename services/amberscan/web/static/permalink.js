// The map's state in the page's address (#27), so a view can be bookmarked and handed on:
// filters, layers and the comparison in the query (?year=2016&layers=scanned,detections&before=2014&swipe=50),
// the view in the hash (#zoom/lat/lon, as MapLibre's own hash writes it). Read once on load,
// rewritten (history.replaceState: no new history entry) whenever the map moves or a control changes.
export const FILTERS = ["year", "model", "review", "change"];
export const LAYERS = ["base", "scanned", "detections"];
export const DEFAULT_LAYERS = ["base", "scanned", "detections"];
const VIEW = /^#(\d{1,2}(?:\.\d+)?)\/(-?\d{1,2}(?:\.\d+)?)\/(-?\d{1,3}(?:\.\d+)?)$/;

const clampSwipe = (value) => (Number.isFinite(value) ? Math.min(100, Math.max(0, value)) : 50);

export function read(where = window.location) {
  const query = new URLSearchParams(where.search);
  const state = { filters: {}, layers: [...DEFAULT_LAYERS], before: query.get("before") || "", swipe: clampSwipe(Number(query.get("swipe") ?? 50)), view: null };
  for (const id of FILTERS) if (query.get(id)) state.filters[id] = query.get(id);
  if (query.has("layers")) state.layers = query.get("layers").split(",").filter((layer) => LAYERS.includes(layer));
  const view = VIEW.exec(where.hash);
  if (view) {
    const [zoom, lat, lon] = view.slice(1).map(Number);
    if (Math.abs(lat) <= 85.06 && Math.abs(lon) <= 180) state.view = { zoom, center: [lon, lat] };
  }
  return state;
}

export function url(state, path = window.location.pathname) {
  const query = new URLSearchParams();
  for (const id of FILTERS) if (state.filters[id]) query.set(id, state.filters[id]);
  const layers = LAYERS.filter((layer) => state.layers.includes(layer));
  if (layers.join(",") !== DEFAULT_LAYERS.join(",")) query.set("layers", layers.join(","));
  if (state.before) {
    query.set("before", state.before);
    query.set("swipe", String(Math.round(state.swipe)));
  }
  const view = state.view;
  const hash = view ? `#${view.zoom.toFixed(2)}/${view.center[1].toFixed(6)}/${view.center[0].toFixed(6)}` : "";
  const text = query.toString();
  return path + (text ? "?" + text : "") + hash;
}

export function write(state) {
  const next = url(state);
  if (next !== window.location.pathname + window.location.search + window.location.hash) history.replaceState(null, "", next);
  document.body.dataset.permalink = next;
}
