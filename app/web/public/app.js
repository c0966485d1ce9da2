// PulseWatch UI: lists monitors with their state, adds and deletes monitors.
import { apiBase, formatLatency, monitorPayload, monitorState, requestHeaders, uptime } from "./view.js";

const $ = (sel) => document.querySelector(sel);
let api;

async function request(method, path, body) {
  const res = await fetch(api + path, {
    method,
    headers: requestHeaders({ json: Boolean(body), token: sessionStorage.getItem("pulsewatch-token") || "" }),
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error((data && data.errors && data.errors.join("; ")) || `HTTP ${res.status}`);
  return data;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function render() {
  const tbody = $("#monitors tbody");
  const monitors = await request("GET", "/monitors");
  const rows = await Promise.all(
    monitors.map(async (m) => {
      const results = await request("GET", `/monitors/${m.id}/results?limit=50`);
      const state = monitorState(m, results);
      const tr = document.createElement("tr");
      tr.append(cell(m.name), cell(m.url), cell(state.label, `tone-${state.tone}`));
      const up = uptime(results);
      tr.append(cell(up === null ? "-" : `${up}%`), cell(formatLatency(results[0] && results[0].latencyMs)));
      const del = document.createElement("button");
      del.textContent = "Delete";
      del.addEventListener("click", async () => {
        await request("DELETE", `/monitors/${m.id}`);
        await refresh();
      });
      const actions = cell("");
      actions.append(del);
      tr.append(actions);
      return tr;
    }),
  );
  tbody.replaceChildren(...rows);
  $("#empty").hidden = monitors.length > 0;
}

async function refresh() {
  try {
    await render();
    $("#error").textContent = "";
  } catch (err) {
    $("#error").textContent = `Could not reach the API: ${err.message}`;
  }
}

async function main() {
  const config = await (await fetch("/config.json", { cache: "no-store" })).json();
  api = apiBase(config);
  const token = $("#token");
  token.value = sessionStorage.getItem("pulsewatch-token") || "";
  token.addEventListener("change", () => sessionStorage.setItem("pulsewatch-token", token.value.trim()));
  $("#add").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    try {
      await request("POST", "/monitors", monitorPayload(Object.fromEntries(new FormData(form))));
      form.reset();
      await refresh();
    } catch (err) {
      $("#error").textContent = err.message;
    }
  });
  await refresh();
  setInterval(refresh, 10000);
}

main().catch((err) => {
  $("#error").textContent = err.message;
});
