// Build the site: every page in site/ gets the shared header and footer; output in dist/.
// No dependencies: node's standard library only.
"use strict";
const fs = require("fs");
const path = require("path");

const src = path.join(__dirname, "site");
const out = path.join(__dirname, "dist");
const layout = fs.readFileSync(path.join(src, "_layout.html"), "utf8");

fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
for (const name of fs.readdirSync(src).sort()) {
  if (name.startsWith("_")) continue;
  const body = fs.readFileSync(path.join(src, name), "utf8");
  const page = name.endsWith(".html") ? layout.replace("{{content}}", body) : body;
  fs.writeFileSync(path.join(out, name), page);
  console.log(`built dist/${name}`);
}
