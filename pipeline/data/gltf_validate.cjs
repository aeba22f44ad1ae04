// Validate GLB files with the Khronos glTF validator (npm gltf-validator); prints one JSON report per file.
// usage: node gltf_validate.cjs NODE_MODULES_DIR FILE...
const path = require("path");
const fs = require("fs");
const validator = require(path.join(process.argv[2], "gltf-validator"));
(async () => {
  const out = [];
  for (const f of process.argv.slice(3)) {
    const data = new Uint8Array(fs.readFileSync(f));
    try {
      const r = await validator.validateBytes(data, {
        uri: f,
        maxIssues: 50,
        externalResourceFunction: (uri) => Promise.reject(new Error("external resource " + uri)),
      });
      out.push({ file: f, errors: r.issues.numErrors, warnings: r.issues.numWarnings,
                 messages: r.issues.messages.filter((m) => m.severity <= 1).slice(0, 20) });
    } catch (e) {
      out.push({ file: f, errors: 1, warnings: 0, messages: [{ code: "EXCEPTION", message: String(e) }] });
    }
  }
  process.stdout.write(JSON.stringify(out));
})();
