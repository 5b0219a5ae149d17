// Copies Leaflet's dist/ into the Python package's static folder, so the app serves it itself.
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, "..", "services", "amberscan", "web", "static", "vendor", "leaflet");
rmSync(target, { recursive: true, force: true });
mkdirSync(target, { recursive: true });
cpSync(join(here, "node_modules", "leaflet", "dist"), target, { recursive: true });
console.log(`leaflet copied to ${target}`);
