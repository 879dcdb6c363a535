// weighter serve: the pages, drawn from the JSON API (/api/...). No build step, no library.
"use strict";

const view = document.getElementById("view");
const player = document.getElementById("player");
let stopAt = null;  // seconds: the playing span's end, where the player pauses

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({error: `${response.status} ${response.statusText}`}));
  if (!response.ok) throw new Error(body.error || (body.detail && JSON.stringify(body.detail)) || response.statusText);
  return body;
}

const infoReady = api("/api/info");  // the store, and whether this server takes writes (read_only)
const fmt = (x, digits = 2) => (x === null || x === undefined ? "-" : Number(x).toFixed(digits));
const name = (path) => path.split("/").pop();

// -- playing -------------------------------------------------------------------------------
// src: an audio URL; start, end: seconds. Plays exactly [start, end) of the file.
function play(src, start, end, label) {
  const begin = () => {
    player.currentTime = start;
    stopAt = end;
    player.play().catch((error) => showError(`cannot play: ${error.message}`));
  };
  document.getElementById("now").textContent = `${label}  ${fmt(start, 1)}-${fmt(end, 1)} s`;
  player.dataset.spanStart = start;
  if (player.dataset.src !== src) {
    player.dataset.src = src;
    player.src = src;
    player.addEventListener("loadedmetadata", begin, {once: true});
    player.load();
  } else {
    begin();
  }
}
player.addEventListener("playing", () => { player.dataset.playedFrom = player.currentTime; });
player.addEventListener("timeupdate", () => {
  if (stopAt !== null && player.currentTime >= stopAt) { player.pause(); stopAt = null; }
});

// A timeline of a file of `duration` s with its spans [[a, b], ...] as buttons that play them.
function timeline(spans, duration, src, label) {
  const bar = el("div", {class: "timeline", title: `${fmt(duration, 1)} s`});
  for (const [a, b] of spans) {
    const left = (100 * a) / duration, width = (100 * (b - a)) / duration;
    bar.append(el("button", {class: "span", style: `left:${left}%;width:${width}%`,
      title: `${fmt(a, 1)}-${fmt(b, 1)} s`, "data-start": a, "data-end": b,
      onclick: (event) => {
        document.querySelectorAll(".span.playing").forEach((s) => s.classList.remove("playing"));
        event.currentTarget.classList.add("playing");
        play(src, a, b, label);
      }}));
  }
  return bar;
}

const audioUrl = (fileId) => `/api/audio/${fileId}`;
const speakerHref = (speaker) => `#/speaker/${encodeURIComponent(speaker)}`;

// A group id as a link, with the name the group carries linked to that speaker's page.
function groupCell(group, speaker) {
  if (group === null || group === undefined) return "-";
  if (group < 0) return "outlier";
  return el("span", {}, el("a", {href: `#/group/${group}`}, `group ${group}`),
    speaker ? [" (", el("a", {class: "speaker-name", href: speakerHref(speaker)}, speaker), ")"] : null);
}

// -- search --------------------------------------------------------------------------------
let uploadUrl = null;  // the uploaded file, played from the browser's own copy

function searchPage(fileId) {
  const input = el("input", {id: "file-search", type: "search", placeholder: "search stored files by name", size: 40});
  const list = el("div", {class: "files", id: "file-list"});
  const upload = el("input", {id: "upload", type: "file", accept: "audio/*,.flac,.wav,.mp3,.ogg"});
  const results = el("div", {id: "results"});
  let asked = 0;  // each keystroke asks again; answers may come back out of order
  const find = async () => {
    const mine = ++asked;
    try {
      const found = await api(`/api/files?limit=30&q=${encodeURIComponent(input.value)}`);
      if (mine !== asked) return;  // a later keystroke's answer is the one to show
      list.replaceChildren(...found.files.map((f) =>
        el("button", {class: "file", "data-id": f.id, onclick: () => { location.hash = `#/search/${f.id}`; }},
          `${f.name} (${fmt(f.duration, 0)} s)`)),
        ...(found.total > found.files.length ? [el("span", {class: "muted"}, ` ... ${found.total} in all`)] : []));
    } catch (error) { showError(error.message); }
  };
  input.addEventListener("input", find);
  const send = async () => {
    if (!upload.files.length) return showError("choose an audio file first");
    const form = new FormData();
    form.append("file", upload.files[0]);
    form.append("k", "10");
    results.replaceChildren(el("p", {class: "muted"}, "embedding the upload..."));
    try {
      const answer = await api("/api/query", {method: "POST", body: form});
      if (uploadUrl) URL.revokeObjectURL(uploadUrl);
      uploadUrl = URL.createObjectURL(upload.files[0]);
      showError("");
      showResults(results, answer, uploadUrl);
    } catch (error) {
      results.replaceChildren();
      showError(error.message);
    }
  };
  const who = el("input", {id: "speaker-search", type: "search", placeholder: "a named speaker", size: 24,
    list: "speaker-names"});
  const names = el("datalist", {id: "speaker-names"});
  api("/api/speakers").then((found) => names.replaceChildren(...found.speakers.map((sp) => el("option", {value: sp.name}))))
    .catch((error) => showError(error.message));
  const findSpeaker = () => {
    if (!who.value.trim()) return showError("type a speaker's name first");
    location.hash = speakerHref(who.value.trim());
  };
  who.addEventListener("keydown", (event) => { if (event.key === "Enter") findSpeaker(); });
  view.replaceChildren(
    el("h2", {}, "Search"),
    el("div", {class: "row"}, "every file where ", who, names, " is heard ",
      el("button", {id: "speaker-go", onclick: findSpeaker}, "Find speaker")),
    el("div", {class: "row"}, input),
    list,
    el("div", {class: "row", id: "upload-row"}, "or upload a file (not stored): ", upload,
      el("button", {id: "upload-go", onclick: send}, "Search with this file")),
    results);
  infoReady.then((info) => { document.getElementById("upload-row").hidden = info.read_only; }).catch(() => {});
  find();
  if (fileId !== undefined) {
    results.replaceChildren(el("p", {class: "muted"}, "searching..."));
    api(`/api/query?k=10&file_id=${fileId}`).then((answer) => showResults(results, answer, audioUrl(fileId)))
      .catch((error) => showError(error.message));
  }
}

// The ranked files of a query (the `weighter query --json` shape) with their two timelines.
function showResults(container, answer, querySrc) {
  const q = answer.query;
  const head = el("p", {id: "query-head"}, "Files sharing a voice with ",
    q.stored ? el("a", {href: `#/file/${q.file_id}`}, name(q.file)) : el("strong", {}, name(q.file)),
    ` (${fmt(q.duration, 1)} s, active slots ${q.active_slots.join(", ") || "none"})`);
  const rows = answer.results.map((m, i) => el("tr", {class: "result"},
    el("td", {class: "num"}, i + 1),
    el("td", {}, el("a", {href: `#/file/${m.file_id}`}, name(m.file))),
    el("td", {class: "num"}, fmt(m.score)),
    el("td", {class: "num"}, fmt(m.probability)),
    el("td", {class: "num"}, `${m.query_slot} -> ${m.stored_slot}`),
    el("td", {class: "group"}, groupCell(m.group, m.speaker)),
    el("td", {style: "width:45%"},
      el("div", {class: "tl"}, el("span", {class: "tl-label"}, "query"),
        timeline(m.query_spans, q.duration, querySrc, `${name(q.file)} slot ${m.query_slot}`)),
      el("div", {class: "tl"}, el("span", {class: "tl-label"}, "result"),
        timeline(m.stored_spans, m.duration, audioUrl(m.file_id), `${name(m.file)} slot ${m.stored_slot}`)))));
  container.replaceChildren(head, answer.results.length ? el("table", {id: "result-table"},
    el("tr", {}, ["#", "file", "score", "p", "slots", "group", "where the voice is heard (click to play)"].map((h) => el("th", {}, h))),
    rows) : el("p", {}, "No stored file shares a voice with it."));
}

// -- groups --------------------------------------------------------------------------------
async function groupsPage() {
  view.replaceChildren(el("h2", {}, "Groups"), el("p", {class: "muted"}, "loading..."));
  const result = await api("/api/groups?members=false");
  const r = result.run;
  view.replaceChildren(
    el("h2", {}, "Groups"),
    el("p", {id: "run-head"}, `Run ${r.id}: ${r.slots} slots in ${r.groups} groups, ${fmt(100 * r.outlier_share, 0)}% outliers`,
      r.groups_may_be_chance ? el("strong", {}, " (no group stands clearly apart: these groups may be chance)") : null),
    el("div", {class: "split"},
      el("table", {id: "group-table"},
        el("tr", {}, ["group", "name", "slots", "files", "persistence", "example files"].map((h) => el("th", {}, h))),
        result.groups.map((g) => el("tr", {class: "group"},
          el("td", {}, el("a", {href: `#/group/${g.id}`}, `group ${g.id}`)),
          el("td", {}, g.name ? el("a", {href: speakerHref(g.name)}, g.name) : "-"),
          el("td", {class: "num"}, g.size), el("td", {class: "num"}, g.files),
          el("td", {class: "num"}, fmt(g.persistence)), el("td", {}, g.examples.join(", "))))),
      el("img", {class: "map", src: `/api/groups/map.png?run=${r.id}`, alt: "2-D map of the groups"})));
}

async function groupPage(groupId) {
  const result = await api(`/api/groups/${groupId}`);
  const readOnly = (await infoReady).read_only;
  const g = result.group;
  const field = el("input", {id: "group-name", type: "text", placeholder: "who is this?", size: 24, maxlength: 100});
  const give = async () => {
    const form = new FormData();
    form.append("name", field.value);
    form.append("run", String(result.run.id));
    try {
      await api(`/api/groups/${g.id}/name`, {method: "POST", body: form});
      await groupPage(groupId);
    } catch (error) { showError(error.message); }
  };
  field.addEventListener("keydown", (event) => { if (event.key === "Enter") give(); });
  view.replaceChildren(
    el("h2", {id: "group-head"}, `Group ${g.id}`, g.name ? [" - ", el("a", {href: speakerHref(g.name)}, g.name)] : null),
    el("p", {}, el("a", {href: "#/groups"}, "all groups"),
      ` - ${g.size} slots in ${g.files} files, persistence ${fmt(g.persistence)} (run ${result.run.id})`),
    g.name || readOnly ? null : el("p", {class: "row"}, "Name this voice: ", field,
      el("button", {id: "group-name-go", onclick: give}, "Save name"),
      el("span", {class: "muted"}, " its slots become the speaker's references; later runs carry the name")),
    el("table", {id: "member-table"},
      el("tr", {}, ["file", "slot", "membership", "how", "where heard (click to play)"].map((h) => el("th", {}, h))),
      g.members.map((m) => el("tr", {class: "member"},
        el("td", {}, el("a", {href: `#/file/${m.file_id}`}, name(m.file))),
        el("td", {class: "num"}, m.slot), el("td", {class: "num"}, fmt(m.probability)), el("td", {}, m.how),
        el("td", {style: "width:45%"}, timeline(m.spans, m.duration, audioUrl(m.file_id), `${name(m.file)} slot ${m.slot}`))))));
}

// -- named speakers ------------------------------------------------------------------------
async function speakersPage() {
  const found = await api("/api/speakers");
  const place = Object.fromEntries(found.names.map((n) => [n.name, n]));
  view.replaceChildren(
    el("h2", {}, "Speakers"),
    found.speakers.length ? el("table", {id: "speaker-table"},
      el("tr", {}, ["name", "references", "speech (s)", `in run ${found.run ?? "-"}`].map((h) => el("th", {}, h))),
      found.speakers.map((sp) => {
        const n = place[sp.name];
        return el("tr", {class: "speaker"},
          el("td", {}, el("a", {href: speakerHref(sp.name)}, sp.name)),
          el("td", {class: "num"}, sp.references), el("td", {class: "num"}, fmt(sp.seconds, 1)),
          el("td", {}, !n ? "-" : n.status === "named" ? el("a", {href: `#/group/${n.group}`}, `group ${n.group}`) : n.status));
      })) : el("p", {}, "No named speakers yet: name a group on its page, or `weighter speaker enrol NAME CLIP...`."));
}

// Every file where a named speaker is heard (`weighter query --speaker NAME --json`), spans playable.
async function speakerPage(speaker) {
  view.replaceChildren(el("h2", {}, speaker), el("p", {class: "muted"}, "searching..."));
  const answer = await api(`/api/speakers/${encodeURIComponent(speaker)}?k=50`);
  const sp = answer.speaker, n = answer.in_run;
  const where = !n ? "" : n.status === "named" ? ` - carried by group ${n.group} of run ${answer.run}` :
    ` - no group of run ${answer.run} carries the name (${n.status})`;
  view.replaceChildren(
    el("h2", {id: "speaker-head"}, sp.name),
    el("p", {}, `${sp.references} reference(s), ${fmt(sp.seconds, 1)} s of speech from ${sp.origins.join(", ")}${where}`),
    answer.results.length ? el("table", {id: "speaker-files"},
      el("tr", {}, ["#", "file", "p", "group", "where heard (click to play)"].map((h) => el("th", {}, h))),
      answer.results.map((m, i) => el("tr", {class: "result"},
        el("td", {class: "num"}, i + 1),
        el("td", {}, el("a", {href: `#/file/${m.file_id}`}, name(m.file))),
        el("td", {class: "num"}, fmt(m.probability)),
        el("td", {class: "group"}, groupCell(m.group, m.speaker)),
        el("td", {style: "width:50%"}, timeline(m.stored_spans, m.duration, audioUrl(m.file_id), `${name(m.file)} slot ${m.stored_slot}`)))))
      : el("p", {}, "No stored file."));
}

// -- one file ------------------------------------------------------------------------------
// A slot's weighting over time (T values at `rate` Hz) on a canvas; a click plays from there.
function weightCanvas(weights, rate, duration, src, label) {
  const canvas = el("canvas", {class: "weights", width: 800, height: 40});
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#2a7";
  const step = canvas.width / weights.length;
  weights.forEach((w, t) => ctx.fillRect(t * step, canvas.height * (1 - w), Math.max(step, 1), canvas.height * w));
  canvas.addEventListener("click", (event) => {
    const at = (duration * event.offsetX) / canvas.clientWidth;
    play(src, at, duration, label);
  });
  return canvas;
}

async function filePage(fileId) {
  const page = await api(`/api/files/${fileId}`);
  const s = page.set, src = audioUrl(fileId);
  const groups = Object.fromEntries(page.slot_groups.map((g) => [g.slot, g]));
  const slots = s.slots.filter((slot) => slot.active || groups[slot.slot]);
  view.replaceChildren(
    el("h2", {}, page.file.name),
    el("p", {}, `${fmt(page.file.duration, 1)} s, active slots: ${s.slots.filter((x) => x.active).length} of ${s.slots.length} `,
      el("button", {onclick: () => play(src, 0, page.file.duration, page.file.name)}, "play all"), " ",
      el("a", {href: `#/search/${fileId}`}, "search with this file"),
      el("span", {class: "muted"}, ` ${page.file.path}`)),
    el("table", {id: "slot-table"},
      el("tr", {}, ["slot", "confidence", "group", "weighting over time (click to play from there)"].map((h) => el("th", {}, h))),
      slots.map((slot) => {
        const g = groups[slot.slot];
        return el("tr", {class: "slot"},
          el("td", {class: "num"}, slot.slot, slot.active ? "" : " (inactive)"),
          el("td", {class: "num"}, fmt(slot.confidence)),
          el("td", {}, !g ? "-" : groupCell(g.group, g.name)),
          el("td", {style: "width:60%"},
            weightCanvas(s.weightings[slot.slot], s.timeline_rate, s.duration, src, `${page.file.name} slot ${slot.slot}`),
            timeline(slot.spans || [], s.duration, src, `${page.file.name} slot ${slot.slot}`)));
      })),
    el("h3", {}, "Nearest files"),
    el("div", {id: "nearest"}));
  showResults(document.getElementById("nearest"), page.nearest, src);
}

// -- routing -------------------------------------------------------------------------------
async function route() {
  showError("");
  const [, page, id, ...rest] = (location.hash || "#/search").split("/");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("current", a.id === `nav-${page}`));
  try {
    if (page === "groups") await groupsPage();
    else if (page === "group") await groupPage(Number(id));
    else if (page === "file") await filePage(Number(id));
    else if (page === "speakers") await speakersPage();
    else if (page === "speaker") await speakerPage(decodeURIComponent([id, ...rest].join("/")));
    else searchPage(id === undefined ? undefined : Number(id));
  } catch (error) {
    showError(error.message);
  }
}

window.addEventListener("hashchange", route);
infoReady.then((info) => {
  document.getElementById("store-info").textContent =
    `${info.store}: ${info.files} files, ${info.active_slots} active slots${info.read_only ? " (read-only)" : ""}`;
}).catch((error) => showError(error.message));
route();
