// hubproxy dashboard: copy buttons, confirmations, and the live feed. No framework, nothing fetched.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy).textContent;
  const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => selectText(button.dataset.copy));
  } else {
    selectText(button.dataset.copy);
  }
});

function selectText(id) {
  const range = document.createRange();
  range.selectNodeContents(document.getElementById(id));
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

const MAX_ROWS = 200;

function feedRow(call) {
  const row = document.createElement("tr");
  const cells = [
    call.time.replace("T", " ").replace("Z", ""), call.user, call.key_id, call.model, call.provider, call.status,
    call.prompt_tokens.toLocaleString(), call.completion_tokens.toLocaleString(), "$" + call.cost,
    call.latency_ms.toLocaleString() + " ms",
  ];
  cells.forEach((text, i) => {
    const cell = document.createElement("td");
    if (i === 5) {
      const pill = document.createElement("span");
      pill.className = "pill " + (call.status === "ok" ? "active" : "revoked");
      pill.textContent = text;
      cell.appendChild(pill);
    } else {
      cell.textContent = text;
    }
    if (i >= 6) cell.className = "num";
    row.appendChild(cell);
  });
  return row;
}

function startFeed(body) {
  const state = document.getElementById("feed-state");
  const source = new EventSource(body.dataset.source);
  let skipped = 0;
  source.onopen = () => { state.textContent = "live"; state.className = "pill active"; };
  source.onerror = () => { state.textContent = "reconnecting…"; state.className = "pill warn"; };
  source.addEventListener("calls", (message) => {
    const batch = JSON.parse(message.data);
    const rows = document.createDocumentFragment();
    for (let i = batch.calls.length - 1; i >= 0; i--) rows.appendChild(feedRow(batch.calls[i]));
    body.insertBefore(rows, body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    if (batch.skipped) {
      skipped += batch.skipped;
      state.textContent = "live (" + skipped.toLocaleString() + " older calls not shown)";
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const feed = document.getElementById("feed");
  if (feed) startFeed(feed);
});
