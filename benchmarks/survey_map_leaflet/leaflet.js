"use strict";
// The same vector tiles drawn by Leaflet with protomaps-leaflet (canvas), for the map-library
// comparison of benchmarks/survey_map.py: time until every visible tile is drawn.
(async () => {
  const s = await (await fetch("/api/summary")).json();
  const map = L.map("map", { fadeAnimation: false });
  const colour = (z, f) => (f.props.flagged > 0 || f.props.flagged === true ? "#d62828" : "#2a9d8f");
  const layer = protomapsL.leafletLayer({
    url: location.origin + "/tiles/detections/{z}/{x}/{y}.mvt",
    maxDataZoom: 17,
    paintRules: [
      { dataLayer: "cells", symbolizer: new protomapsL.PolygonSymbolizer({ fill: colour, opacity: 0.6 }) },
      { dataLayer: "detections", symbolizer: new protomapsL.PolygonSymbolizer({ fill: colour, opacity: 0.45 }) },
    ],
    labelRules: [],
  });
  layer.on("load", () => {
    if (document.body.dataset.ready === "1") return;
    document.body.dataset.renderedMs = String(Math.round(performance.now()));
    document.body.dataset.ready = "1";
  });
  map.fitBounds([[s.extent[1], s.extent[0]], [s.extent[3], s.extent[2]]], { padding: [20, 20] });
  layer.addTo(map);
})();
