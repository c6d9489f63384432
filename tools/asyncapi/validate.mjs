// Parses an AsyncAPI document with the official parser and prints what it found as JSON:
// the parser's diagnostics (schema and ruleset violations) and, when the document is valid,
// the messages, channels and operations it read. Exit code 1 when the document is invalid.
import { readFile } from "node:fs/promises";
import { Parser, fromFile } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate.mjs DOCUMENT");
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path).parse();
const severities = ["error", "warning", "info", "hint"];
const report = {
  valid: document !== undefined,
  diagnostics: diagnostics.map((d) => ({
    severity: severities[d.severity] ?? String(d.severity),
    code: d.code,
    message: d.message,
    path: d.path.join("."),
  })),
};
if (document) {
  report.version = document.version();
  report.messages = document.components().messages().all().map((m) => m.name());
  report.channels = document.channels().all().map((c) => c.id());
  report.operations = document.operations().all().map((o) => ({
    id: o.id(),
    action: o.action(),
    channels: o.channels().all().map((c) => c.id()),
    messages: o.messages().all().map((m) => m.name()),
  }));
}
console.log(JSON.stringify(report, null, 1));
process.exit(report.valid ? 0 : 1);
