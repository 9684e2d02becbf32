// The grid of every camera, filling the window. The tiles take the columns that show
// every camera's picture largest without scrolling (two cameras side by side, three or
// four two by two on a desktop, one above the other on a phone); when that would make
// tiles smaller than MIN_TILE the grid scrolls instead. Each picture keeps its own aspect
// (letterboxed), known from /status's frame size or the picture itself.
// Browsers open at most 6 connections per host, so at most MAX_STREAMS tiles hold a live
// stream (the first ones on screen); the other tiles on screen show snapshots, refreshed
// one at a time; nothing loads while the tab is hidden. Each tile asks for the size
// (?width=) nearest the width its picture is shown at, chosen again once a resize settles.
// One status request a few seconds for all cameras. Motion and recording badges come
// live from ONE event feed for every camera (/events): four streams, the feed and one
// connection left for the status and snapshots make the browser's six.
"use strict";

const MAX_STREAMS = 4;
const SNAPSHOT_EVERY = 3000;  // ms between refreshes of one snapshot tile
const TILE_FPS = 5;  // a slow stream is all a tile needs; the camera's own page has all
const LADDER = [160, 320, 480, 640, 960, 1280, 1920];  // the widths stream/variants.py makes
const MIN_TILE = [320, 180];  // px: a tile smaller than this, and the grid scrolls instead
const SETTLE = 400;  // ms after the last resize (or a new picture size) before streams change
const statusUrl = document.currentScript.dataset.status;
const eventsUrl = document.currentScript.dataset.events;
const here = (path) => new URL(path, location.origin).href;  // never with credentials
const page = document.querySelector(".grid-page");
const grid = document.getElementById("grid");
const tiles = [...document.querySelectorAll(".tile")];
const visible = new Set();

function stamp(url) { return `${url}${url.includes("?") ? "&" : "?"}t=${Date.now()}`; }

// The number of columns that shows pictures of these aspect ratios largest in a box of
// width x height with `gap` between tiles, or null if every layout has tiles smaller than
// MIN_TILE (one column may be narrower: the window is).
function fitColumns(aspects, width, height, gap) {
  let best = null;
  let bestArea = 0;
  for (let cols = 1; cols <= aspects.length; cols++) {
    const rows = Math.ceil(aspects.length / cols);
    const w = (width - gap * (cols - 1)) / cols;
    const h = (height - gap * (rows - 1)) / rows;
    if ((cols > 1 && w < MIN_TILE[0]) || h < MIN_TILE[1]) continue;
    const area = aspects.reduce((sum, a) => sum + Math.min(w, h * a) * Math.min(h, w / a), 0);
    if (area > bestArea) { best = cols; bestArea = area; }
  }
  return best;
}

// The ?width= for a picture shown `shown` device pixels wide: the smallest ladder width
// that covers it, or 0 (the camera's own frames) when that is no smaller than their width
// `own`. The `current` width is kept while it covers the picture, unless the next smaller
// one covers it with 10% to spare: a resize by a few pixels reconnects no stream.
function chooseWidth(shown, own, current) {
  const step = LADDER.find((w) => w >= shown);
  const wanted = step === undefined || (own && step >= own) ? 0 : step;
  if (current === undefined || current === null) return wanted;  // none yet
  const size = current || own || Infinity;
  const below = Math.max(0, ...LADDER.filter((w) => w < size));
  return shown <= size && shown > 0.9 * below ? current : wanted;
}

const aspectOf = (tile) => tile.aspect || 16 / 9;  // until the camera's size is known

function layout() {
  const gap = parseFloat(getComputedStyle(grid).rowGap) || 0;
  const style = getComputedStyle(page);
  const height = window.innerHeight - parseFloat(style.paddingTop) -
    parseFloat(style.paddingBottom);
  const cols = fitColumns(tiles.map(aspectOf), grid.clientWidth, height, gap);
  page.classList.toggle("fit", cols !== null);
  if (cols !== null) {
    grid.style.setProperty("--cols", cols);
    grid.style.setProperty("--rows", Math.ceil(tiles.length / cols));
  }
  const aspects = tiles.map(aspectOf).sort((a, b) => a - b);
  grid.style.setProperty("--aspect", aspects[aspects.length >> 1]);  // when it scrolls
}

// The width, in device pixels, at which the tile shows its picture (contained).
function shownWidth(tile) {
  const box = tile.querySelector("img").getBoundingClientRect();
  return Math.min(box.width, box.height * aspectOf(tile)) * window.devicePixelRatio;
}

function query(width, ...more) {
  const args = [...(width ? [`width=${width}`] : []), ...more];
  return args.length ? `?${args.join("&")}` : "";
}

// Give live streams to the first MAX_STREAMS visible tiles, take them from the others.
// `resized`: the tiles changed size, so a stream whose size no longer fits is replaced.
function assign(resized = false) {
  let streams = 0;
  for (const tile of tiles) {
    const img = tile.querySelector("img");
    const live = !document.hidden && visible.has(tile) && streams < MAX_STREAMS;
    if (live) streams += 1;
    const streaming = tile.dataset.mode === "stream";
    if (live && (!streaming || resized)) {
      const width = chooseWidth(shownWidth(tile), tile.own, streaming ? tile.width : undefined);
      if (streaming && width === tile.width) continue;
      tile.dataset.mode = "stream";
      tile.width = width;
      img.src = stamp(tile.dataset.stream + query(width, `fps=${TILE_FPS}`));
    } else if (!live && streaming) {
      tile.dataset.mode = "";
      img.removeAttribute("src");  // Chrome closes a stream when its src goes
    }
  }
}

let settling = null;
function settle() {  // streams follow the tiles' size once it stops changing
  clearTimeout(settling);
  settling = setTimeout(() => assign(true), SETTLE);
}

// A camera's own frame size: its tile's aspect and the largest width worth asking for.
function learn(tile, width, height, own) {
  if (!width || !height) return;
  const aspect = width / height;
  const news = (own && tile.own !== width) || !tile.aspect ||
    Math.abs(aspect - tile.aspect) > 0.01;
  if (own) tile.own = width;
  if (!news) return;
  tile.aspect = aspect;
  layout();
  settle();
}

// Refresh the snapshot tiles on screen, one request at a time.
async function refreshSnapshots() {
  for (const tile of tiles) {
    if (document.hidden || !visible.has(tile) || tile.dataset.mode === "stream") continue;
    const img = tile.querySelector("img");
    await new Promise((done) => {
      img.onload = img.onerror = done;
      img.src = stamp(tile.dataset.snapshot + query(chooseWidth(shownWidth(tile), tile.own)));
    });
  }
  setTimeout(refreshSnapshots, SNAPSHOT_EVERY);
}

// A tile's badges: "motion" while an event is on, "rec" while a file is written.
function badge(tile, name, on) {
  tile.querySelector(`.badge-${name}`).hidden = !on;
}

function show(cameras) {
  for (const tile of tiles) {
    const status = cameras[tile.dataset.name];
    if (!status) continue;
    badge(tile, "motion", !!(status.motion && status.motion.active));
    badge(tile, "rec", !!status.recording);
    if (status.frame_size) learn(tile, ...status.frame_size, true);
    const down = status.error !== null;
    const state = tile.querySelector(".state");
    state.textContent = down ? "unavailable" : (status.running ? "live" : "idle");
    state.className = "state " + (down ? "down" : status.running ? "live" : "");
    state.title = down ? status.error : "";
    tile.querySelector(".fps").textContent =
      status.fps === null ? "" : `${status.fps.toFixed(0)} fps`;
    tile.querySelector(".viewers").textContent =
      `${status.viewers} viewer${status.viewers === 1 ? "" : "s"}`;
  }
}

async function refreshStatus() {
  if (document.hidden) return;
  try {
    const response = await fetch(here(statusUrl), { cache: "no-store" });
    if (response.ok) show((await response.json()).cameras);
  } catch (error) { /* server restarting: the next poll tells */ }
}

async function poll() {
  await refreshStatus();
  setTimeout(poll, 3000);
}

// The event feed, closed while the tab is hidden and reopened from the last event seen
// (what happened meanwhile is replayed).
const byName = new Map(tiles.map((tile) => [tile.dataset.name, tile]));
let feed = null;
let lastEventId = "";
function follow() {
  if (feed || document.hidden) return;
  const url = new URL(eventsUrl, location.origin);
  if (lastEventId) url.searchParams.set("last_event_id", lastEventId);
  feed = new EventSource(url.href);
  for (const kind of ["motion", "recording"]) {
    feed.addEventListener(kind, (message) => {
      lastEventId = message.lastEventId;
      const event = JSON.parse(message.data);
      const tile = byName.get(event.camera);
      if (tile) badge(tile, kind === "motion" ? "motion" : "rec", event.state === "start");
    });
  }
}
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) { follow(); return; }
  if (feed) feed.close();
  feed = null;
});
follow();

const watcher = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (entry.isIntersecting) visible.add(entry.target); else visible.delete(entry.target);
  }
  assign();
});
for (const tile of tiles) {  // a camera not yet in /status: the aspect of its picture
  const img = tile.querySelector("img");
  img.addEventListener("load", () => learn(tile, img.naturalWidth, img.naturalHeight, false));
}
layout();
window.addEventListener("resize", () => { layout(); settle(); });
document.addEventListener("visibilitychange", () => assign());
// The first status gives the cameras' sizes, so the first streams ask for the right one.
refreshStatus().then(() => {
  tiles.forEach((tile) => watcher.observe(tile));
  setTimeout(poll, 3000);
  refreshSnapshots();
});
