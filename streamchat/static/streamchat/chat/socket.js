/* The websocket (docs/protocol.md, protocol v1): connecting, reconnecting with backoff, pings,
 * sending frames, asking to resume a reply. What a frame means for the page is replies.js's
 * job: it is called through `hooks`, so this module depends on nothing that depends on it. */
import { gettext } from "./i18n.js";
import { clone, config, els, showConnection } from "./page.js";

export const PROTOCOL = 1;
const PING_EVERY_MS = 20000;
const SILENCE_LIMIT_MS = 50000; // no frame for this long: the socket is dead, reconnect
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
const RESUME_RETRY_MS = 4000;
const PING_ANSWER_MS = 3000; // back online: an open socket that does not answer a ping is dead

export const socket = {
  ws: null,
  open: false, // hello received
  attempts: 0,
  timer: null,
  pingTimer: null,
  lastFrameAt: 0,
  loggedOut: false,
  lastReplyRequestAt: 0, // the last stop or resume sent
};

/** Set by main.js: frame(frame) for every frame but hello; opened(hello) once the socket may be
 * used; closed() when it is gone. */
export const hooks = { frame: () => {}, opened: () => {}, closed: () => {} };

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  return scheme + location.host + config.websocket;
}

export function connect() {
  if (socket.ws || socket.loggedOut) return;
  window.clearTimeout(socket.timer);
  let ws;
  try { ws = new WebSocket(socketUrl()); } catch (e) { scheduleReconnect(); return; }
  socket.ws = ws;
  ws.onmessage = (event) => {
    socket.lastFrameAt = Date.now();
    let frame;
    try { frame = JSON.parse(event.data); } catch (e) { return; }
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "hello") onHello(frame); else hooks.frame(frame);
  };
  ws.onclose = (event) => {
    if (socket.ws !== ws) return;
    socket.ws = null;
    socket.open = false;
    window.clearInterval(socket.pingTimer);
    hooks.closed();
    if (event.code === 4401) {
      markLoggedOut();
      return;
    }
    if (event.code === 4012 || event.code === 1012) {
      // The server restarts (a deploy): reconnect at once, a proxy sends us to another
      // worker; live replies are resumed and unsent messages sent again on hello.
      socket.attempts = 0;
      window.clearTimeout(socket.timer);
      socket.timer = window.setTimeout(connect, 100 + Math.random() * 400);
      return;
    }
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  if (socket.loggedOut) return;
  let delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, socket.attempts));
  delay = delay / 2 + Math.random() * delay / 2; // jitter: many tabs do not reconnect in step
  socket.attempts += 1;
  if (socket.attempts > 1 && !document.getElementById("sc-retry-now")) {
    // Kept while attempts go on (so a focused "Retry now" keeps the focus); hello clears it.
    showConnection(gettext("Connection lost. Reconnecting…"), "error");
    if (document.getElementById("sc-tpl-retry-now")) {
      const retry = clone("retry-now");
      retry.addEventListener("click", retryNow);
      els.connection.append(" ", retry);
    }
  }
  window.clearTimeout(socket.timer);
  socket.timer = window.setTimeout(connect, delay);
}

/** Connect now if no socket is open or connecting (the tab became visible). */
export function reconnectNow() {
  if (socket.ws || socket.loggedOut) return;
  socket.attempts = 0;
  connect();
}

/** The network is back (`online`) or the user pressed "Retry now": connect at once, without
 * waiting for the next attempt. A socket still connecting may hang on the old route: it is
 * dropped for a new one. An open one may have died silently while the network was away: a
 * ping must be answered soon, or it is replaced too. */
export function retryNow() {
  if (socket.loggedOut) return;
  if (socket.ws && socket.open) {
    const ws = socket.ws;
    const askedAt = Date.now();
    sendFrame({ type: "ping" });
    window.setTimeout(() => { if (socket.ws === ws && socket.lastFrameAt < askedAt) abandon(); }, PING_ANSWER_MS);
    return;
  }
  abandon();
}

function abandon() {
  const ws = socket.ws;
  if (ws) {
    socket.ws = null;
    socket.open = false;
    ws.onclose = null;
    ws.onmessage = null;
    try { ws.close(); } catch (e) { /* already closed */ }
    window.clearInterval(socket.pingTimer);
    hooks.closed();
  }
  socket.attempts = 0;
  connect();
}

/** Logged out (close code 4401, an `auth_expired` frame or an HTTP 401): stop reconnecting and
 * say how to log in again. */
export function markLoggedOut() {
  socket.loggedOut = true;
  const notice = clone("logged-out");
  const link = notice.querySelector("a");
  link.href = config.urls.login + "?next=" + encodeURIComponent(location.pathname);
  els.connection.replaceChildren(...notice.childNodes);
  els.connection.hidden = false;
  els.connection.setAttribute("data-kind", "error");
}

export function sendFrame(frame) {
  if (!socket.ws || !socket.open) return false;
  socket.ws.send(JSON.stringify(frame));
  return true;
}

/** Close the socket (it reconnects by itself): the server asked us to go elsewhere. */
export function dropConnection() {
  if (socket.ws) socket.ws.close();
}

function onHello(frame) {
  socket.open = true;
  socket.attempts = 0;
  showConnection("");
  if (frame.protocol !== PROTOCOL) {
    showConnection(gettext("This page is out of date: reload it."), "error");
  } else if (frame.user != null && config.user != null && frame.user !== config.user) {
    showConnection(gettext("You are now logged in as someone else: reload the page."), "error");
  }
  window.clearInterval(socket.pingTimer);
  socket.pingTimer = window.setInterval(() => {
    if (Date.now() - socket.lastFrameAt > SILENCE_LIMIT_MS && socket.ws) { socket.ws.close(); return; }
    sendFrame({ type: "ping" });
  }, PING_EVERY_MS);
  hooks.opened(frame);
}

/** Ask for a reply's text from what this page holds (after a gap, a reconnect or a reload). */
export function askResume(message, force) {
  const now = Date.now();
  if (!force && now - message.resumeAt < RESUME_RETRY_MS) return;
  if (sendFrame({ type: "resume", reply: message.id, offset: message.cp })) {
    message.resumeAt = now;
    socket.lastReplyRequestAt = now;
  }
}

export function requestStop(reply) {
  if (sendFrame({ type: "stop", reply: reply.id })) socket.lastReplyRequestAt = Date.now();
}
