// The page: upload an X-ray to /v1/predict, draw the boxes over it, show the class bars,
// the screening threshold and the decision. Plain JS, no build step, no CDN.
"use strict";
const $ = (id) => document.getElementById(id);
let model = null;
let objectUrl = null;

async function loadModel() {
  try {
    const r = await fetch("/v1/model");
    model = await r.json();
    const t = model.screening.threshold;
    $("model-line").textContent = `run ${model.run.split("/").slice(-2).join("/")} · ${model.classes.length} classes · ` +
      `input ${model.input.size}px (${model.input.resize}) · screening threshold ${t === null ? "none" : t.toFixed(3)}`;
  } catch (e) {
    $("model-line").textContent = "could not reach the model: " + e;
  }
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function predict(file) {
  setStatus(`predicting ${file.name}…`, false);
  const gradcam = $("want-gradcam").checked;
  const query = gradcam ? "?overlay=true&gradcam=true" : "";
  let r, body;
  try {
    r = await fetch("/v1/predict" + query, { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
    body = await r.json();
  } catch (e) {
    setStatus("request failed: " + e, true);
    return;
  }
  if (!r.ok) {
    setStatus(`${r.status}: ${body.error ? body.error.message : JSON.stringify(body)}`, true);
    $("result").hidden = true;
    return;
  }
  show(file, body);
}

function show(file, res) {
  $("result").hidden = false;
  setStatus(`${file.name}: ${res.image.width} x ${res.image.height} ${res.image.format}, ${res.timings_ms.total.toFixed(0)} ms`, false);
  const img = $("image");
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(file);
  img.onload = () => drawBoxes(res);
  img.onerror = async () => {  // a format the browser cannot show (16-bit, DICOM): the server's overlay
    const r = await fetch("/v1/predict?overlay=true", { method: "POST", body: file });
    const b = await r.json();
    if (b.overlay_png) { img.onerror = null; img.onload = () => { $("boxes").innerHTML = ""; }; img.src = "data:image/png;base64," + b.overlay_png; }
  };
  img.src = objectUrl;
  const s = res.screening;
  const fracture = s.decision === "fracture";
  $("decision").textContent = fracture ? `Fracture suspected: ${res.boxes.length ? res.boxes[0].class : res.predicted_class}` : "No finding";
  $("decision").className = fracture ? "fracture" : "negative";
  $("threshold").textContent = s.threshold === null
    ? `No threshold locked: ${s.rule}.`
    : `Screening score ${s.score.toFixed(3)} vs threshold ${s.threshold.toFixed(3)} (${s.rule}; ${s.threshold_source}).`;
  const bars = $("bars");
  bars.innerHTML = "";
  const entries = Object.entries(res.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of entries) {
    const li = document.createElement("li");
    li.className = "class-bar" + (name === res.predicted_class ? " top" : "");
    li.dataset.cls = name;
    li.innerHTML = `<span class="name"></span><span class="bar"><div></div></span><span class="p"></span>`;
    li.querySelector(".name").textContent = name;
    li.querySelector(".bar div").style.width = (100 * p).toFixed(1) + "%";
    li.querySelector(".p").textContent = (100 * p).toFixed(1) + "%";
    bars.appendChild(li);
  }
  const t = res.timings_ms;
  $("timings").textContent = `read ${t.read} ms · decode ${t.decode} ms · queue ${t.queue_ms} ms · model ${t.model_ms} ms (batch of ${t.batch_size}) · total ${t.total} ms`;
  const cam = $("gradcam");
  cam.hidden = !res.gradcam_png;
  if (res.gradcam_png) cam.src = "data:image/png;base64," + res.gradcam_png;
}

function drawBoxes(res) {
  const layer = $("boxes");
  layer.innerHTML = "";
  const img = $("image");
  const w = img.clientWidth, h = img.clientHeight;
  for (const b of res.boxes) {
    const [x1, y1, x2, y2] = b.box;
    const div = document.createElement("div");
    div.className = "box";
    div.style.left = x1 * w + "px";
    div.style.top = y1 * h + "px";
    div.style.width = (x2 - x1) * w + "px";
    div.style.height = (y2 - y1) * h + "px";
    const label = document.createElement("span");
    label.textContent = `${b.class} ${b.score.toFixed(2)}`;
    div.appendChild(label);
    layer.appendChild(div);
  }
}

const drop = $("drop");
["dragenter", "dragover"].forEach((e) => drop.addEventListener(e, (ev) => { ev.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((e) => drop.addEventListener(e, (ev) => { ev.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (ev) => { if (ev.dataTransfer.files.length) predict(ev.dataTransfer.files[0]); });
$("file").addEventListener("change", (ev) => { if (ev.target.files.length) predict(ev.target.files[0]); });
loadModel();
