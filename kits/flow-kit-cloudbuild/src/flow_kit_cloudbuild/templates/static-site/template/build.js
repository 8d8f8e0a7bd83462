// Builds the site: copies src/ to dist/ and stamps the version into the HTML.
// No dependencies, so `npm ci` installs nothing and the build runs anywhere node runs.
"use strict";
const fs = require("fs");
const path = require("path");

const pkg = require("./package.json");
const src = path.join(__dirname, "src");
const dist = path.join(__dirname, "dist");

fs.rmSync(dist, { recursive: true, force: true });
fs.mkdirSync(dist, { recursive: true });

let count = 0;
function copy(from, to) {
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) {
      fs.mkdirSync(target, { recursive: true });
      copy(source, target);
    } else if (entry.name.endsWith(".html")) {
      const html = fs.readFileSync(source, "utf8").replaceAll("%VERSION%", pkg.version);
      fs.writeFileSync(target, html);
      console.log(`built ${path.relative(__dirname, target)}`);
      count++;
    } else {
      fs.copyFileSync(source, target);
      console.log(`copied ${path.relative(__dirname, target)}`);
      count++;
    }
  }
}

copy(src, dist);
console.log(`${pkg.name} ${pkg.version}: ${count} files in dist/`);
