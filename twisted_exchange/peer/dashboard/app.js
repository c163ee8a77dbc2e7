// The peer dashboard: polls this admin port's JSON API once a second and
// redraws the book, the trade tape and the cluster view.  Plain DOM, no
// framework; every value from the API is set as text, never as HTML.
"use strict";

const POLL_MS = 1000;
const DEPTH = 15;
const TRADES = 30;
const SPARK_POINTS = 60;
const DEFAULT_SYMBOL = "BTCUSD";
const SYMBOL = /^[A-Z0-9]{2,12}$/;
const ADMIN_URL = /^http:\/\/[A-Za-z0-9.\-\[\]:]+$/;   // a link only to what a peer's status may name

const $ = (id) => document.getElementById(id);
let symbol = symbolFromHash();
const rates = new Map();   // peer id -> recent entries/s values, for the sparkline

function symbolFromHash() {
  const wanted = decodeURIComponent(location.hash.slice(1)).toUpperCase();
  return SYMBOL.test(wanted) ? wanted : DEFAULT_SYMBOL;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

async function getJSON(path) {
  const response = await fetch(path, {cache: "no-store"});
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// -- the book ------------------------------------------------------------------

function renderBook(book) {
  $("peer-id").textContent = book.peer;
  document.title = `${book.peer} · ${book.symbol} · twisted-exchange`;
  $("book-symbol").textContent = book.symbol;
  const widest = Math.max(0, ...book.bids.concat(book.asks).map(([, quantity]) => Number(quantity)));
  fillSide($("asks"), book.asks.slice().reverse(), "ask", widest);  // best ask next to the spread
  fillSide($("bids"), book.bids, "bid", widest);
  const bestBid = book.bids.length ? book.bids[0][0] : null;
  const bestAsk = book.asks.length ? book.asks[0][0] : null;
  $("spread").textContent = bestBid && bestAsk
    ? `spread ${Number((Number(bestAsk) - Number(bestBid)).toPrecision(6))}`
    : (bestBid || bestAsk ? "one-sided book" : "no orders");
}

function fillSide(container, levels, side, widest) {
  const rows = levels.map(([price, quantity]) => {
    const row = el("div", `level ${side}`);
    row.dataset.price = price;
    const bar = el("span", "bar");
    bar.style.width = `${widest ? (100 * Number(quantity)) / widest : 0}%`;
    row.append(bar, el("span", "price", price), el("span", "quantity", quantity));
    return row;
  });
  container.replaceChildren(...rows);
}

// -- the trade tape --------------------------------------------------------------

let newestTrade = null;

function renderTrades(reply) {
  const body = $("tape").tBodies[0];
  const previous = newestTrade;
  const rows = reply.trades.map((trade) => {
    const row = el("tr", trade.taker_side === "buy" ? "buy" : "sell");
    if (previous !== null && Number(trade.trade_id) > Number(previous)) row.classList.add("fresh");
    row.append(el("td", "muted", trade.trade_id), el("td", "", trade.taker_side),
               el("td", "num", trade.price), el("td", "num", trade.quantity));
    return row;
  });
  body.replaceChildren(...rows);
  newestTrade = reply.trades.length ? reply.trades[0].trade_id : newestTrade;
  $("no-trades").hidden = reply.trades.length > 0;
}

// -- the cluster -------------------------------------------------------------------

function renderCluster(reply) {
  const body = $("cluster").tBodies[0];
  const rows = reply.peers.map((peer) => peer.error ? unreachableRow(peer) : peerRow(peer, reply.peer));
  body.replaceChildren(...rows);
  const diverged = reply.peers.filter((peer) => peer.agreement === "diverged").map((peer) => peer.id);
  const down = reply.peers.filter((peer) => peer.error).map((peer) => peer.id);
  const summary = $("cluster-summary");
  summary.textContent = diverged.length ? `diverged: ${diverged.join(", ")}`
    : down.length ? `unreachable: ${down.join(", ")}` : `${reply.peers.length} peers, seen from ${reply.peer}`;
  summary.className = diverged.length ? "diverged" : down.length ? "warning" : "muted";
}

function peerRow(peer, self) {
  const row = el("tr", `peer ${peer.agreement}`);
  row.dataset.peer = peer.id;
  const name = el("td", "name");
  if (peer.id !== self && ADMIN_URL.test(peer.admin || "")) {
    const link = el("a", "", peer.id);
    link.href = `${peer.admin}/${location.hash}`;
    name.append(link);
  } else {
    name.textContent = peer.id + (peer.id === self ? " (this)" : "");
  }
  const hash = el("td", `hash ${peer.agreement}`, peer.digest.slice(0, 12));
  hash.title = `${peer.digest}\n${describeAgreement(peer.agreement)}`;
  const health = peer.health || {ok: false, problems: ["no health reported"]};
  const healthCell = el("td", health.ok ? "ok" : "warning", health.ok ? "ok" : health.problems.join("; "));
  row.append(name, el("td", `role ${peer.role}`, peer.role), el("td", "num", peer.term),
             el("td", "num", peer.commit), el("td", "num", peer.applied), hash,
             throughputCell(peer), healthCell);
  return row;
}

function unreachableRow(peer) {
  const row = el("tr", "peer unreachable");
  row.dataset.peer = peer.id;
  const reason = el("td", "warning", `unreachable: ${peer.error}`);
  reason.colSpan = 7;
  row.append(el("td", "name", peer.id), reason);
  return row;
}

function describeAgreement(agreement) {
  return {self: "this peer's own state", agrees: "same state hash as this peer at that index",
          unconfirmed: "ahead of this peer: compared once this peer catches up",
          diverged: "DIFFERENT state hash from this peer at the same index"}[agreement] || "";
}

function throughputCell(peer) {
  const rate = Number(peer.applied_per_second) || 0;
  const history = rates.get(peer.id) || [];
  history.push(rate);
  if (history.length > SPARK_POINTS) history.shift();
  rates.set(peer.id, history);
  const cell = el("td", "num throughput");
  cell.append(sparkline(history), el("span", "", rate.toFixed(1)));
  return cell;
}

function sparkline(values) {
  const width = 60, height = 16, top = Math.max(1, ...values);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  const step = width / (SPARK_POINTS - 1);
  const offset = width - step * (values.length - 1);
  line.setAttribute("points", values.map((value, i) =>
    `${(offset + i * step).toFixed(1)},${(height - 1 - ((height - 2) * value) / top).toFixed(1)}`).join(" "));
  svg.append(line);
  return svg;
}

// -- symbols and polling -----------------------------------------------------------

async function refreshSymbols() {
  const reply = await getJSON("api/symbols");
  const options = [...new Set([DEFAULT_SYMBOL, symbol, ...reply.symbols])].map((name) => {
    const option = el("option");
    option.value = name;
    return option;
  });
  $("symbols").replaceChildren(...options);
}

function markLive(ok, why) {
  const live = $("live");
  live.className = ok ? "live" : "live stale";
  live.textContent = ok ? `live · ${new Date().toLocaleTimeString()}` : `not updating: ${why}`;
}

function every(ms, work) {
  const run = async () => {
    try {
      await work();
    } finally {
      setTimeout(run, ms);
    }
  };
  run();
}

function start() {
  $("symbol").value = symbol;
  $("symbol-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = $("symbol").value.trim().toUpperCase();
    if (SYMBOL.test(wanted)) location.hash = wanted;
  });
  $("symbol").addEventListener("change", () => $("symbol-form").requestSubmit());
  window.addEventListener("hashchange", () => {
    symbol = symbolFromHash();
    $("symbol").value = symbol;
    newestTrade = null;
  });
  every(POLL_MS, async () => {
    const query = `symbol=${encodeURIComponent(symbol)}`;
    try {
      const [book, trades] = await Promise.all([getJSON(`api/book?${query}&depth=${DEPTH}`),
                                                getJSON(`api/trades?${query}&limit=${TRADES}`)]);
      renderBook(book);
      renderTrades(trades);
      markLive(true);
    } catch (error) {
      markLive(false, error.message);
    }
  });
  every(POLL_MS, () => getJSON("api/cluster").then(renderCluster, (error) => {
    $("cluster-summary").textContent = `not updating: ${error.message}`;
    $("cluster-summary").className = "warning";
  }));
  every(10 * POLL_MS, () => refreshSymbols().catch(() => {}));
}

start();
