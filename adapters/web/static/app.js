// lensgraph's page: search, stream the stages, show each result with its evidence, chat.
// Every piece of model or user text goes into the page as textContent (never as HTML); the card,
// evidence and stage markup is copied from <template> elements the server rendered with the same
// macros as the HTML report (pipeline/templates/cards.html).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const page = {
  reference: null,     // {file, url} for an upload, {id, name, url} for an indexed image
  retrieval: null,     // ids of this search's retrieval grid: later rankings show ▲/▼ against it
  shown: [],           // ids currently shown
  running: null,       // AbortController of the search in flight
  index: null,
  thread: localStorage.getItem("lensgraph-thread") || newThreadId(),
};

function newThreadId() {
  const id = "t" + Math.random().toString(36).slice(2, 10);
  localStorage.setItem("lensgraph-thread", id);
  return id;
}

function clone(id) {
  return document.getElementById(id).content.firstElementChild.cloneNode(true);
}

// state: "running", "done" or "error" (also on the element, for scripts and tests: data-state)
function setStatus(text, state = "done") {
  const status = $("#status");
  status.textContent = text;
  status.dataset.state = state;
  status.classList.toggle("error", state === "error");
}

class ApiError extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) $("#token-box").hidden = false;
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new ApiError(message);
  }
  return response;
}

// -- the index --------------------------------------------------------------------------------

async function loadIndex() {
  try {
    const info = await (await api("/api/index")).json();
    page.index = info;
    $("#index-info").textContent =
      `index ${info.name}: ${info.images} images, ${info.captions} captions · CLIP ${info.clip}` +
      (info.caption_encoder ? ` · captions by ${info.caption_encoder}` : "");
    const stages = $("#stages");
    stages.replaceChildren();
    for (const name of info.stages_available) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      stages.append(option);
    }
    stages.value = info.stages;
    $("#k").max = info.max_k;
    $("#k").value = Math.min(info.default_k, 12);
    if (!info.images_visible) {
      showNotice("The server was started without --root, so images cannot be shown or used as references.");
    }
  } catch (error) {
    $("#index-info").textContent = "";
    setStatus(error.message, "error");
  }
}

function showNotice(text) {
  const notice = $("#notice");
  notice.textContent = text;
  notice.hidden = false;
}

// -- the reference image ----------------------------------------------------------------------

function setReference(reference) {
  if (page.reference && page.reference.file) URL.revokeObjectURL(page.reference.url);
  page.reference = reference;
  const preview = $("#ref-preview");
  preview.hidden = !reference || !reference.url;
  if (reference && reference.url) preview.src = reference.url; else preview.removeAttribute("src");
  $("#clear-ref").hidden = !reference;
  $("#ref-hint").hidden = !!reference;
  $("#text").placeholder = reference
    ? "How should it change? (empty: images like it)"
    : "Describe the image, or how the reference should change";
}

function useFile(file) {
  if (!file || !file.type.startsWith("image/")) {
    setStatus("That is not an image file.", "error");
    return;
  }
  if (page.index && file.size > page.index.max_image_bytes) {
    setStatus(`The image is larger than the server's limit (${page.index.max_image_bytes.toLocaleString()} bytes).`, "error");
    return;
  }
  setReference({ file, url: URL.createObjectURL(file), name: file.name });
}

function wireReference() {
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    useFile(event.dataTransfer.files[0]);
  });
  $("#file").addEventListener("change", (event) => useFile(event.target.files[0]));
  document.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
    if (item) { event.preventDefault(); useFile(item.getAsFile()); }
  });
  $("#clear-ref").addEventListener("click", () => { setReference(null); $("#file").value = ""; });
}

// -- searching --------------------------------------------------------------------------------

function searchForm(text) {
  const form = new FormData();
  if (text) form.append("text", text);
  form.append("k", $("#k").value);
  if ($("#stages").value) form.append("stages", $("#stages").value);
  const reference = page.reference;
  if (reference && reference.file) form.append("reference", reference.file, reference.file.name || "reference");
  if (reference && reference.id) form.append("reference_id", reference.id);
  return form;
}

async function search(text) {
  if (page.running) page.running.abort();
  const controller = new AbortController();
  page.running = controller;
  clearExplanation();
  page.retrieval = null;
  $("#go").disabled = true;
  setStatus("Searching…", "running");
  const started = performance.now();
  try {
    const response = await api("/api/search/stream", { method: "POST", body: searchForm(text), signal: controller.signal });
    await readEvents(response, (name, data) => onEvent(name, data, started));
  } catch (error) {
    if (error.name !== "AbortError") setStatus(error.message, "error");
  } finally {
    if (page.running === controller) { page.running = null; $("#go").disabled = false; }
  }
}

// Server-Sent Events from a fetch body (EventSource cannot POST an upload).
async function readEvents(response, handle) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) handle(name, JSON.parse(data));
    }
  }
}

function onEvent(name, data, started) {
  if (name === "stage") {
    for (const entry of data.trace) addTraceRow(entry);
    fillExplanation(data.explanation);
    if (data.results) {
      // the first grid (the raw request's plain retrieval, or retrieval with the plan when there was
      // no preview) is what later rankings are compared with
      const first = page.retrieval === null;
      showResults(data.results, first);
      setStatus(`${data.stage}: ${data.results.length} results` + (first ? "" : ", re-ranked") + "; working…", "running");
    } else {
      setStatus(`${data.stage} done; working…`, "running");
    }
  } else if (name === "done") {
    fillExplanation(data.explanation);
    replaceTrace(data.trace);
    showResults(data.results, page.retrieval === null);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const warnings = data.warnings.length ? ` · ${data.warnings.length} warning(s), see Stages` : "";
    setStatus(`${data.results.length} results · ${data.stages.join(" → ")} · ${seconds} s${warnings}`);
  } else if (name === "error") {
    setStatus(data.error, "error");
  }
}

// -- results ----------------------------------------------------------------------------------

function move(card, id, rank, before) {
  const span = $(".move", card);
  if (!before) return;
  const was = before.indexOf(id);
  const delta = was - rank;
  if (was < 0) { span.textContent = "new"; span.classList.add("up"); }
  else if (delta === 0) { span.textContent = "="; span.classList.add("same"); }
  else if (delta > 0) { span.textContent = `▲${delta}`; span.classList.add("up"); }
  else { span.textContent = `▼${-delta}`; span.classList.add("down"); }
}

function fillThumb(card, result) {
  const img = $("img.thumb", card);
  if (result.thumbnail_url) {
    img.src = result.thumbnail_url;
    img.alt = result.name || result.id;
    img.addEventListener("error", () => missingThumb(img, "image unavailable"), { once: true });
  } else {
    missingThumb(img, "image outside the allowed folders");
  }
}

function missingThumb(img, text) {
  const box = document.createElement("div");
  box.className = "thumb missing";
  box.textContent = text;
  img.replaceWith(box);
}

function fillCheck(element, check) {
  const expectedProbability = check.p_expected;
  const symbol = check.answer === null ? ["bad", "⚠"]
    : expectedProbability === null ? ["unk", "?"]
    : expectedProbability > 0.5 ? ["ok", "✓"] : ["bad", "✗"];
  const mark = element.matches(".mark") ? element : $(".mark", element);
  mark.title = `${check.question} expected ${check.expected}; reply: ${check.answer === null ? "call failed" : check.answer}`;
  mark.firstElementChild.className = symbol[0];
  mark.firstElementChild.textContent = symbol[1];
  if (element.matches(".check")) {
    $(".q", element).textContent = check.question;
    $(".expected", element).textContent = `(expected ${check.expected})`;
    $(".a", element).textContent = check.answer === null ? "call failed" : check.answer;
    $(".p", element).textContent = expectedProbability === null ? "" : expectedProbability.toFixed(2);
  }
  return element;
}

function fillEvidence(card, evidence) {
  const details = $(".evidence", card), judge = $(".judge", card);
  if (!evidence) return;
  if (evidence.questions.length) {
    details.hidden = false;
    $(".passed", details).textContent = `${evidence.passed}/${evidence.questions.length}`;
    $(".marks", details).replaceChildren(...evidence.questions.map((q) => fillCheck(clone("tpl-mark"), q)));
    $(".checks", details).replaceChildren(...evidence.questions.map((q) => fillCheck(clone("tpl-check"), q)));
    $(".relevance", details).textContent = evidence.relevance === null ? "" : ` evidence ${evidence.relevance.toFixed(2)}`;
  }
  if (evidence.judge) {
    judge.hidden = false;
    const word = { true: "Yes", false: "No" }[String(evidence.judge.verdict)] || "unclear";
    $("b", judge).textContent = word;
    $(".p", judge).textContent = evidence.judge.p_yes === null ? "" : ` (${evidence.judge.p_yes.toFixed(2)})`;
    card.classList.toggle("yes", evidence.judge.verdict === true);
  }
}

function resultCard(result, rank, before) {
  const card = clone("tpl-card");
  card.dataset.id = result.id;
  card.dataset.relevance = result.relevance === null ? "" : String(result.relevance);
  fillThumb(card, result);
  $(".rank", card).textContent = `#${rank + 1}`;
  move(card, result.id, rank, before);
  $(".score", card).textContent = result.score.toFixed(4);
  const label = $(".id", card);
  label.textContent = result.name || result.id.slice(0, 16);
  label.title = result.name ? `${result.name} (${result.id})` : result.id;
  const caption = $(".caption", card);
  caption.textContent = result.caption || "";
  caption.hidden = !result.caption;
  fillEvidence(card, result.evidence);
  wireActions(card, result);
  return card;
}

function wireActions(card, result) {
  const asReference = () => ({ id: result.id, name: result.name, url: result.thumbnail_url });
  $(".more", card).hidden = !result.thumbnail_url;   // outside the roots: cannot be a reference
  $(".but", card).hidden = !result.thumbnail_url;
  $(".more", card).addEventListener("click", () => {
    setReference(asReference());
    $("#text").value = "";
    search("");
  });
  const form = $(".but-form", card);
  $(".but", card).addEventListener("click", () => { form.hidden = !form.hidden; if (!form.hidden) $(".but-text", form).focus(); });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const change = $(".but-text", form).value.trim();
    if (!change) return;
    setReference(asReference());
    $("#text").value = change;
    search(change);
  });
}

// The retrieval grid comes first; every later ranking (verify, judge, the final answer) shows how
// far each result moved since retrieval: what the reasoning stages changed.
function showResults(results, first = false) {
  const before = first ? null : page.retrieval;
  $("#results").replaceChildren(...results.map((r, i) => resultCard(r, i, before)));
  if (first) page.retrieval = results.map((r) => r.id);
  applyThreshold();
}

function applyThreshold() {
  const threshold = Number($("#threshold").value);
  $("#threshold-value").textContent = threshold.toFixed(2);
  let hidden = 0;
  for (const card of document.querySelectorAll("#results .card")) {
    const relevance = card.dataset.relevance;
    const hide = threshold > 0 && (relevance === "" || Number(relevance) < threshold);
    card.hidden = hide;
    hidden += hide;
  }
  $("#hidden-count").textContent = hidden ? `${hidden} hidden (unverified or below the threshold)` : "";
}

// -- the stage explanation --------------------------------------------------------------------

function fillList(dd, items, fill) {
  const list = $("ul, ol", dd);
  list.replaceChildren(...items.map((item) => { const li = document.createElement("li"); fill(li, item); return li; }));
  $(".none", dd).hidden = items.length > 0;
}

function bold(text) { const b = document.createElement("b"); b.textContent = text; return b; }

function fillExplanation(explanation) {
  const panel = $("#explain");
  $(".instruction", panel).textContent = explanation.instruction || "(none: images like the reference)";
  $(".caption-text", panel).textContent = explanation.caption;
  fillList($("dd.edits", panel), explanation.edits, (li, e) => li.append(bold(e.type), `: ${e.text}`));
  fillList($("dd.descriptions", panel), explanation.descriptions, (li, d) => li.append(d));
  fillList($("dd.questions", panel), explanation.questions, (li, q) => li.append(`${q.question} → `, bold(q.expected)));
}

function clearExplanation() {
  fillExplanation({ instruction: "", caption: "", edits: [], descriptions: [], questions: [] });
  $("#explain .trace tbody").replaceChildren();
}

function addTraceRow(entry) {
  const row = clone("tpl-trace-row");
  $(".stage", row).textContent = entry.stage + (entry.source ? ` (${entry.source})` : "");
  $(".seconds", row).textContent = entry.seconds.toFixed(3);
  $(".calls", row).textContent = entry.calls;
  $(".hits", row).textContent = entry.cache_hits;
  const warnings = $(".warn", row);
  for (const [i, text] of [...entry.warnings, ...(entry.fixes || []).map((f) => `fixed: ${f}`)].entries()) {
    if (i) warnings.append(document.createElement("br"));
    warnings.append(text);
  }
  $("#explain .trace tbody").append(row);
}

function replaceTrace(trace) {
  $("#explain .trace tbody").replaceChildren();
  trace.forEach(addTraceRow);
}

// -- chat -------------------------------------------------------------------------------------

function showThread(thread) {
  const log = $("#chat-log");
  log.replaceChildren(...thread.turns.map((turn) => {
    const li = document.createElement("li");
    const description = document.createElement("div");
    description.className = "description";
    description.textContent = `→ ${turn.description}`;
    li.append(turn.message, description);
    return li;
  }));
  // The thread's reference, kept by the server until another is sent (an upload has no thumbnail).
  const ref = $("#chat-ref");
  ref.hidden = !thread.reference_id;
  if (thread.reference_id) {
    const img = $("img", ref);
    img.hidden = false;
    img.onerror = () => { img.hidden = true; };
    img.src = `/api/images/${encodeURIComponent(thread.reference_id)}/thumbnail?size=64`;
  }
}

function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("Could not read the reference image."));
    reader.readAsDataURL(file);
  });
}

async function loadThread() {
  try {
    showThread(await (await api(`/api/chat/${encodeURIComponent(page.thread)}`)).json());
  } catch (error) { /* shown when the user sends a message */ }
}

async function sendChat(message) {
  setStatus("Chat: searching…", "running");
  try {
    // The page's reference image, if one is set, becomes the thread's (it stays for later turns).
    const reference = page.reference;
    const body = JSON.stringify({
      message, k: Number($("#k").value),
      ...(reference && reference.id ? { reference_id: reference.id } : {}),
      ...(reference && reference.file ? { reference_image: await dataUrl(reference.file) } : {}),
    });
    const response = await api(`/api/chat/${encodeURIComponent(page.thread)}`,
      { method: "POST", body, headers: { "Content-Type": "application/json" } });
    const thread = await response.json();
    showThread(thread);
    clearExplanation();
    if (thread.explanation) fillExplanation(thread.explanation);
    replaceTrace(thread.trace);
    showResults(thread.results, true);
    setStatus(`${thread.results.length} results for the thread's description`);
  } catch (error) {
    setStatus(error.message, "error");
  }
}

// -- start ------------------------------------------------------------------------------------

function start() {
  wireReference();
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("#text").value.trim();
    if (!text && !page.reference) { setStatus("Type what to look for, or give a reference image.", "error"); return; }
    search(text);
  });
  $("#threshold").addEventListener("input", applyThreshold);
  $("#chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#chat-text");
    if (input.value.trim()) { sendChat(input.value.trim()); input.value = ""; }
  });
  $("#new-thread").addEventListener("click", () => { page.thread = newThreadId(); showThread({ turns: [] }); });
  loadIndex();
  loadThread();
}

start();
