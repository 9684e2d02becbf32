// The grid of every camera. Browsers open at most 6 connections per host, so at most
// MAX_STREAMS tiles hold a live stream (the first ones on screen); the other tiles on
// screen show snapshots, refreshed one at a time; nothing loads while the tab is hidden.
// One status request a few seconds for all cameras.
"use strict";

const MAX_STREAMS = 4;
const SNAPSHOT_EVERY = 3000;  // ms between refreshes of one snapshot tile
const THUMB = "width=320&fps=5";  // a small, slow stream is all a tile needs
const statusUrl = document.currentScript.dataset.status;
const here = (path) => new URL(path, location.origin).href;  // never with credentials
const tiles = [...document.querySelectorAll(".tile")];
const visible = new Set();

function stamp(url) { return `${url}${url.includes("?") ? "&" : "?"}t=${Date.now()}`; }

// Give live streams to the first MAX_STREAMS visible tiles, take them from the others.
function assign() {
  let streams = 0;
  for (const tile of tiles) {
    const img = tile.querySelector("img");
    const live = !document.hidden && visible.has(tile) && streams < MAX_STREAMS;
    if (live) streams += 1;
    if (live && tile.dataset.mode !== "stream") {
      tile.dataset.mode = "stream";
      img.src = stamp(`${tile.dataset.stream}?${THUMB}`);
    } else if (!live && tile.dataset.mode === "stream") {
      tile.dataset.mode = "";
      img.removeAttribute("src");  // Chrome closes a stream when its src goes
    }
  }
}

// Refresh the snapshot tiles on screen, one request at a time.
async function refreshSnapshots() {
  for (const tile of tiles) {
    if (document.hidden || !visible.has(tile) || tile.dataset.mode === "stream") continue;
    const img = tile.querySelector("img");
    await new Promise((done) => {
      img.onload = img.onerror = done;
      img.src = stamp(`${tile.dataset.snapshot}?width=320`);
    });
  }
  setTimeout(refreshSnapshots, SNAPSHOT_EVERY);
}

function show(cameras) {
  for (const tile of tiles) {
    const status = cameras[tile.dataset.name];
    if (!status) continue;
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

async function poll() {
  if (!document.hidden) {
    try {
      const response = await fetch(here(statusUrl), { cache: "no-store" });
      if (response.ok) show((await response.json()).cameras);
    } catch (error) { /* server restarting: the next poll tells */ }
  }
  setTimeout(poll, 3000);
}

const watcher = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (entry.isIntersecting) visible.add(entry.target); else visible.delete(entry.target);
  }
  assign();
});
tiles.forEach((tile) => watcher.observe(tile));
document.addEventListener("visibilitychange", assign);
poll();
refreshSnapshots();
