// One camera's page: its stream (stopped while the page is hidden), figures from its
// status, snapshot download, fullscreen, recording (a clip, an event) and its recordings,
// played in the page or downloaded, motion detection's badge and switch, and an embed
// snippet. Motion and recording events come live from the camera's event feed.
"use strict";

const script = document.currentScript;
const statusUrl = script.dataset.status;
const snapshotUrl = script.dataset.snapshot;
const cameraUrl = script.dataset.camera;  // /camera/<name>: recording and recordings
const img = document.getElementById("stream");
const streamUrl = img.dataset.src;
const $ = (id) => document.getElementById(id);
// fetch() refuses URLs with credentials, and a page opened as http://user:pass@host/
// resolves relative URLs to such URLs: resolve against the origin, which has none.
const here = (path) => new URL(path, location.origin).href;
let playing = null;  // the clip shown instead of the live stream

// Browsers allow 6 connections per host: a hidden page gives its stream back.
// Chrome closes a stream when the src changes, so dropping src closes it.
function stopStream() { img.removeAttribute("src"); }
function startStream() {
  img.src = playing ? `${playing.play}?t=${Date.now()}` : `${streamUrl}?t=${Date.now()}`;
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) { stopStream(); unfollow(); } else { startStream(); follow(); poll(); }
});

let retry = null;
img.addEventListener("error", () => {  // server restarting: try again shortly
  if (document.hidden || !img.getAttribute("src") || playing) return;
  clearTimeout(retry);
  retry = setTimeout(startStream, 2000);
});

function say(message) {
  $("banner").hidden = !message;
  $("banner").textContent = message || "";
}

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

let recording = null;
function showRecording() {
  $("rec").textContent = recording
    ? `● ${recording.kind} ${clock(Date.now() / 1000 - recording.since)}` : "";
  const manual = recording && recording.kind === "manual";
  $("record").classList.toggle("on", !!manual);
  $("record").title = manual ? "Stop the clip" : "Record a clip";
  $("record").querySelector(".label").textContent = manual ? "Stop" : "Record";
}

// Motion: the badge while an event is on, and the switch when detection is set up.
let motion = null;
function showMotion(active, score) {
  $("motion").hidden = !active;
  $("motion").textContent = active ? `● motion${score ? ` ${score.toFixed(1)}%` : ""}` : "";
}

function show(status) {
  const down = status.error !== null;
  $("state").textContent = down ? "unavailable" : (status.running ? "live" : "starting");
  $("state").className = "state " + (down ? "down" : status.running ? "live" : "");
  $("fps").textContent = `${status.fps === null ? "–" : status.fps.toFixed(1)} fps`;
  $("viewers").textContent = `${status.viewers} viewer${status.viewers === 1 ? "" : "s"}`;
  if (!playing) say(down ? `Camera unavailable: ${status.error}` : "");
  recording = status.recording || null;
  const error = status.recorder && status.recorder.error;
  $("rec").hidden = !recording && !error;
  $("rec").className = "rec" + (error ? " failed" : "");
  showRecording();
  if (error) $("rec").textContent = `Not recording: ${error}`;
  motion = status.motion || null;  // null: detection is not set up for this camera
  $("detect").hidden = !motion;
  if (motion) {
    showMotion(motion.active, motion.score);
    $("detect").classList.toggle("on", motion.enabled);
    $("detect").title = motion.enabled ? "Motion detection is on: switch it off"
      : "Motion detection is off: switch it on";
    $("detect").querySelector(".label").textContent = motion.enabled ? "Motion on" : "Motion off";
  }
}

async function poll() {
  if (document.hidden) return;
  try {
    const response = await fetch(here(statusUrl), { cache: "no-store" });
    if (response.ok) show(await response.json());
  } catch (error) {
    $("state").textContent = "server unreachable";
    $("state").className = "state down";
  }
}
setInterval(poll, 2000);
poll();

// POST or DELETE; a refusal is shown in the banner.
async function act(method, path) {
  const response = await fetch(here(path), { method, cache: "no-store" });
  if (!response.ok) say((await response.text()).trim());
  else { poll(); if ($("recordings").open) listRecordings(); }
  return response.ok;
}

$("record").addEventListener("click", () => {
  const manual = recording && recording.kind === "manual";
  act("POST", `${cameraUrl}/record${manual ? "/stop" : ""}`);
});
$("event").addEventListener("click", () => act("POST", `${cameraUrl}/event`));
$("detect").addEventListener("click", () => {
  act("POST", `${cameraUrl}/motion?enabled=${motion && motion.enabled ? 0 : 1}`);
});

// -- the event feed: one EventSource beside the stream, closed while the page is hidden;
// reopened from the last event seen, so what happened meanwhile is replayed.
let feed = null;
let lastEventId = "";
function follow() {
  if (feed || document.hidden) return;
  const url = new URL(`${cameraUrl}/events`, location.origin);
  if (lastEventId) url.searchParams.set("last_event_id", lastEventId);
  feed = new EventSource(url.href);
  feed.addEventListener("motion", (message) => {
    lastEventId = message.lastEventId;
    const event = JSON.parse(message.data);
    showMotion(event.state === "start", event.score);
    if (event.state === "end" && $("recordings").open) listRecordings();
  });
  feed.addEventListener("recording", (message) => {
    lastEventId = message.lastEventId;
    const event = JSON.parse(message.data);
    if (event.state === "start") recording = { kind: event.kind, since: event.time };
    else if (recording && recording.kind === event.kind) recording = null;
    $("rec").hidden = !recording;
    $("rec").className = "rec";
    showRecording();
    if ($("recordings").open) listRecordings();
  });
}
function unfollow() {
  if (feed) feed.close();
  feed = null;
}
follow();

$("snapshot").addEventListener("click", async () => {
  const response = await fetch(here(`${snapshotUrl}?t=${Date.now()}`), { cache: "no-store" });
  if (!response.ok) { say((await response.text()).trim()); return; }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  const stamp = new Date().toISOString().replace(/[:T]/g, "-").slice(0, 19);
  link.download = `camera-${stamp}.jpg`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
});

$("fullscreen").addEventListener("click", () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else $("stage").requestFullscreen?.();
});

// -- recordings -------------------------------------------------------------------------

function play(item) {
  playing = item;
  $("playing").hidden = false;
  $("playing-name").textContent = `${item.kind} ${new Date(item.start * 1000).toLocaleString()}`;
  say("");
  startStream();
}

$("live").addEventListener("click", () => {
  playing = null;
  $("playing").hidden = true;
  startStream();
  poll();
});

function megabytes(bytes) { return `${(bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0)} MB`; }

async function listRecordings() {
  let items = [];
  try {
    const response = await fetch(here(`${cameraUrl}/recordings?limit=100`), { cache: "no-store" });
    if (response.ok) items = await response.json();
  } catch (error) { return; }
  const list = $("recordings-list");
  list.replaceChildren(...items.map((item) => {
    const row = document.createElement("li");
    const when = new Date(item.start * 1000);
    const text = document.createElement("span");
    text.className = "what";
    text.textContent = `${when.toLocaleDateString()} ${when.toLocaleTimeString()} · ${item.kind}` +
      ` · ${item.duration === null ? "recording" : clock(item.duration)} · ${megabytes(item.bytes)}`;
    const playButton = document.createElement("button");
    playButton.type = "button";
    playButton.textContent = "Play";
    playButton.addEventListener("click", () => play(item));
    const download = document.createElement("a");
    download.href = item.download;
    download.textContent = "Download";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.disabled = item.in_progress;
    remove.addEventListener("click", () => {
      if (confirm(`Delete ${item.file}?`)) act("DELETE", `${cameraUrl}/recordings/${item.file}`);
    });
    row.append(text, playButton, download, remove);
    return row;
  }));
  $("recordings-empty").hidden = items.length > 0;
}

let listing = null;
$("recordings").addEventListener("toggle", () => {
  clearInterval(listing);
  if ($("recordings").open) { listRecordings(); listing = setInterval(listRecordings, 10000); }
});

// -- embed ------------------------------------------------------------------------------

const embed = $("embed-code");
embed.value = `<img src="${location.origin}${streamUrl}" alt="Live camera">`;
$("snapshot-url").textContent = `${location.origin}${snapshotUrl}`;
$("copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(embed.value);
  } catch (error) {  // no clipboard API (plain http): select it for Ctrl-C
    embed.select();
    document.execCommand("copy");
  }
  $("copy").textContent = "Copied";
  setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
});
