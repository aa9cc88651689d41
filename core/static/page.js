"use strict";
// The model page of core.serve: lists GET models, sends the image (or seed) to POST predict/<name>
// and draws the answer. Text from the server is set as text, never as HTML.
const $ = (id) => document.getElementById(id);
const models = {};
const state = {
  image: null,      // the chosen image, decoded by the browser (null if it cannot show it)
  stem: "",         // the chosen file's name without its extension, for the downloads
  result: null,     // the last answer shown, and the model that gave it
  model: "",
  mask: null,       // segmentation: a 0/1 byte per pixel of the result
  request: 0,       // the number of the latest request: older answers are dropped
  controller: null, // aborts the request in flight when the model changes
};

// a touch screen has nothing to drop from
const PROMPT = window.matchMedia("(hover: none)").matches ? "Tap to choose an image"
                                                         : "Drop an image here, or click to choose one";

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function percent(p) { return (100 * p).toFixed(1) + " %"; }

function number(v) {
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  return String(+v.toPrecision(4));
}

function currentModel() {
  const checked = document.querySelector("input[name=model]:checked");
  return checked ? checked.value : "";
}

// -- the model ----------------------------------------------------------------------------------
function badge(b) {
  const node = element("span", b.text === "dry run" ? "badge dry" : "badge", b.text);
  node.title = b.title;
  return node;
}

function choice(m) {
  // one model in the list: its title (homework · run · headline metric) and badges, wrapping on small screens
  const label = element("label", "choice");
  const radio = element("input");
  radio.type = "radio";
  radio.name = "model";
  radio.value = m.name;
  radio.addEventListener("change", modelChanged);
  const text = element("span", "choice-text");
  // each part of the title keeps together; lines break between the parts
  const title = m.display.title.split(" · ").map((part) => part.replace(/ /g, "\u00a0")).join(" · ");
  text.append(element("span", "choice-title", title), ...m.display.badges.map(badge));
  label.append(radio, text);
  label.title = `${m.homework} run ${m.name}`;
  return label;
}

function showInfo(m) {
  $("notes").replaceChildren(...m.display.badges.map((b) => element("p", "badge-note", b.title)));
  const info = $("info");
  info.replaceChildren();
  const rows = [["homework", m.homework], ["run", m.name], ["kind", m.kind],
                ["input size", m.input_size ? m.input_size.join(" × ") : "any"],
                ["classes", m.classes.length > 8 ? m.classes.length + " classes" : m.classes.join(", ") || "—"]];
  if (m.display.epochs !== null) rows.push(["epochs", String(m.display.epochs)]);
  const main = m.display.metrics.filter((x) => x.main);
  for (const x of main.slice(0, 10)) rows.push([x.label, number(x.value), x.key]);
  const about = element("details", "about");
  about.open = !window.matchMedia("(max-width: 760px)").matches;  // closed on a phone: the input comes first
  about.append(element("summary", "", "About this model"), definitions(rows));
  const shown = new Set(main.slice(0, 10).map((x) => x.key).concat(["epochs"]));
  if (m.display.metrics.some((x) => !shown.has(x.key))) {
    const all = element("details", "all-metrics");
    all.append(element("summary", "", `every metric (${m.display.metrics.length})`),
               definitions(m.display.metrics.map((x) => [x.label, number(x.value), x.key])));
    about.append(all);
  }
  info.append(about);
  const generator = m.kind === "generation";
  $("generator").hidden = !generator;
  $("uploader").hidden = generator;
}

function definitions(rows) {
  const list = element("dl");
  for (const [k, v, key] of rows) {
    const term = element("dt", "", k);
    if (key) term.title = key;  // the name in metrics.json
    list.append(term, element("dd", "", v));
  }
  return list;
}

async function loadModels() {
  const response = await fetch("models");
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  const data = await response.json();
  const list = $("models");
  for (const m of data.models) {
    models[m.name] = m;
    list.append(choice(m));
  }
  $("status").textContent = `${data.models.length} model${data.models.length === 1 ? "" : "s"}`;
  if (data.models.length) {
    list.querySelector("input").checked = true;
    modelChanged();
  } else {
    clearResult("This server has no model.");
  }
}

function modelChanged() {
  const m = models[currentModel()];
  cancel();
  showInfo(m);
  $("drop-text").textContent = PROMPT;
  clearResult(m.kind === "generation" ? "Choose a seed and the number of samples." : "Choose an image to see the prediction.");
}

// -- asking the server --------------------------------------------------------------------------
function setBusy(busy, text) {
  $("result").setAttribute("aria-busy", String(busy));
  $("busy").hidden = !busy;
  $("busy-text").textContent = busy ? text : "";
  const drop = $("drop");
  drop.classList.toggle("disabled", busy);
  drop.setAttribute("aria-disabled", String(busy));
  drop.tabIndex = busy ? -1 : 0;
  $("file").disabled = busy;
  $("generate").disabled = busy;
}

function reveal() {
  // on a phone the result panel is below the input: bring it into view
  const top = $("result").getBoundingClientRect().top;
  if (top < 0 || top > window.innerHeight * 0.5) {
    const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    $("result").scrollIntoView({ behavior: smooth ? "smooth" : "auto", block: "start" });
  }
}

function cancel() {
  state.request += 1;
  if (state.controller) state.controller.abort();
  state.controller = null;
  setBusy(false);
}

function clearResult(text) {
  $("summary").textContent = text;
  $("summary").dataset.kind = "";
  $("error").hidden = true;
  $("error").textContent = "";
  $("bars").replaceChildren();
  $("view").hidden = true;
  $("grid").hidden = true;
  $("grid").removeAttribute("src");
  $("tools").hidden = true;
  state.result = null;
  state.mask = null;
}

function showError(message) {
  clearResult("No result");
  $("summary").dataset.kind = "error";
  $("error").textContent = "error: " + message;
  $("error").hidden = false;
}

async function predict(form, what) {
  const name = currentModel();
  cancel();
  const request = state.request;
  const controller = state.controller = new AbortController();
  clearResult("");
  setBusy(true, `Predicting ${what} with ${name}…`);
  reveal();
  try {
    const response = await fetch("predict/" + encodeURIComponent(name), { method: "POST", body: form, signal: controller.signal });
    let answer;
    try { answer = await response.json(); } catch (err) {
      throw new Error(`the server answered ${response.status} ${response.statusText} without JSON`);
    }
    if (!response.ok) throw new Error(answer.error || `${response.status} ${response.statusText}`);
    if (request !== state.request) return;
    setBusy(false);
    await show(answer, name);
  } catch (err) {
    if (request !== state.request) return;  // a newer request, or another model, took over
    setBusy(false);
    showError(err.name === "TypeError" ? `cannot reach the server (${err.message})` : err.message);
  } finally {
    if (request === state.request) state.controller = null;
  }
}

// -- drawing the answer -------------------------------------------------------------------------
function decodeImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot display this image"));
    img.src = src;
  });
}

function fit(node, width, least = 360) {
  // as wide as the panel allows, and small images shown larger (pixel by pixel), at least `least` px
  const shown = Math.max(least, width);
  node.style.width = `min(100%, ${shown}px)`;
  node.classList.toggle("pixelated", shown > width);
}

function drawBase(width, height) {
  // the chosen image at the result's size (grey where the browser cannot show it)
  const canvas = $("view");
  canvas.width = width;
  canvas.height = height;
  fit(canvas, width);
  const ctx = canvas.getContext("2d");
  if (state.image) ctx.drawImage(state.image, 0, 0, width, height);
  else { ctx.fillStyle = "#808080"; ctx.fillRect(0, 0, width, height); }
  canvas.hidden = false;
  return ctx;
}

function drawMask() {
  const r = state.result;
  const ctx = drawBase(r.width, r.height);
  const alpha = Number($("opacity").value) / 100;
  const pixels = ctx.getImageData(0, 0, r.width, r.height);
  const p = pixels.data;
  const keep = 1 - alpha;
  for (let i = 0, j = 0; i < p.length; i += 4, j += 1) {
    if (state.mask[j]) { p[i] = keep * p[i] + alpha * 255; p[i + 1] *= keep; p[i + 2] *= keep; }
  }
  ctx.putImageData(pixels, 0, 0);
  $("opacity-value").textContent = $("opacity").value + " %";
}

async function show(result, name) {
  state.result = result;
  state.model = name;
  const summary = $("summary");
  if (result.kind === "classification") {
    summary.textContent = `${result.label}: ${percent(result.probability)}`;
    for (const c of result.classes.slice(0, 5)) {
      const row = element("div", "bar");
      const track = element("div", "track");
      const fill = element("div", "fill");
      fill.style.width = (100 * c.probability).toFixed(1) + "%";
      track.append(fill);
      row.append(element("span", "name", c.label), track, element("span", "value", percent(c.probability)));
      row.querySelector(".name").title = c.label;
      $("bars").append(row);
    }
    if (state.image) drawBase(state.image.naturalWidth, state.image.naturalHeight);
  } else if (result.kind === "segmentation") {
    summary.textContent = `area ${result.area} px (${percent(result.area_fraction)} of ${result.width} × ${result.height})`;
    const maskImage = await decodeImage("data:image/png;base64," + result.mask_png);
    const layer = document.createElement("canvas");
    layer.width = result.width;
    layer.height = result.height;
    const lctx = layer.getContext("2d");
    lctx.drawImage(maskImage, 0, 0);
    const m = lctx.getImageData(0, 0, layer.width, layer.height).data;
    state.mask = new Uint8Array(layer.width * layer.height);
    for (let i = 0, j = 0; i < m.length; i += 4, j += 1) state.mask[j] = m[i] > 127 ? 1 : 0;
    drawMask();
  } else if (result.kind === "detection") {
    const boxes = result.boxes;
    summary.textContent = `${boxes.length} box(es)` + boxes.slice(0, 5).map((b) => `; ${b.label} ${b.score.toFixed(2)}`).join("");
    const ctx = drawBase(result.width, result.height);
    ctx.lineWidth = Math.max(2, result.width / 300);
    ctx.font = `${Math.max(12, result.width / 50)}px sans-serif`;
    for (const b of boxes) {
      const [x0, y0, x1, y1] = b.box;
      ctx.strokeStyle = ctx.fillStyle = "#ff2a2a";
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      ctx.fillText(`${b.label} ${b.score.toFixed(2)}`, x0 + 3, Math.max(12, y0 - 4));
    }
  } else if (result.kind === "generation") {
    summary.textContent = `${result.count} samples from seed ${result.seed}`;
    const grid = $("grid");
    fit(grid, result.width, 512);
    grid.src = "data:image/png;base64," + result.grid_png;
    grid.hidden = false;
  }
  summary.dataset.kind = result.kind;
  $("opacity-row").hidden = result.kind !== "segmentation";
  $("download-png").disabled = result.kind !== "generation" && !state.image && result.kind === "classification";
  $("tools").hidden = false;
}

// -- downloads ----------------------------------------------------------------------------------
function baseName() {
  const r = state.result;
  const what = r.kind === "generation" ? `seed${r.seed}` : state.stem || "image";
  return `${state.model}-${what}`.replace(/[^A-Za-z0-9._-]+/g, "_");
}

function save(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = element("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}

function pngOfResult() {
  const r = state.result;
  if (r.kind === "generation") {
    const bytes = Uint8Array.from(atob(r.grid_png), (c) => c.charCodeAt(0));
    return Promise.resolve(new Blob([bytes], { type: "image/png" }));
  }
  let canvas = $("view");
  if (r.kind === "classification") {  // the image with its top classes written under it
    const lines = r.classes.slice(0, 3).map((c) => `${c.label} ${percent(c.probability)}`);
    const size = Math.max(14, Math.round(canvas.width / 22));
    const out = document.createElement("canvas");
    out.width = canvas.width;
    out.height = canvas.height + Math.round(size * 1.5 * lines.length + size * 0.6);
    const ctx = out.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(canvas, 0, 0);
    ctx.fillStyle = "#222";
    ctx.font = `${size}px sans-serif`;
    lines.forEach((line, i) => ctx.fillText(line, size * 0.4, canvas.height + size * 1.5 * (i + 1)));
    canvas = out;
  }
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

$("download-json").addEventListener("click", () => {
  save(new Blob([JSON.stringify(state.result, null, 2)], { type: "application/json" }), baseName() + ".json");
});
$("download-png").addEventListener("click", async () => {
  save(await pngOfResult(), baseName() + ".png");
});

// -- input --------------------------------------------------------------------------------------
async function choose(file) {
  if (!file || $("file").disabled) return;
  $("drop-text").textContent = `${file.name} (drop or choose another)`;
  state.stem = file.name.replace(/\.[^.]*$/, "");
  state.image = null;
  const url = URL.createObjectURL(file);
  try { state.image = await decodeImage(url); } catch (err) { /* the server says why */ }
  finally { URL.revokeObjectURL(url); }
  const form = new FormData();
  form.append("file", file);
  await predict(form, file.name);
}

function openPicker() {
  if (!$("file").disabled) $("file").click();
}

$("drop").addEventListener("click", openPicker);
$("drop").addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openPicker(); }
});
$("file").addEventListener("change", () => { const file = $("file").files[0]; $("file").value = ""; choose(file); });
$("drop").addEventListener("dragover", (e) => {
  e.preventDefault();
  if (!$("file").disabled) $("drop").classList.add("over");
});
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => {
  e.preventDefault();
  $("drop").classList.remove("over");
  choose(e.dataTransfer.files[0]);
});
$("opacity").addEventListener("input", () => { if (state.mask) drawMask(); });
$("generate").addEventListener("click", () => {
  const form = new FormData();
  form.append("seed", $("seed").value || "0");
  form.append("count", $("count").value || "16");
  predict(form, `seed ${$("seed").value || "0"}`);
});
loadModels().catch((err) => {
  $("status").textContent = "no models";
  showError(`cannot list the models (${err.message})`);
});
