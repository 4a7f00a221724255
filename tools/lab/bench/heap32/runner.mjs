// node runner.mjs WASM_MODULE FILES_DIR SCRIPT [ARGS...]
// Loads MicroPython's WebAssembly port (a 32-bit MicroPython: 4-byte words, an ESP32's object
// layout), copies FILES_DIR into its filesystem at /work (cwd), sets sys.argv and runs SCRIPT.
// The script's stdout goes to ours, line by line. Exit 1 if the script raised.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [wasmModule, filesDir, script, ...args] = process.argv.slice(2);
const { loadMicroPython } = await import(pathToFileURL(wasmModule).href);
let nSteps = 0;
let qstr = "0, 0, 0, 0";
const mp = await loadMicroPython({
    heapsize: 512 * 1024,
    stdout: (line) => {
        if (line.startsWith("HEAP32STEPS ")) {
            nSteps = Number(line.slice(12));
        } else if (line.startsWith("qstr pool: ")) {
            // micropython.qstr_info(): n_pool, n_qstr, n_str_data_bytes, n_total_bytes
            qstr = line.slice(11).split(", ").map((kv) => Number(kv.split("=")[1])).join(", ");
        } else {
            process.stdout.write(line + "\n");
        }
    },
    stderr: (line) => process.stderr.write(line + "\n"),
});

function copyInto(src, dst) {
    mp.FS.mkdir(dst);
    for (const e of fs.readdirSync(src, { withFileTypes: true })) {
        const s = path.join(src, e.name);
        const d = dst + "/" + e.name;
        if (e.isDirectory()) {
            copyInto(s, d);
        } else {
            mp.FS.writeFile(d, fs.readFileSync(s));
        }
    }
}

copyInto(filesDir, "/work");
mp.FS.chdir("/work");
let rc = 0;
try {
    mp.runPython("import sys\nsys.argv[:] = " + JSON.stringify([script, ...args]) +
                 "\nsys.path[:] = ['', '/work/lib']\n");
    mp.runPython(fs.readFileSync(script, "utf8"));
    // the script defines STEPS, _run, _mark and _report; the base mark goes after the steps' marks.
    // This port collects garbage only at the top level (a gc.collect() inside a call just asks for
    // one): each mark is read in a call of its own, after the call that collected.
    mp.runPython("print('HEAP32STEPS', len(STEPS))");
    mp.runPython("gc.collect()");
    mp.runPython("_mark(len(STEPS))");
    mp.runPython(`_qstr(len(STEPS), ${qstr})`);
    for (let i = 0; i < nSteps; i++) {
        mp.runPython(`_run(${i})`);
        mp.runPython("gc.collect()");
        mp.runPython(`_mark(${i})`);
        mp.runPython(`_qstr(${i}, ${qstr})`);
    }
    mp.runPython("_report()");
} catch (e) {
    process.stderr.write("heap32: " + e + "\n");
    rc = 1;
}
process.exit(rc);
