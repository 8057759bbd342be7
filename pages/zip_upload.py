"""Explore's zip uploader: a file input that sends the zip straight to the upload route
(pages/upload_routes.py) with a progress bar, then reruns the page.

An ``st.components.v2`` component: its script runs in the app's page (no iframe), so the
request goes to the same address as the page, with the same cookies (the proxy's route
cookie keeps it on this session's web process), and ``setTriggerValue`` tells Python once
the file is complete. The file never passes through Streamlit's own uploader, which keeps
every uploaded byte in memory.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from pages.upload_routes import NAME_HEADER, TICKET_HEADER, UPLOAD_PATH

HTML = """
<div class="zu">
  <label class="zu-label" for="zu-file">Zip file, up to <span class="zu-limit"></span></label>
  <div class="zu-row">
    <input id="zu-file" class="zu-file" type="file"
           accept=".zip,application/zip,application/x-zip-compressed">
    <button type="button" class="zu-cancel" hidden>Cancel upload</button>
  </div>
  <progress class="zu-bar" max="100" value="0" hidden aria-label="Upload progress"></progress>
  <p class="zu-status" role="status" aria-live="polite"></p>
</div>
"""

CSS = """
.zu { font-family: var(--st-font, sans-serif); color: var(--st-text-color, inherit);
      margin-bottom: .5rem; }
.zu-label { display: block; font-size: .875rem; margin-bottom: .35rem; }
.zu-row { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
.zu-file { flex: 1 1 14rem; min-width: 0; max-width: 100%; font: inherit; font-size: .875rem;
           padding: .5rem; border: 1px dashed var(--st-border-color, #bbb);
           border-radius: var(--st-base-radius, .5rem);
           background: var(--st-secondary-background-color, transparent); }
.zu-file::file-selector-button, .zu-cancel {
  font: inherit; min-height: 2.5rem; padding: .25rem .9rem; margin-right: .75rem;
  color: inherit; background: var(--st-background-color, #fff); cursor: pointer;
  border: 1px solid var(--st-border-color, #bbb); border-radius: var(--st-base-radius, .5rem);
}
.zu-file:focus-visible, .zu-cancel:focus-visible {
  outline: 2px solid var(--st-primary-color, #4f46e5); outline-offset: 2px; }
.zu-bar { display: block; width: 100%; height: .6rem; margin-top: .6rem;
          accent-color: var(--st-primary-color, #4f46e5); }
.zu-bar[hidden], .zu-cancel[hidden] { display: none; }
.zu-status { font-size: .875rem; margin: .35rem 0 0; min-height: 1.2em;
             overflow-wrap: anywhere; }
.zu-status.zu-error { color: var(--st-red-color, #d33); }
"""

# Called on every rerun with the latest data: it binds its handlers once, and always reads
# the latest ticket, so an upload in flight survives reruns. The cleanup runs when the
# component leaves the page (another page opened): an unfinished upload is cancelled, and
# the route removes its partial file.
JS = """
const MB = 1024 * 1024;
const mb = (n) => n < MB ? Math.ceil(n / 1024) + " KB" : (n / MB).toFixed(1) + " MB";
const seconds = (s) => s >= 90 ? Math.round(s / 60) + " min" : Math.max(1, Math.round(s)) + " s";

export default function ({ data, setTriggerValue, parentElement }) {
  const root = parentElement.querySelector(".zu");
  root.zuData = data;
  root.querySelector(".zu-limit").textContent = data.limit_mb + " MB";
  if (!root.zuBound) {
    root.zuBound = true;
    bind(root, setTriggerValue);
  }
  return () => { if (root.zuXhr) root.zuXhr.abort(); };
}

function bind(root, setTriggerValue) {
  const input = root.querySelector(".zu-file");
  const bar = root.querySelector(".zu-bar");
  const status = root.querySelector(".zu-status");
  const cancel = root.querySelector(".zu-cancel");
  const say = (text, error) => {
    status.textContent = text;
    status.classList.toggle("zu-error", !!error);
    status.setAttribute("role", error ? "alert" : "status");
  };
  const finish = () => { root.zuXhr = null; bar.hidden = true; cancel.hidden = true; };

  cancel.addEventListener("click", () => {
    if (root.zuXhr) root.zuXhr.abort();
    finish();
    input.value = "";
    say("Upload cancelled.");
  });

  input.addEventListener("change", () => {
    const data = root.zuData;
    const file = input.files[0];
    if (!file) return;
    if (root.zuXhr) root.zuXhr.abort();
    if (file.size > data.limit_mb * MB) {
      input.value = "";
      say(`${file.name} is ${mb(file.size)}; zips up to ${data.limit_mb} MB are allowed: ` +
          "upload a smaller zip (fewer or smaller images).", true);
      return;
    }
    const xhr = new XMLHttpRequest();
    root.zuXhr = xhr;
    const started = performance.now();
    let told = 0;
    xhr.open("POST", data.url);
    xhr.setRequestHeader(data.ticket_header, data.ticket);
    xhr.setRequestHeader(data.name_header, encodeURIComponent(file.name));
    xhr.setRequestHeader("Content-Type", "application/zip");
    xhr.upload.addEventListener("progress", (e) => {
      const total = e.lengthComputable ? e.total : file.size;
      const pct = total ? Math.floor(100 * e.loaded / total) : 0;
      bar.value = pct;
      bar.setAttribute("aria-valuetext", pct + " %");
      const now = performance.now();
      if (now - told < 1000 && e.loaded < total) return;  // the status speaks once a second
      told = now;
      const rate = e.loaded / Math.max(0.001, (now - started) / 1000);
      const left = rate > 0 ? (total - e.loaded) / rate : 0;
      say(`Uploading ${file.name}: ${pct} % (${mb(e.loaded)} of ${mb(total)})` +
          (e.loaded < total ? `, about ${seconds(left)} left` : ""));
    });
    xhr.addEventListener("load", () => {
      finish();
      input.value = "";
      if (xhr.status === 200) {
        say(`Upload of ${file.name} complete.`);
        setTriggerValue("uploaded", { name: file.name, bytes: file.size });
      } else if (xhr.status === 413) {
        say(`${file.name} is larger than the ${data.limit_mb} MB allowed: upload a ` +
            "smaller zip (fewer or smaller images).", true);
      } else {
        const text = (xhr.getResponseHeader("Content-Type") || "").startsWith("text/plain")
          ? xhr.responseText : "";
        say(text || `The upload of ${file.name} failed (HTTP ${xhr.status}): reload the ` +
            "page and try again.", true);
      }
    });
    xhr.addEventListener("error", () => {
      finish();
      say(`The upload of ${file.name} stopped (the connection was lost): try again.`, true);
    });
    bar.value = 0;
    bar.hidden = false;
    cancel.hidden = false;
    say(`Uploading ${file.name}: 0 % (0 KB of ${mb(file.size)})`);
    xhr.send(file);
  });
}
"""

_UPLOADER = st.components.v2.component("cnnlab_zip_upload", html=HTML, css=CSS, js=JS)


def zip_uploader(ticket: str, limit_mb: int, key: str) -> dict[str, Any] | None:
    """Draw the uploader for ``ticket``; {"name", "bytes"} on the rerun right after an
    upload completed, else None (the file itself is on disk: upload_routes.pending)."""
    result = _UPLOADER(
        key=key,
        data={"ticket": ticket, "limit_mb": limit_mb, "url": UPLOAD_PATH,
              "ticket_header": TICKET_HEADER, "name_header": NAME_HEADER},
        on_uploaded_change=lambda: None,  # a trigger value: Python hears it, and reruns
    )
    return result.get("uploaded")
