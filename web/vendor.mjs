// Copies the map's front-end library (MapLibre GL JS: its ES module, worker and stylesheet) into
// the Python package's static folder, so the app serves it itself and downloads nothing at run
// time. Leaflet and protomaps-leaflet are devDependencies: only benchmarks/survey_map.py's
// comparison page loads them, from node_modules.
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "services", "amberscan", "web", "static", "vendor");
const files = { "maplibre-gl": ["maplibre-gl.mjs", "maplibre-gl-worker.mjs", "maplibre-gl.css", "LICENSE.txt"] };
rmSync(vendor, { recursive: true, force: true });
for (const [pkg, names] of Object.entries(files)) {
  const target = join(vendor, pkg);
  mkdirSync(target, { recursive: true });
  for (const name of names) {
    const source = name === "LICENSE.txt" ? join(here, "node_modules", pkg, name) : join(here, "node_modules", pkg, "dist", name);
    copyFileSync(source, join(target, name));
  }
  console.log(`${pkg} copied to ${target}`);
}
