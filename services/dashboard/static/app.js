// The avsurv dashboard: plain ES module, no build step. Everything comes from the gateway's JSON and
// Server-Sent Events endpoints, which call the public gRPC API with the user's token.

const TOKEN_KEY = "avsurv-token";
const KNOWN_EVENT_FIELDS = new Set(["header", "event_id", "start_time", "end_time", "peak_score", "peak_time",
  "threshold", "model_version", "clip_ids", "detector", "label", "thumbnail", "frames", "peak_clip_id",
  "thumbnail_jpeg", "deviation", "visual", "audio", "normal_clip_ids", "evidence_uri"]);
// AnomalyEvent.deviation in words: which modality made the event.
const DEVIATIONS = {
  VISUAL: "The picture is unlike this camera's history; the sound is not.",
  AUDIO: "The sound is unlike this camera's history; the picture is not.",
  BOTH: "Both the picture and the sound are unlike this camera's history.",
  DISAGREE: "Sound and picture do not fit each other (Eq. 5).",
  UNEXPLAINED: "No per-modality explanation (a head's event: its label says what it saw).",
};
const MODES = { av: "sound and picture", audio: "sound only", visual: "picture only" };
const events = new Map();  // event id -> {event, seen: "new" | "update" | "end" (live) or "", at}
let feedListeners = [];

// ---- helpers -------------------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const svg = (tag, attrs = {}) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
};

const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
const score = (value) => Number(value).toFixed(3);
const FRAMES_PER_CLIP = 5;  // a stored clip's pictures (GetClip's frames_jpeg)
const EVIDENCE_MARGIN_S = 2;  // seconds of evidence before and after an event

// A file from the gateway as an object URL, with its response. Fetched, not an <img> or <video> src,
// which could not send the Authorization header.
async function fileUrl(path) {
  const response = await fetch(path, { headers: authHeaders() });
  if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error || `HTTP ${response.status}`);
  return { url: URL.createObjectURL(await response.blob()), response };
}

// A clip's picture from the gateway's /api/clip.jpg (EventSearch.GetClip); the clip's thumbnail when the
// frame is omitted.
function clipImage(clipId, attrs, frame) {
  const query = new URLSearchParams({ clip_id: clipId, ...(frame === undefined ? {} : { frame }) });
  const image = h("img", attrs);
  fileUrl(`/api/clip.jpg?${query}`)
    .then(({ url }) => { image.src = url; })
    .catch((error) => { image.alt = `${attrs.alt}: ${error.message}`; image.classList.add("missing"); });
  return image;
}

// The event's seconds with their sound (Anomalies.Export, an mp4), to play and to save under the name the
// gateway gives it.
function evidence(e) {
  const source = `/api/events/${encodeURIComponent(e.event_id)}/evidence.mp4?margin_s=${EVIDENCE_MARGIN_S}`;
  const video = h("video", { id: "evidence", controls: true, preload: "metadata", "data-source": source });
  const link = h("a", { id: "evidence-download", hidden: true }, "download evidence");
  const state = h("p", { class: "muted" }, "loading the event's seconds with their sound…");
  fileUrl(source).then(({ url, response }) => {
    const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    Object.assign(link, { href: url, download: name ? name[1] : "evidence.mp4", hidden: false });
    video.src = url;
    state.textContent = `${EVIDENCE_MARGIN_S} s before and after the event, as the clip store holds them.`;
  }).catch((error) => {
    state.textContent = `No evidence: ${error.message}`;
    state.className = "missing-data";
  });
  return h("section", {}, h("h2", {}, "Picture and sound"), video, state, link);
}

// The event's clip at its peak (clip ids are camera:start in ms), else its first.
function peakClip(e) {
  if (e.peak_clip_id) return e.peak_clip_id;
  const starts = e.clip_ids.map(clipStart);
  const index = starts.findIndex((start) => start <= e.peak_time && e.peak_time < start + 1);
  return e.clip_ids[Math.max(index, 0)];
}

function authHeaders() {
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function notice(text) {
  const box = document.getElementById("notice");
  box.textContent = text || "";
  box.hidden = !text;
}

async function api(path, body) {
  const options = body === undefined ? { headers: authHeaders() } : {
    method: "POST", body: JSON.stringify(body), headers: { ...authHeaders(), "Content-Type": "application/json" },
  };
  const response = await fetch(path, options);
  const value = await response.json();
  if (!response.ok) {
    const why = { 401: "the API needs a token: enter one above", 403: "this needs a control token" }[response.status];
    throw new Error(`${value.error || response.statusText}${why ? ` (${why})` : ""}`);
  }
  return value;
}

// ---- live feed: the API's Anomalies.Watch, relayed as Server-Sent Events --------------------------------
// Read with fetch rather than EventSource, which cannot send the Authorization header.

function remember(event, live) {
  if (!live && events.has(event.event_id)) return;  // the feed's copy is as new or newer
  const seen = (event.phase || "END").toLowerCase();  // the lifecycle message: new, update or end
  events.set(event.event_id, { event, seen: live ? seen : "", at: Date.now() });
  if (live) feedListeners.forEach((listener) => listener(event));
}

async function follow() {
  const state = document.getElementById("feed-state");
  for (;;) {
    try {
      const response = await fetch("/api/watch", { headers: authHeaders() });
      if (!response.ok) throw new Error(`feed: HTTP ${response.status}`);
      state.textContent = "feed: live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          relay(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      state.textContent = `feed: ${error.message}`;
    }
    state.textContent = "feed: reconnecting";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function relay(block) {
  const lines = block.split("\n");
  const kind = (lines.find((l) => l.startsWith("event: ")) || "").slice(7);
  const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
  if (kind === "anomaly") remember(JSON.parse(data), true);
  if (kind === "error") document.getElementById("feed-state").textContent = `feed: ${JSON.parse(data).error}`;
}

// ---- pages ---------------------------------------------------------------------------------------------

function eventRow(entry) {
  const e = entry.event;
  return h("tr", { class: entry.seen && Date.now() - entry.at < 2000 ? "fresh" : "", "data-event": e.event_id },
    h("td", {}, entry.seen ? h("span", { class: `badge ${entry.seen}` }, entry.seen) : ""),
    h("td", {}, e.header.camera_id),
    h("td", {}, `${clock(e.start_time)}–${clock(e.end_time)}`),
    h("td", {}, score(e.peak_score)),
    h("td", {}, score(e.threshold)),
    h("td", {}, e.detector || "d(z_v, z_a)"),
    h("td", {}, e.model_version),
    h("td", {}, h("a", { href: `#/event/${encodeURIComponent(e.event_id)}` }, "open")));
}

// One camera's chart: each scored clip's score (Anomalies.Scores, a line), the threshold each was held
// against (dashed: it moves when the calibration does), flagged clips (red dots) and the events' peaks.
function timeline(camera, points, list, [t0, t1]) {
  const width = 1000, height = 140, pad = 24;
  const peaks = list.filter((e) => t0 <= e.peak_time && e.peak_time <= t1);
  const values = [...points.flatMap((p) => [p.score, p.threshold]), ...peaks.flatMap((e) => [e.peak_score, e.threshold])];
  if (!values.length) values.push(0, 1);  // nothing of this camera in the window: an empty chart
  // Scores and thresholds sit close together (an untrained model's differ by hundredths): zoom on them.
  const margin = (Math.max(...values) - Math.min(...values)) * 0.15 || Math.abs(values[0]) * 0.05 || 1;
  const [v0, v1] = [Math.min(...values) - margin, Math.max(...values) + margin];
  const x = (t) => (pad + ((t - t0) / (t1 - t0)) * (width - 2 * pad)).toFixed(1);
  const y = (v) => (height - pad - ((v - v0) / (v1 - v0)) * (height - 2 * pad)).toFixed(1);
  const chart = svg("svg", { class: "timeline", viewBox: `0 0 ${width} ${height}`, "data-camera": camera });
  const line = (coordinates) => coordinates.map(([cx, cy], i) => `${i ? "L" : "M"}${cx},${cy}`).join(" ");
  // A clip's score holds for its second: the point sits at the clip's middle.
  chart.append(svg("path", { class: "scores", "data-points": points.length, fill: "none", stroke: "#2f6fdf",
    "stroke-width": 1.5, d: line(points.map((p) => [x(p.capture_time + 0.5), y(p.score)])) }));
  chart.append(svg("path", { class: "threshold", fill: "none", stroke: "#c0392b", "stroke-dasharray": "4 3",
    d: line(points.flatMap((p) => [[x(p.capture_time), y(p.threshold)], [x(p.capture_time + 1), y(p.threshold)]])) }));
  for (const p of points.filter((point) => point.anomalous)) {
    chart.append(svg("circle", { cx: x(p.capture_time + 0.5), cy: y(p.score), r: 2.5, fill: "#c0392b", class: "anomalous" }));
  }
  for (const e of peaks) {
    const dot = svg("circle", { cx: x(e.peak_time + 0.5), cy: y(e.peak_score), r: 4, fill: "none", stroke: "#1d232a",
      "stroke-width": 1.5, class: "peak" });
    dot.append(svg("title"));
    dot.firstChild.textContent = `${clock(e.peak_time)} peak ${score(e.peak_score)} (threshold ${score(e.threshold)})`;
    chart.append(dot);
  }
  const axis = svg("text", { x: pad, y: height - 6, "font-size": 11, fill: "#6b7580" });
  axis.textContent = `${clock(t0)} … ${clock(t1)}   score ${score(v0)}–${score(v1)}; blue: each clip's score, ` +
    "dashed: threshold, red: flagged clips, rings: event peaks";
  chart.append(axis);
  return chart;
}

const TIMELINE_POINTS = 600;  // the last 10 minutes of each camera's 1 s clips
const TIMELINE_REFRESH_MS = 2000;

function liveView(view) {
  const body = h("tbody");
  const timelines = h("div", { id: "timelines" });
  let drawing = null;
  // Every camera's series through the gateway's /api/scores (Anomalies.Scores), on one time axis so that
  // cameras line up; a camera without a scored clip yet says so.
  const drawTimelines = async () => {
    const listed = [...events.values()].map((entry) => entry.event);
    const cameras = new Set(listed.map((e) => e.header.camera_id));
    (await api("/api/cameras")).cameras.forEach((c) => cameras.add(c.camera_id));
    const names = [...cameras].sort();
    const series = await Promise.all(names.map((camera) =>
      api(`/api/scores?${new URLSearchParams({ camera, limit: TIMELINE_POINTS })}`).then((s) => s.points)));
    const times = series.flat().flatMap((p) => [p.capture_time, p.capture_time + 1]);
    if (!times.length) listed.forEach((e) => times.push(e.start_time, e.end_time));
    const span = Math.max(...times) - Math.min(...times) || 10;
    const domain = [Math.min(...times) - span * 0.02, Math.max(...times) + span * 0.02];
    timelines.replaceChildren(...names.map((camera, i) => h("div", {}, h("h3", {}, camera),
      series[i].length || listed.some((e) => e.header.camera_id === camera)
        ? timeline(camera, series[i], listed.filter((e) => e.header.camera_id === camera), domain)
        : h("p", { class: "muted" }, "No clip scored against a calibration yet."))));
  };
  const redraw = () => {
    if (!drawing) drawing = drawTimelines().catch((error) => notice(error.message)).finally(() => { drawing = null; });
  };
  const draw = () => {
    const entries = [...events.values()].sort((a, b) => b.event.start_time - a.event.start_time);
    body.replaceChildren(...entries.map(eventRow));
    redraw();
  };
  view.replaceChildren(
    h("section", {}, h("h2", {}, "Live events"),
      h("table", { id: "feed" }, h("thead", {}, h("tr", {}, ["", "camera", "time", "peak", "threshold", "detector",
        "model", ""].map((name) => h("th", {}, name)))), body)),
    h("section", {}, h("h2", {}, "Per-camera timeline"),
      h("p", { class: "muted" }, `Each clip's score against the threshold it was held against (the label-free ` +
        `detector's, the last ${TIMELINE_POINTS} clips of each camera), and the events' peaks.`), timelines));
  draw();
  feedListeners = [draw];
  const timer = setInterval(() => (view.contains(timelines) ? redraw() : clearInterval(timer)), TIMELINE_REFRESH_MS);
}

function fieldValue(value) {
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

async function findEvent(id) {
  if (!events.has(id)) (await api("/api/events?limit=10000")).events.forEach((e) => remember(e, false));
  const entry = events.get(id);
  if (!entry) throw new Error(`no event ${id}`);
  return entry.event;
}

async function eventView(view, id) {
  const e = await findEvent(id);
  const camera = e.header.camera_id;
  const clip = e.clip_ids.length ? peakClip(e) : null;
  const other = Object.entries(e).filter(([name]) => !KNOWN_EVENT_FIELDS.has(name));
  view.replaceChildren(
    h("section", { id: "event" }, h("h2", {}, `Event on ${camera}, ${clock(e.start_time)}–${clock(e.end_time)}`),
      h("table", {}, h("tbody", {},
        [["event id", e.event_id], ["peak score", `${score(e.peak_score)} at ${clock(e.peak_time)}`],
          ["threshold", score(e.threshold)], ["detector", e.detector || "d(z_v, z_a): sound against picture"],
          ["label", e.label || "—"], ["model version", e.model_version], ["clips", e.clip_ids.join(", ")],
          ["evidence URI", e.evidence_uri ? h("code", { id: "evidence-uri" }, e.evidence_uri) : "—"],
          ...other.map(([name, value]) => [name, fieldValue(value)])]
          .map(([name, value]) => h("tr", {}, h("th", {}, name), h("td", {}, value)))))),
    explanation(e),
    h("section", {}, h("h2", {}, "Frames", clip ? h("span", { class: "muted" }, ` of ${clip}`) : ""), clip
      ? h("div", { class: "frames" }, Array.from({ length: FRAMES_PER_CLIP },
        (_, frame) => clipImage(clip, { alt: `frame ${frame} of ${clip}` }, frame)))
      : h("p", { class: "missing-data", id: "no-frames" }, "This event names no clip.")),
    evidence(e),
    h("section", {}, h("h2", {}, "Find similar moments"),
      Object.entries(MODES).map(([mode, words]) => h("a", {
        class: "find", "data-mode": mode,
        href: `#/search?camera=${encodeURIComponent(camera)}&time=${e.peak_time}&mode=${mode}`,
      }, h("button", {}, `by ${words}`)), " ")));
}

// Why the event was raised: its thumbnail, the deviating modality in words with each modality's score
// against the threshold, and the camera's nearest normal clips (what it usually looks like).
function explanation(e) {
  const modalities = [["picture", e.visual], ["sound", e.audio]].filter(([, m]) => m);
  return h("section", { id: "explanation" }, h("h2", {}, "Why"),
    h("div", { class: "why" },
      e.thumbnail_jpeg ? h("img", { id: "event-thumbnail", alt: `peak clip ${e.peak_clip_id}`,
        src: `data:image/jpeg;base64,${e.thumbnail_jpeg}` }) : null,
      h("div", {}, h("p", { id: "deviation", "data-deviation": e.deviation }, DEVIATIONS[e.deviation] || e.deviation),
        modalities.length ? h("ul", {}, modalities.map(([name, m]) => h("li", {},
          `${name}: ${score(m.score)} ${m.score > m.threshold ? "above" : "below"} the threshold ${score(m.threshold)}`)))
          : null)),
    h("h2", {}, "What normal looks like here"),
    e.normal_clip_ids.length ? h("div", { class: "results", id: "normal-clips" }, e.normal_clip_ids.map((id) =>
      h("div", { class: "result" }, clipImage(id, { class: "thumb", alt: id }), h("div", {}, clock(clipStart(id))),
        h("a", { href: `#/search?clip_id=${encodeURIComponent(id)}&mode=av` }, "similar to this"))))
      : h("p", { class: "missing-data" }, "No normal clip of this camera's history is known."));
}

const clipStart = (id) => Number(id.slice(id.lastIndexOf(":") + 1)) / 1000;

function thumbnail(result) {
  return clipImage(result.clip_id, { class: "thumb", alt: `${result.camera_id} ${clock(result.capture_time)}` });
}

async function searchView(view, params) {
  const mode = params.get("mode") || "av";
  const query = new URLSearchParams({ mode, top_k: 12, exclusion_s: 5, separation_s: 2 });
  for (const name of ["clip_id", "camera", "time"]) if (params.has(name)) query.set(name, params.get(name));
  const response = await api(`/api/search?${query}`);
  view.replaceChildren(h("section", { id: "search" },
    h("h2", {}, `Similar by ${MODES[mode]} (model ${response.model_version})`),
    h("p", {}, Object.keys(MODES).map((other) => h("a", { href: `#/search?${new URLSearchParams({ ...Object.fromEntries(params), mode: other })}` },
      h("button", { disabled: other === mode }, MODES[other]))), " "),
    response.results.length ? h("div", { class: "results" }, response.results.map((r) => h("div", { class: "result" },
      thumbnail(r),
      h("div", {}, `${r.camera_id} ${clock(r.capture_time)}`),
      h("div", { class: "muted" }, `distance ${score(r.distance)}`),
      h("a", { href: `#/search?clip_id=${encodeURIComponent(r.clip_id)}&mode=${mode}` }, "similar to this"))))
      : h("p", {}, "No similar clip.")));
}

async function act(path, body, done) {
  try {
    await api(path, body);
    notice("");
    done();
  } catch (error) {
    notice(error.message);
  }
}

async function systemView(view) {
  const [cameras, models, training] = await Promise.all([api("/api/cameras"), api("/api/models"), api("/api/training")]);
  const again = () => systemView(view);
  view.replaceChildren(
    h("section", { id: "cameras" }, h("h2", {}, "Cameras"), h("table", {},
      h("thead", {}, h("tr", {}, ["camera", "status", "last capture", "source", "detail"].map((n) => h("th", {}, n)))),
      h("tbody", {}, cameras.cameras.map((c) => h("tr", {}, h("td", {}, c.camera_id), h("td", {}, h("span", { class: "badge" }, c.status)),
        h("td", {}, c.last_capture_time ? clock(c.last_capture_time) : "—"), h("td", {}, c.source), h("td", {}, c.detail)))))),
    h("section", { id: "models" }, h("h2", {}, "Model versions"), h("table", {},
      h("thead", {}, h("tr", {}, ["version", "created", "state", "metrics", ""].map((n) => h("th", {}, n)))),
      h("tbody", {}, models.models.map((m) => h("tr", {}, h("td", {}, m.model_version), h("td", {}, clock(m.created_time)),
        h("td", {}, [m.active ? "active" : "", m.indexed ? "indexed" : "indexing"].filter(Boolean).join(", ")),
        h("td", {}, Object.entries(m.metrics).map(([k, v]) => `${k} ${score(v)}`).join("; ")),
        h("td", {}, m.active ? "" : h("button", { onclick: () => act("/api/models/activate", { model_version: m.model_version }, again) }, "activate")))))),
      h("p", {}, h("button", { onclick: () => act("/api/models/rollback", {}, again) }, "roll back"))),
    h("section", { id: "training" }, h("h2", {}, "Training"),
      h("p", {}, h("span", { class: "badge", id: "training-state" }, training.state), " ", training.detail, " ",
        h("span", { class: "muted" }, `${training.clips_available} clips available; last version ${training.last_version || "—"}`)),
      h("button", { id: "train", onclick: () => act("/api/training", {}, again) }, "train a new version"), " ",
      h("button", { onclick: () => act("/api/training/cancel", {}, again) }, "cancel training")));
}

// ---- router --------------------------------------------------------------------------------------------

async function route() {
  const view = document.getElementById("view");
  const [path, search] = location.hash.slice(1).split("?");
  feedListeners = [];
  notice("");
  try {
    if (path.startsWith("/event/")) await eventView(view, decodeURIComponent(path.slice(7)));
    else if (path === "/search") await searchView(view, new URLSearchParams(search));
    else if (path === "/system") await systemView(view);
    else liveView(view);
  } catch (error) {
    notice(error.message);
  }
}

async function start() {
  document.getElementById("token").value = localStorage.getItem(TOKEN_KEY) || "";
  document.getElementById("login").addEventListener("submit", (submit) => {
    submit.preventDefault();
    localStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    location.reload();
  });
  window.addEventListener("hashchange", route);
  follow();  // before the listing: an event between the two is then in one or the other
  await route();
  try {
    (await api("/api/events")).events.forEach((e) => remember(e, false));
    feedListeners.forEach((listener) => listener());
  } catch (error) {
    notice(error.message);
  }
}

start();
