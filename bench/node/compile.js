// For bench/render.py: compile MJML with node's mjml, warm, in one process.
// Reads one JSON line per request ({"path": "..."}) on stdin; answers one JSON
// line with the time mjml2html took in ms (measured here, so the pipe is not
// counted) and the HTML's length.
const fs = require("fs");
const readline = require("readline");
const mjml2html = require("mjml");

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  const { path } = JSON.parse(line);
  const source = fs.readFileSync(path, "utf8");
  const start = process.hrtime.bigint();
  const result = await mjml2html(source, { validationLevel: "soft" });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  process.stdout.write(JSON.stringify({ ms, bytes: result.html.length, errors: result.errors.length }) + "\n");
});
