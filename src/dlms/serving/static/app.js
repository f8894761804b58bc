// The live page of `dlms serve`: pick a model, stream POST /v1/generate, draw every denoising
// step as rows of token boxes, and replay a finished run with a slider.
"use strict";

const $ = (id) => document.getElementById(id);
const TUNABLE = ["steps", "temperature", "guidance"];  // inputs shown only where the sampler takes them
const DGLM_FIELDS = ["steps", "temperature", "guidance"];

let models = {};  // name -> info from GET /v1/models
let playTimer = null;

// One canvas with its status lines and the frames of its current run.
function makePane(n) {
  const s = n === 1 ? "" : String(n);
  return { canvas: $("canvas" + s), status: $("status" + s), stats: $("stats" + s), texts: $("texts" + s),
           title: $("title" + s), box: $("pane" + n), frames: [], given: new Set() };
}
const panes = [makePane(1), makePane(2)];
window.dlmsFrames = panes[0].frames;
window.dlmsCanvasChanges = 0;

function setState(state) { document.body.dataset.state = state; }

function showError(message) { $("error").textContent = message || ""; }

// ---- the form -------------------------------------------------------------------------------

function comparing() { return $("compare").checked; }
function infillMode() { return $("mode-infill").checked; }

// The (info, sampler) pairs of the models that a Generate would run.
function activeRuns() {
  const runs = [{ info: models[$("model").value], sampler: $("sampler").value }];
  if (comparing() && models[$("model2").value]) runs.push({ info: models[$("model2").value], sampler: $("sampler2").value });
  return runs.filter((r) => r.info);
}

// The option names a model's chosen sampler accepts (a DGLM run lists its own).
function accepts(run) {
  if (run.info.kind === "dglm") return DGLM_FIELDS;
  return (run.info.samplers || {})[run.sampler] || [];
}

function fillSelect(select, values, chosen, noneText) {
  select.replaceChildren();
  if (noneText !== undefined) select.add(new Option(noneText, ""));
  for (const v of values) select.add(new Option(v, v));
  if (values.includes(chosen)) select.value = chosen;
}

function describe(info) {
  const params = info.parameters >= 1e6 ? (info.parameters / 1e6).toFixed(1) + "M" : Math.round(info.parameters / 1e3) + "k";
  const extras = [info.infill && "fills blanks", info.prompted && "prompt/response"].filter(Boolean);
  const what = info.method === info.kind ? info.kind : `${info.method} ${info.kind}`;
  return `${what} · ${params} parameters · ${info.seq_len || info.max_length} tokens` +
         (extras.length ? " · " + extras.join(", ") : "");
}

// A new model was chosen: refill its sampler list with its own samplers.
function onModelChange(n) {
  const info = models[$(n === 1 ? "model" : "model2").value];
  if (!info) return;
  const select = $(n === 1 ? "sampler" : "sampler2");
  fillSelect(select, Object.keys(info.samplers || {}), info.default_sampler);
  $(n === 1 ? "model-info" : "model2-info").textContent = describe(info);
  refresh();
}

// Show the inputs that apply to the chosen models and samplers, with their defaults as placeholders.
function refresh() {
  const runs = activeRuns();
  if (!runs.length) return;
  const canInfill = runs.every((r) => r.info.infill);
  $("mode-infill").disabled = !canInfill;
  if (!canInfill && infillMode()) $("mode-continue").checked = true;

  for (const name of TUNABLE) {
    const using = runs.filter((r) => accepts(r).includes(name));
    $("field-" + name).hidden = using.length === 0;
    const dflt = using.length ? (using[0].info.defaults || {})[name] : null;
    $(name).placeholder = dflt === null || dflt === undefined ? "" : String(dflt);
  }
  const dglmOnly = runs.every((r) => r.info.kind === "dglm");
  $("guidance-label").textContent = dglmOnly ? "control strength" : "guidance";
  $("field-sampler").hidden = runs[0].info.kind === "dglm";
  $("field-sampler2").hidden = !comparing() || !runs[1] || runs[1].info.kind === "dglm";
  $("field-length").hidden = infillMode() || dglmOnly;
  const lengthRun = runs.find((r) => r.info.kind !== "dglm");
  if (lengthRun) {
    $("length").placeholder = String(lengthRun.info.seq_len || "");
    $("length").max = Math.min(lengthRun.info.max_length || 1e9, (lengthRun.info.limits || {}).max_length || 1e9);
  }
  const limits = runs[0].info.limits || {};
  if (limits.max_steps) $("steps").max = limits.max_steps;
  if (limits.max_samples) $("num_samples").max = limits.max_samples;

  refreshLabels(runs);
  refreshControls(runs);
  $("prompt-label").textContent = infillMode() ? "template" : "prompt";
  $("prompt").placeholder = infillMode() ? "the ___ sat on the ___:2 ." : "the cat";
  $("prompt-hint").textContent = infillMode()
    ? "___ is a blank the model fills; ___:N is a blank of N tokens."
    : (dglmOnly ? "the prefix to continue" : "the text the sample starts with (may be empty)");
}

// A label selector with the union of the models' class names.
function refreshLabels(runs) {
  const labels = [...new Set(runs.flatMap((r) => r.info.labels || []))];
  $("field-label").hidden = labels.length === 0;
  fillSelect($("label"), labels, $("label").value, "(none)");
}

// One selector per DGLM control attribute, each with a "none" choice.
function refreshControls(runs) {
  const controls = {};
  for (const r of runs) for (const [attr, classes] of Object.entries(r.info.controls || {})) {
    controls[attr] = [...new Set([...(controls[attr] || []), ...classes])];
  }
  const box = $("controls-dglm");
  const kept = Object.fromEntries([...box.querySelectorAll("select")].map((s) => [s.dataset.attribute, s.value]));
  box.replaceChildren();
  for (const [attr, classes] of Object.entries(controls)) {
    const select = document.createElement("select");
    select.id = "control-" + attr;
    select.dataset.attribute = attr;
    fillSelect(select, classes, kept[attr], "none");
    const label = document.createElement("label");
    label.className = "field";
    label.append(attr, select);
    box.append(label);
  }
  box.hidden = Object.keys(controls).length === 0;
}

// The value of a number input; undefined when empty (the server then takes its default).
function readNumber(name, integer) {
  const raw = $(name).value.trim();
  if (raw === "") return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw new Error(`${name} must be ${integer ? "a whole number" : "a number"}, not "${raw}"`);
  }
  return value;
}

// The JSON body for one model: only fields that this model and sampler take, none empty,
// because the server refuses (422) an option its sampler does not use.
function requestBody(run, seed) {
  const { info, sampler } = run;
  const dglm = info.kind === "dglm";
  const body = { model: info.name, stream: true };
  const text = $("prompt").value;
  if (infillMode() && !dglm) {
    if (!text.trim()) throw new Error("write a template with ___ blanks for the model to fill");
    body.infill = text;
  } else if (text.trim()) {
    body.prompt = text;
  }
  if (!dglm) body.sampler = sampler;
  const taken = accepts(run);
  for (const name of TUNABLE.filter((n) => taken.includes(n))) {
    const value = readNumber(name, name === "steps");
    if (value !== undefined) body[name] = value;
  }
  const samples = readNumber("num_samples", true);
  if (samples !== undefined) body.num_samples = samples;
  body.seed = seed;
  if (dglm) {
    const control = {};
    for (const s of $("controls-dglm").querySelectorAll("select")) {
      if (s.value && (info.controls[s.dataset.attribute] || []).includes(s.value)) control[s.dataset.attribute] = s.value;
    }
    if (Object.keys(control).length) body.control = control;
    return body;
  }
  const length = readNumber("length", true);
  if (length !== undefined && !infillMode()) body.length = length;
  const label = $("label").value;
  if (label && (info.labels || []).includes(label)) body.label = label;
  return body;
}

// ---- drawing --------------------------------------------------------------------------------

// Draw a frame in place: positions never move, so the boxes are built once and then repainted.
function draw(pane, frame) {
  const rows = frame.rows || [];
  const canvas = pane.canvas;
  const fits = canvas.children.length === rows.length &&
               rows.every((row, r) => canvas.children[r].children.length === row.tokens.length);
  if (!fits) {
    canvas.replaceChildren(...rows.map((row, r) => {
      const rowEl = document.createElement("div");
      rowEl.className = "row";
      rowEl.dataset.sample = String(r + 1);
      rowEl.append(...row.tokens.map(() => document.createElement("span")));
      return rowEl;
    }));
  }
  rows.forEach((row, r) => {
    const fresh = new Set(row.changed || []);
    [...canvas.children[r].children].forEach((box, i) =>
      paint(box, row.tokens[i], fresh.has(i), pane.given.has(i), row.confidence ? row.confidence[i] : null));
  });
}

function paint(box, token, fresh, given, confidence) {
  let cls = "tok";
  if (token === null) cls += " masked";
  else if (token === "") cls += " pad";
  else if (token === "\u00b6") cls += " eos";
  if (fresh) cls += " fresh";
  if (given) cls += " given";
  box.className = cls;
  box.textContent = token === null ? "" : visible(token);
  // A square root spreads the low confidences of small models over a visible range.
  if (confidence === null || confidence === undefined || given) {
    box.style.removeProperty("--shade");
    box.removeAttribute("title");
  } else {
    box.style.setProperty("--shade", (0.06 + 0.5 * Math.sqrt(Math.max(0, Math.min(1, confidence)))).toFixed(3));
    box.title = "confidence " + confidence;
  }
}

// Control characters (a newline, a stray byte) would break or vanish in a box: show a symbol.
function visible(token) {
  return token.replace(/[\u0000-\u001f\u007f]/g, (c) =>
    c === "\n" ? "\u21b5" : c === "\t" ? "\u21e5" : "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0"));
}

function stepText(frame) {
  return frame.total ? `step ${frame.step} / ${frame.total}` : `step ${frame.step}`;
}

function showResult(pane, result) {
  const rate = result.tokens_per_second === null || result.tokens_per_second === undefined ? "—" : result.tokens_per_second;
  pane.stats.textContent = `${rate} tokens/s · ${result.seconds} s · ${result.network_calls} network calls · ` +
                           `${result.steps} steps · ${result.tokens} tokens · seed ${result.seed}` +
                           (result.batch_requests > 1 ? ` · batched with ${result.batch_requests - 1} other request(s)` : "");
  pane.texts.replaceChildren(...(result.texts || []).map((t) => {
    const p = document.createElement("p");
    p.className = "text";
    p.textContent = t;
    return p;
  }));
}

// ---- streaming --------------------------------------------------------------------------------

// Server-Sent Events from a fetch() body (EventSource cannot POST): calls onEvent(name, data).
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r/g, "");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

// The one line of an error answer ({"error": ...}), with when to retry where the server says.
async function errorLine(response) {
  let message = `${response.status} ${response.statusText}`;
  try { message = (await response.json()).error || message; } catch (e) { /* not JSON: keep the status */ }
  const retry = response.headers.get("Retry-After");
  return retry ? `${message} (retry in ${retry} s)` : message;
}

// Stream one model into one pane; resolves true when done, false on an error (already shown).
async function runInto(pane, run, body) {
  pane.frames.length = 0;
  pane.given = new Set();
  pane.canvas.replaceChildren();
  pane.texts.replaceChildren();
  pane.stats.textContent = "";
  pane.title.textContent = `${run.info.name} · ${run.info.kind === "dglm" ? "dglm" : run.sampler}`;
  pane.status.textContent = "waiting for the server…";
  const label = comparing() ? run.info.name + ": " : "";
  try {
    const response = await fetch("/v1/generate", { method: "POST", headers: { "Content-Type": "application/json" },
                                                   body: JSON.stringify(body) });
    if (!response.ok) throw new Error(await errorLine(response));
    let finished = false;
    await readEvents(response, (name, data) => {
      if (name === "step") {
        if (data.given) pane.given = new Set(data.given);
        pane.frames.push(data);
        draw(pane, data);
        if (pane === panes[0]) { window.dlmsCanvasChanges += 1; followSlider(); }
        pane.status.textContent = run.info.kind === "dglm" ? "generating (a DGLM run shows no steps)…" : stepText(data);
      } else if (name === "done") {
        finished = true;
        pane.status.textContent = `done · ${data.steps} step${data.steps === 1 ? "" : "s"}`;
        showResult(pane, data);
      } else if (name === "error") {
        throw new Error(data.error || "the server stopped this request");
      }
    });
    if (!finished) throw new Error("the stream ended before the result came");
    return true;
  } catch (err) {
    const message = err instanceof TypeError ? `could not reach the server (${err.message})` : err.message;
    pane.status.textContent = "failed";
    showError(label + message);
    return false;
  }
}

async function generate() {
  stopPlay();
  showError("");
  const runs = activeRuns();
  let bodies;
  try {
    // One seed for every model of a click (the same draw for a fair comparison); an empty box
    // draws a new one each time, so that pressing Generate again shows another sample.
    const given = readNumber("seed", true);
    const seed = given !== undefined ? given : Math.floor(Math.random() * 1e9);
    bodies = runs.map((run) => requestBody(run, seed));
  } catch (err) {
    showError(err.message);
    setState("error");
    return;
  }
  setState("running");
  $("generate").disabled = true;
  $("slider").disabled = $("play").disabled = true;
  window.dlmsCanvasChanges = 0;
  panes[1].frames.length = 0;
  panes[1].canvas.replaceChildren();
  $("slider").max = $("slider").value = "0";  // the previous run's frames are gone
  $("slider-label").textContent = "";
  const results = await Promise.all(runs.map((run, i) => runInto(panes[i], run, bodies[i])));
  $("generate").disabled = false;
  const replayable = panes[0].frames.length > 0;
  $("slider").disabled = $("play").disabled = !replayable;
  if (replayable) showStep(panes[0].frames.length - 1);
  setState(results.every(Boolean) ? "done" : "error");
}

// ---- replay -----------------------------------------------------------------------------------

// Keep the slider at the newest frame while a run streams in.
function followSlider() {
  const last = panes[0].frames.length - 1;
  $("slider").max = String(last);
  $("slider").value = String(last);
  $("slider-label").textContent = `frame ${last}`;
}

// Redraw both canvases at slider position i; the second canvas, whose run may have a
// different number of steps, is shown at the same fraction of its run.
function showStep(i) {
  const first = panes[0].frames;
  if (!first.length) return;
  i = Math.max(0, Math.min(i, first.length - 1));
  $("slider").max = String(first.length - 1);
  $("slider").value = String(i);
  draw(panes[0], first[i]);
  let label = `frame ${i} / ${first.length - 1} · ${stepText(first[i])}`;
  const second = panes[1].frames;
  if (comparing() && second.length) {
    const j = first.length > 1 ? Math.round(i * (second.length - 1) / (first.length - 1)) : second.length - 1;
    draw(panes[1], second[j]);
    label += ` | second model: ${stepText(second[j])}`;
  }
  $("slider-label").textContent = label;
}

function stopPlay() {
  if (playTimer !== null) clearInterval(playTimer);
  playTimer = null;
  $("play").textContent = "▶ play";
}

// Replay from step 0, a whole run in about three seconds.
function play() {
  const count = panes[0].frames.length;
  if (!count) return;
  stopPlay();
  let i = 0;
  showStep(0);
  $("play").textContent = "■ stop";
  playTimer = setInterval(() => {
    i += 1;
    if (i >= count) { stopPlay(); return; }
    showStep(i);
  }, Math.max(60, Math.min(400, 3000 / count)));
}

// ---- start ------------------------------------------------------------------------------------

async function loadModels() {
  try {
    const response = await fetch("/v1/models");
    if (!response.ok) throw new Error(await errorLine(response));
    const list = (await response.json()).models || [];
    if (!list.length) throw new Error("this server serves no models");
    models = Object.fromEntries(list.map((m) => [m.name, m]));
    const names = list.map((m) => m.name);
    fillSelect($("model"), names, names[0]);
    fillSelect($("model2"), names, names[1] || names[0]);
    onModelChange(2);
    onModelChange(1);
    $("generate").disabled = false;
    setState("idle");
  } catch (err) {
    showError("could not load the models: " + err.message);
    setState("error");
  }
}

function wire() {
  $("model").addEventListener("change", () => onModelChange(1));
  $("model2").addEventListener("change", () => onModelChange(2));
  for (const id of ["sampler", "sampler2", "mode-continue", "mode-infill"]) $(id).addEventListener("change", refresh);
  $("compare").addEventListener("change", () => {
    $("compare-fields").hidden = panes[1].box.hidden = !comparing();
    document.body.classList.toggle("comparing", comparing());
    refresh();
  });
  $("generate").addEventListener("click", () => { generate().catch((err) => { showError(err.message); setState("error"); }); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("generate").disabled) $("generate").click();
  });
  $("slider").addEventListener("input", () => { stopPlay(); showStep(Number($("slider").value)); });
  $("play").addEventListener("click", () => (playTimer === null ? play() : stopPlay()));
}

wire();
loadModels();
