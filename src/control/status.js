"use strict";
// The status page: /status every REFRESH ms, drawn as listeners, rings and backends.
// Served by ringway's admin API; no external asset.
const REFRESH = 1500;
const COLORS = ["#3b7dd8", "#e0823d", "#2e9d4f", "#9b59b6", "#c9302c", "#16a2b8",
                "#d4a017", "#7f8c8d", "#e84393", "#5d6d7e", "#27ae60", "#8e44ad"];
const previous = new Map(); // "listener/backend" -> {t, conns, sent, received}
let pressing = false; // no redraw under a pressed button: the click would be lost
document.addEventListener("pointerdown", () => { pressing = true; });
document.addEventListener("pointerup", () => { setTimeout(() => { pressing = false; }, 0); });

const token = () => sessionStorage.getItem("ringway-token");

function headers() {
  const t = token();
  return t ? { "Authorization": "Bearer " + t } : {};
}

function banner(text) {
  const b = document.getElementById("banner");
  b.textContent = text || "";
  b.classList.toggle("show", Boolean(text));
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    // CSSOM, not a style attribute: the content security policy allows no inline style.
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function ago(seconds) {
  if (seconds < 60) return Math.floor(seconds) + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min";
  if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h";
  return (seconds / 86400).toFixed(1) + " d";
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : Math.round(n)) + " " + units[i];
}

function rate(key, now, values) {
  const before = previous.get(key);
  previous.set(key, { t: now, ...values });
  if (!before || now <= before.t) return null;
  const dt = (now - before.t) / 1000;
  const out = {};
  for (const k of Object.keys(values)) out[k] = Math.max(0, (values[k] - before[k]) / dt);
  return out;
}

// The ring: 360 sectors, each colored by the backend that owns that degree.
function ring(l) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "-110 -110 220 220");
  svg.setAttribute("width", "200");
  svg.setAttribute("height", "200");
  svg.setAttribute("class", "ring-svg");
  svg.setAttribute(l.kind === "pools" ? "data-pool" : "data-listener", l.name);
  const r1 = 100, r0 = 62;
  let start = 0;
  const owner = i => l.ring[i];
  for (let i = 1; i <= l.ring.length; i++) {
    // A run ends where the owner changes, and every 90 degrees (an SVG arc cannot
    // close on itself).
    if (i < l.ring.length && owner(i) === owner(start) && i - start < 90) continue;
    const a0 = (start / l.ring.length) * 2 * Math.PI - Math.PI / 2;
    const a1 = (i / l.ring.length) * 2 * Math.PI - Math.PI / 2;
    const large = a1 - a0 > Math.PI ? 1 : 0;
    const p = (r, a) => `${(r * Math.cos(a)).toFixed(2)} ${(r * Math.sin(a)).toFixed(2)}`;
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", `M ${p(r1, a0)} A ${r1} ${r1} 0 ${large} 1 ${p(r1, a1)} L ${p(r0, a1)} A ${r0} ${r0} 0 ${large} 0 ${p(r0, a0)} Z`);
    const o = owner(start);
    const color = o < 0 ? "#d9dde2" : COLORS[o % COLORS.length];
    path.setAttribute("fill", color);
    path.setAttribute("stroke", color); // no hairline seams between sectors
    path.setAttribute("stroke-width", "0.6");
    path.setAttribute("data-owner", o < 0 ? "" : l.backends[o].id);
    path.setAttribute("data-from", start); // degrees [from, to)
    path.setAttribute("data-to", i);
    const title = document.createElementNS(ns, "title");
    title.textContent = o < 0 ? "no backend up" : l.backends[o].id;
    path.append(title);
    svg.append(path);
    start = i;
  }
  const up = l.backends.filter(b => b.ring_share > 0).length;
  const text = document.createElementNS(ns, "text");
  text.setAttribute("text-anchor", "middle");
  text.setAttribute("dy", "5");
  text.setAttribute("font-size", "12");
  text.textContent = `${up} of ${l.backends.length} in the ring`;
  svg.append(text);
  const legend = el("ul", { class: "legend" }, ...l.backends.map((b, i) =>
    el("li", {}, el("i", { style: `background:${COLORS[i % COLORS.length]}` }),
       `${b.id}: ${(b.ring_share * 100).toFixed(1)}%`)));
  return el("figure", { class: "ring" }, svg,
            el("figcaption", {}, "who owns the key space"), legend);
}

function stateName(b) {
  return b.admin === "disabled" ? "disabled" : b.state;
}

// `owner`: a listener (its own backends) or a [[pool]] ({ kind: "pools", name }).
async function act(owner, backend, action) {
  const url = `/${owner.kind}/${encodeURIComponent(owner.name)}/backends/${encodeURIComponent(backend)}/${action}`;
  try {
    const r = await fetch(url, { method: "POST", headers: headers() });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      banner(`${action} ${backend}: the admin API answered ${r.status}: ${body.error || r.statusText}`);
      if (r.status === 401) document.getElementById("login").classList.add("show");
      return;
    }
    banner("");
    refresh();
  } catch (e) {
    banner(`${action} ${backend}: ${e}`);
  }
}

function backendRow(l, b, i, now) {
  const key = l.kind + "/" + l.name + "/" + b.id;
  const r = rate(key, now, { conns: b.connections_total, sent: b.sent_bytes, received: b.received_bytes });
  const name = stateName(b);
  const check = b.last_check
    ? el("span", { class: "check " + b.last_check.result, title: b.last_check.error || "" },
         `${b.last_check.result} in ${b.last_check.duration_ms.toFixed(1)} ms, ${ago(b.last_check.seconds_ago)} ago`,
         b.last_check.error ? el("div", { class: "why" }, b.last_check.error) : "")
    : el("span", { class: "small" }, "not checked");
  const buttons = el("td", {},
    ...[["drain", "draining"], ["enable", "enabled"], ["disable", "disabled"]].map(([action, admin]) => {
      const btn = el("button", { type: "button", "data-action": action }, action);
      if (b.admin === admin) btn.disabled = true;
      btn.addEventListener("click", () => act(l, b.id, action));
      return btn;
    }));
  return el("tr", { [l.kind === "pools" ? "data-pool" : "data-listener"]: l.name, "data-backend": b.id },
    el("td", { class: "id" }, el("i", { style: `display:inline-block;width:.8em;height:.8em;border-radius:2px;background:${COLORS[i % COLORS.length]}` }), " ", el("b", {}, b.id),
       b.backup ? el("span", { class: "small" }, " backup") : "",
       el("div", { class: "small" }, b.address === b.resolved ? b.address : `${b.address} → ${b.resolved}`)),
    el("td", {}, el("span", { class: "state " + name, "data-state": name }, name),
       el("div", { class: "why" }, `for ${ago(b.state_seconds)}`, b.reason ? ` · ${b.reason}` : ""),
       b.slow_start_percent === null ? "" : el("div", { class: "small", "data-ramp": "" }, `slow start: ramped ${b.slow_start_percent.toFixed(0)}%`)),
    el("td", { class: "num" }, b.weight),
    el("td", { class: "num" }, (b.ring_share * 100).toFixed(1) + "%"),
    el("td", { class: "num" }, b.max_connections === null ? b.active_connections : `${b.active_connections}/${b.max_connections}`,
       b.max_connections === null ? "" : el("div", { class: "small", "data-queue": "" }, `${b.queued} waiting · ${b.queue_timeouts_total} timed out`)),
    el("td", { class: "num" }, r ? r.conns.toFixed(1) + "/s" : "…"),
    el("td", { class: "num" }, r ? `${bytes(r.sent)}/s ↑ ${bytes(r.received)}/s ↓` : "…"),
    el("td", {}, check),
    el("td", { class: "num" }, b.passive_failures),
    el("td", { class: "num", "data-totals": "" },
       `${b.connections_total} · ${bytes(b.sent_bytes)} ↑ ${bytes(b.received_bytes)} ↓ · ${b.connect_errors} errors`,
       b.down_seconds_total >= 1 ? ` · down ${ago(b.down_seconds_total)} in all` : ""),
    buttons);
}

function backendTable(l, now) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...["backend", "state", "weight", "ring share", "open", "new/s", "traffic", "last check", "passive failures", "since start", ""].map(h => el("th", {}, h)))),
    el("tbody", {}, ...l.backends.map((b, i) => backendRow(l, b, i, now))));
}

// Where a listener's connections go: its routes by server name, then the default.
function routing(l) {
  const fallback = l.default_pool === null ? "closed"
    : l.default_pool === l.name ? "its own backends" : `pool ${l.default_pool}`;
  if (l.route_by !== "sni") return el("span", { "data-routes": "" }, `→ ${fallback}`);
  const routes = l.routes.map(r => `${r.sni.join(", ")} → ${r.pool}`);
  return el("span", { "data-routes": "" }, el("b", {}, "by server name: "),
            [...routes, `else ${fallback}`].join("; "));
}

// How a pool chooses: its balance mode, and the bound with what overflowed.
function balance(p) {
  if (!p.balance) return "";
  const bound = p.balance_factor === null ? ""
    : `, bounded at ${p.balance_factor}× the average (${p.overflowed_total} overflowed)`;
  return el("span", { "data-balance": "" }, el("b", {}, "balance: "), p.balance + bound);
}

function poolSection(p, now) {
  p.kind = "pools";
  return el("section", { class: "listener pool", "data-pool": p.name },
    el("h2", {}, `pool ${p.name}`),
    el("div", { class: "facts" },
      el("span", {}, el("b", {}, p.protocol.toUpperCase()), ` used by ${p.listeners.join(", ") || "no listener"}`),
      balance(p),
      el("span", {}, `key space moved at the last change: ${(p.ring_remapped_ratio * 100).toFixed(1)}%`)),
    el("div", { class: "body" }, ring(p), backendTable(p, now)));
}

function listenerSection(l, now) {
  l.kind = "listeners";
  const tr = rate("listener/" + l.name, now, { total: l.connections_total });
  const refused = Object.entries(l.rejected).filter(([, n]) => n > 0)
    .map(([reason, n]) => `${reason} ${n}`).join(", ") || "none";
  const unit = l.protocol === "udp" ? "flows" : "connections";
  return el("section", { class: "listener", "data-listener": l.name },
    el("h2", {}, l.name),
    el("div", { class: "facts" },
      el("span", {}, el("b", {}, l.protocol.toUpperCase()), " ", l.listen),
      el("span", {}, el("b", {}, l.active_connections), ` ${unit} open`),
      el("span", {}, el("b", {}, l.connections_total), ` ${unit} in all`, tr ? ` (${tr.total.toFixed(1)}/s)` : ""),
      el("span", { "data-rejected": "" }, (l.protocol === "udp" ? "dropped: " : "refused: ") + refused),
      routing(l),
      l.backends.length ? balance(l) : "",
      l.backends.length ? el("span", {}, `key space moved at the last change: ${(l.ring_remapped_ratio * 100).toFixed(1)}%`) : ""),
    l.backends.length ? el("div", { class: "body" }, ring(l), backendTable(l, now)) : "");
}

async function refresh() {
  let r;
  try {
    r = await fetch("/status", { headers: headers(), cache: "no-store" });
  } catch (e) {
    banner("cannot reach the admin API: " + e);
    return;
  }
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    banner(`the admin API answered ${r.status}: ${body.error || r.statusText}`);
    if (r.status === 401) document.getElementById("login").classList.add("show");
    return;
  }
  const s = await r.json();
  const now = Date.now();
  if (pressing) return;
  banner("");
  document.getElementById("login").classList.remove("show");
  const p = s.process;
  document.getElementById("process").textContent =
    `${p.version} · pid ${p.pid} · up ${ago(p.uptime_seconds)} · ${p.workers} workers · reloads ${p.reloads_ok} ok / ${p.reloads_failed} failed`;
  document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
  // [cluster]: this node's place in the fleet, and a banner while it leaves.
  const c = s.cluster;
  const cluster = document.getElementById("cluster");
  if (c) {
    const sent = c.forwarded.reduce((n, f) => n + f.packets, 0);
    const lost = c.lost.no_owner.packets + c.lost.no_route.packets + c.lost.too_big.packets;
    cluster.textContent = (c.leaving ? "LEAVING the fleet: withdraw this node's route, then stop it once its connections reach 0. " : "") +
      `Cluster node ${c.node} (${c.peers.indexOf(c.node) + 1} of ${c.peers.length}) · second chance: ${sent} packets sent on, ${c.delivered.packets} delivered here, ${lost} lost`;
  }
  cluster.classList.toggle("show", !!c);
  cluster.classList.toggle("leaving", !!(c && c.leaving));
  // Listeners and pools serving with fewer than all their backends.
  const short = [...s.listeners.map(l => ["listener", l]), ...(s.pools || []).map(p => ["pool", p])]
    .filter(([, x]) => x.backends.length && x.backends.some(b => b.state !== "up"))
    .map(([kind, x]) => `${kind} ${x.name}: ${x.backends.filter(b => b.state === "up").length} of ${x.backends.length} backends up`);
  const degraded = document.getElementById("degraded");
  degraded.textContent = short.length ? "Serving with fewer backends: " + short.join("; ") : "";
  degraded.classList.toggle("show", short.length > 0);
  document.getElementById("listeners").replaceChildren(...s.listeners.map(l => listenerSection(l, now)),
                                                       ...(s.pools || []).map(p => poolSection(p, now)));
}

document.getElementById("login").addEventListener("submit", e => {
  e.preventDefault();
  sessionStorage.setItem("ringway-token", document.getElementById("token").value);
  refresh();
});
refresh();
setInterval(refresh, REFRESH);
