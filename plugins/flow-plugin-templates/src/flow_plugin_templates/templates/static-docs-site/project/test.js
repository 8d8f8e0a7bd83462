// Tests of the built site: every page exists, has the title, and every local link resolves.
"use strict";
const assert = require("assert");
const fs = require("fs");
const path = require("path");

const out = path.join(__dirname, "dist");
const pages = fs.readdirSync(out).filter((n) => n.endsWith(".html"));
assert.ok(pages.includes("index.html"), "dist/index.html is missing");
for (const page of pages) {
  const html = fs.readFileSync(path.join(out, page), "utf8");
  assert.ok(html.includes("<title>"), `${page} has no <title>`);
  for (const [, href] of html.matchAll(/href="([^"#:]+)"/g)) {
    assert.ok(fs.existsSync(path.join(out, href)), `${page} links to missing ${href}`);
  }
}
console.log(`ok: ${pages.length} pages`);
