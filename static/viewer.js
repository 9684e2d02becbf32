// The viewer page: one stream per page, stopped while the page is hidden, figures from
// /status, snapshot download, fullscreen and an embed snippet.
"use strict";

const script = document.currentScript;
const statusUrl = script.dataset.status;
const snapshotUrl = script.dataset.snapshot;
const img = document.getElementById("stream");
const streamUrl = img.dataset.src;
const $ = (id) => document.getElementById(id);
// fetch() refuses URLs with credentials, and a page opened as http://user:pass@host/
// resolves relative URLs to such URLs: resolve against the origin, which has none.
const here = (path) => new URL(path, location.origin).href;

// Browsers allow 6 connections per host: a hidden page gives its stream back.
// Chrome closes a stream when the src changes, so dropping src closes it.
function stopStream() { img.removeAttribute("src"); }
function startStream() { img.src = `${streamUrl}?t=${Date.now()}`; }

document.addEventListener("visibilitychange", () => {
  if (document.hidden) { stopStream(); } else { startStream(); poll(); }
});

let retry = null;
img.addEventListener("error", () => {  // server restarting: try again shortly
  if (document.hidden || !img.getAttribute("src")) return;
  clearTimeout(retry);
  retry = setTimeout(startStream, 2000);
});

function show(status) {
  const down = status.error !== null;
  $("state").textContent = down ? "camera unavailable" : (status.running ? "live" : "starting");
  $("state").className = "state " + (down ? "down" : status.running ? "live" : "");
  $("fps").textContent = `${status.fps === null ? "–" : status.fps.toFixed(1)} fps`;
  $("viewers").textContent = `${status.viewers} viewer${status.viewers === 1 ? "" : "s"}`;
  $("banner").hidden = !down;
  $("banner").textContent = down ? `Camera unavailable: ${status.error}` : "";
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

$("snapshot").addEventListener("click", async () => {
  const response = await fetch(here(`${snapshotUrl}?t=${Date.now()}`), { cache: "no-store" });
  if (!response.ok) { alert(await response.text()); return; }
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
