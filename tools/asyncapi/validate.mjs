// The official AsyncAPI parser over one document: every diagnostic printed, exit 1 on errors.
// Usage: node tools/asyncapi/validate.mjs docs/asyncapi.yaml
import { Parser, fromFile } from '@asyncapi/parser';

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path).parse();
const severities = ['error', 'warning', 'info', 'hint'];
let errors = 0;
for (const d of diagnostics) {
  const where = d.path && d.path.length ? d.path.join('.') : '(document)';
  console.log(`${severities[d.severity] ?? d.severity}: ${d.code}: ${where}: ${d.message}`);
  if (d.severity === 0) errors += 1;
}
if (!document || errors) {
  console.log(`${path}: ${errors} error(s)`);
  process.exit(1);
}
console.log(`${path}: valid AsyncAPI ${document.version()}, ${document.channels().length} channel(s), ${document.messages().length} message(s)`);
