/* The thread: one element per message of the branch shown (cloned from the page's <template>s),
 * rendered at most once per animation frame while a reply streams, and the actions on a
 * message (copy, regenerate, edit, ‹ › between versions, retry or edit a refused message).
 *
 * Model output reaches the DOM only through render.markdown (the whole text, sanitised on every
 * render); a user's text only through textContent. */
import { gettext, ngettext, interpolate } from "./i18n.js";
import { clone, config, els } from "./page.js";
import * as render from "./render.js";
import { autosize, saveDraft } from "./draft.js";
import { errorText, formatCost } from "./text.js";
import { showAttachments } from "./attachments.js";
import { hasSteps, renderWithSteps } from "./tools.js";
import { socket, sendFrame } from "./socket.js";
import { ROOT, isLive, keyOf, liveReply, state, visiblePath } from "./tree.js";

// --- message elements -----------------------------------------------------------------------

const locale = document.documentElement.lang || undefined;
const timeFormat = new Intl.DateTimeFormat(locale, { hour: "numeric", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "short" });

/** <time>: the hour today, the date and hour before; the full date and time on hover. */
function setTime(el, date) {
  if (!date || isNaN(date.getTime())) return;
  el.dateTime = date.toISOString();
  el.title = dateTimeFormat.format(date);
  el.textContent = date.toDateString() === new Date().toDateString() ? timeFormat.format(date) : el.title;
}

function messageElement(message) {
  if (message.el) return message.el;
  const el = clone(message.role === "user" ? "message-user" : "message-assistant");
  el.setAttribute("data-id", message.id);
  setTime(el.querySelector(".sc-time"), message.created);
  const reasoning = el.querySelector(".sc-reasoning");
  message.el = el;
  message.parts = {
    siblings: el.querySelector(".sc-siblings"),
    body: el.querySelector(".sc-body"),
    note: el.querySelector(".sc-msg-note"),
    error: el.querySelector(".sc-msg-error"),
    meta: el.querySelector(".sc-meta"),
    actions: el.querySelector(".sc-actions"),
    reasoning: reasoning,
    reasoningText: reasoning.querySelector("pre"),
  };
  if (message.role === "user") message.parts.body.textContent = message.text;
  else renderBody(message);
  showAttachments(message.parts.body, message.attachments);
  refreshMessage(message);
  return el;
}

function renderBody(message) {
  if (!message.el && !message.parts) return;
  if (message.role === "user") { message.parts.body.textContent = message.text; return; }
  // While it streams, an unfinished construct is closed or held back (render.streamingText).
  message.parts.body.replaceChildren(hasSteps(message)
    ? renderWithSteps(message, isLive(message)) // tool steps at their offsets (tools.js)
    : render.markdown(message.text, { docId: "m" + message.id, streaming: isLive(message) }));
  if (message.reasoning) {
    message.parts.reasoning.hidden = false;
    message.parts.reasoningText.textContent = message.reasoning;
  }
}

export function refreshMessage(message) {
  const el = message.el;
  if (!el) return;
  const parts = message.parts;
  el.setAttribute("data-status", message.status);
  if (isLive(message)) el.setAttribute("aria-busy", "true"); else el.removeAttribute("aria-busy");
  // Sibling switcher: ‹ 2 / 3 ›
  const siblings = state.children.get(keyOf(message.parent)) || [];
  parts.siblings.replaceChildren();
  parts.siblings.hidden = siblings.length < 2;
  if (siblings.length > 1) {
    const index = siblings.indexOf(message.id);
    const switcher = clone("siblings");
    switcher.querySelector('[data-action="prev"]').disabled = index <= 0;
    switcher.querySelector('[data-action="next"]').disabled = index >= siblings.length - 1;
    switcher.querySelector(".sc-sibling-count").textContent = (index + 1) + " / " + siblings.length;
    parts.siblings.append(...switcher.childNodes);
  }
  // Status note and error, in place.
  let note = "";
  let error = "";
  if (message.role === "assistant") {
    if (message.status === "stopped") note = gettext("Stopped");
    else if (message.status === "interrupted") error = errorText(message.error && message.error.code !== "interrupted" ? message.error : { code: "interrupted" });
    else if (message.status === "error") error = errorText(message.error) || gettext("The reply failed");
    else if (message.status === "pending" && !message.text) note = gettext("Waiting for the model…");
    if (message.finishReason === "length" && message.status === "complete") note = gettext("The reply reached its length limit");
    if (message.regenerating) note = gettext("Regenerating…");
  }
  parts.note.textContent = note;
  parts.note.hidden = !note;
  parts.error.textContent = error;
  parts.error.hidden = !error;
  // Model, tokens and cost.
  const meta = [];
  if (message.role === "assistant") {
    if (message.model) meta.push(message.model);
    if (message.usage) {
      const u = message.usage;
      const input = u.prompt_tokens || 0;
      const output = u.completion_tokens || 0;
      meta.push(interpolate(
        ngettext("%(total)s token (%(input)s in, %(output)s out)", "%(total)s tokens (%(input)s in, %(output)s out)", input + output),
        { total: input + output, input: input, output: output }, true));
      // An estimate (OpenRouter reported no usage) says so until its own figure arrives.
      meta.push(u.estimated ? interpolate(gettext("≈ %s (estimate)"), [formatCost(u.cost)]) : formatCost(u.cost));
    }
  }
  parts.meta.textContent = meta.join(" · ");
  parts.meta.hidden = !meta.length;
  const live = liveReply();
  parts.actions.querySelectorAll("button").forEach((b) => {
    const action = b.getAttribute("data-action");
    if (action === "regenerate" || action === "edit") b.disabled = !!live || message.regenerating;
    if (action === "copy") b.disabled = !message.text;
  });
}

/** An error said in place, on the reply it concerns. */
export function showMessageError(message, text) {
  if (!message.parts) return;
  message.parts.error.textContent = text;
  message.parts.error.hidden = false;
}

function pendingElement(pending) {
  if (pending.el) return pending.el;
  const el = clone("message-pending");
  el.setAttribute("data-client-id", pending.client_id);
  el.querySelector(".sc-body").textContent = pending.content;
  showAttachments(el.querySelector(".sc-body"), pending.attachments);
  pending.el = el;
  pending.parts = {
    note: el.querySelector(".sc-msg-note"),
    error: el.querySelector(".sc-msg-error"),
    actions: el.querySelector(".sc-actions"),
  };
  refreshPending(pending);
  return el;
}

export function refreshPending(pending) {
  if (!pending.el) return;
  const text = pending.error ? errorText(pending.error) : "";
  pending.parts.error.textContent = text;
  pending.parts.error.hidden = !text;
  // Refused (rate limited, say): it stays in the thread, marked, with Retry and Edit.
  pending.el.classList.toggle("sc-msg--failed", !!pending.error);
  pending.parts.note.textContent = pending.error ? gettext("Not sent") : (socket.open ? gettext("Sending…") : gettext("Waiting for the connection…"));
  pending.parts.actions.hidden = !pending.error;
}

export function refreshAllPending() { state.pending.forEach(refreshPending); }

/** Lay out the visible branch (elements are reused; only structure changes here). */
export function renderThread() {
  const path = visiblePath();
  const nodes = [];
  let cut = path.length;
  const shownPending = [];
  const refused = new Map(); // position in the path → refused messages written there
  state.pending.forEach((p) => {
    if (p.conversation !== state.conversationId || p.kind === "regenerate") return;
    const at = p.parentKey === ROOT ? 0 : path.indexOf(p.parentKey) + 1;
    const placed = at > 0 || p.parentKey === ROOT;
    if (p.error && placed) {
      // A refused message keeps its place after what it answered, whatever was sent since.
      if (!refused.has(at)) refused.set(at, []);
      refused.get(at).push(p);
      return;
    }
    shownPending.push(p);
    if (placed) cut = Math.min(cut, at);
  });
  const showRefused = (at) => (refused.get(at) || []).forEach((p) => { nodes.push(pendingElement(p)); refreshPending(p); });
  for (let i = 0; i < cut; i++) {
    showRefused(i);
    const message = state.messages.get(path[i]);
    if (message.role === "system") continue;
    nodes.push(messageElement(message));
    refreshMessage(message);
  }
  refused.forEach((list, at) => { if (at >= cut) showRefused(at); });
  shownPending.forEach((p) => { nodes.push(pendingElement(p)); refreshPending(p); });
  els.empty.hidden = nodes.length > 0;
  const stick = nearBottom();
  els.messages.replaceChildren(els.empty);
  nodes.forEach((n) => { els.messages.append(n); });
  if (stick) scrollToBottom(); else refreshJump();
  refreshComposer();
}

/** Send or Stop, whichever applies. */
export function refreshComposer() {
  const live = liveReply();
  els.stop.hidden = !live;
  els.send.hidden = !!live;
}

function nearBottom() {
  const m = els.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

export function scrollToBottom() { els.messages.scrollTop = els.messages.scrollHeight; refreshJump(); }

/** "Jump to latest" shows while the view is scrolled up from the newest text. */
function refreshJump() {
  if (els.jump) els.jump.hidden = nearBottom();
}

// --- rendering on animation frames ----------------------------------------------------------

const dirty = new Set();
let frameRequested = false;
let nextRenderAt = 0; // a long reply renders less often, so rendering stays a small share of time

/** The reply's text grew: render it on a coming animation frame. */
export function markDirty(message) {
  dirty.add(message);
  if (frameRequested) return;
  frameRequested = true;
  const wait = nextRenderAt - performance.now();
  if (wait > 0) window.setTimeout(() => { window.requestAnimationFrame(flushRenders); }, wait);
  else window.requestAnimationFrame(flushRenders);
}

function flushRenders() {
  frameRequested = false;
  const started = performance.now();
  const stick = nearBottom();
  dirty.forEach((message) => {
    if (message.el) renderBody(message);
  });
  dirty.clear();
  if (stick) scrollToBottom(); else refreshJump();
  // Rendering is linear in the reply's length; when one render takes more than a few ms, wait
  // about three times as long before the next, so a very long reply cannot starve the page.
  const cost = performance.now() - started;
  nextRenderAt = cost > 4 ? performance.now() + cost * 3 : 0;
}

/** The reply ended: its final text is rendered at once, so "finished" never shows a stale frame. */
export function renderNow(message) {
  dirty.delete(message);
  if (message.el) renderBody(message);
}

// --- actions --------------------------------------------------------------------------------

export function newClientId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => (b + 256).toString(16).slice(1)).join("");
}

/** Keep a send / edit / regenerate until the server acknowledges it, and send it. */
export function queue(pending) {
  state.pending.set(pending.client_id, pending);
  sendFrame(pending.frame);
  renderThread();
}

function retryPending(pending) {
  state.pending.delete(pending.client_id);
  pending.el = null;
  const clientId = newClientId();
  const frame = Object.assign({}, pending.frame, { client_id: clientId, model: els.model.value });
  queue(Object.assign({}, pending, { client_id: clientId, frame: frame, error: null, el: null, model: els.model.value }));
}

function editPending(pending) {
  state.pending.delete(pending.client_id);
  if (!els.input.value) els.input.value = pending.content;
  saveDraft(els.input.value);
  autosize();
  renderThread();
  els.input.focus();
}

function regenerate(message) {
  if (liveReply()) return;
  const clientId = newClientId();
  message.regenerating = true;
  refreshMessage(message);
  queue({ client_id: clientId, kind: "regenerate", reply: message.id, conversation: state.conversationId, model: els.model.value,
    frame: { type: "regenerate", reply: message.id, client_id: clientId, model: els.model.value } });
}

function startEdit(message) {
  if (liveReply() || message.editing) return;
  message.editing = true;
  const form = clone("edit");
  const area = form.querySelector("textarea");
  const cancel = form.querySelector('[data-edit="cancel"]');
  const save = form.querySelector('[data-edit="send"]');
  area.value = message.text;
  area.maxLength = config.max_message_chars;
  message.parts.body.replaceWith(form);
  area.focus();
  function close() {
    message.editing = false;
    form.replaceWith(message.parts.body);
  }
  cancel.addEventListener("click", close);
  area.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { event.preventDefault(); close(); }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); save.click(); }
  });
  save.addEventListener("click", () => {
    const text = area.value;
    if (!text.trim() && !message.attachments.length) return;
    close();
    const clientId = newClientId();
    // The frame names no attachments: the new version keeps the edited message's (as copies).
    queue({ client_id: clientId, kind: "edit", content: text, attachments: message.attachments, parent: message.parent, parentKey: keyOf(message.parent),
      conversation: state.conversationId, model: els.model.value,
      frame: { type: "edit", message: message.id, content: text, client_id: clientId, model: els.model.value } });
  });
}

function copyText(text, buttonEl) {
  function done() {
    if (!buttonEl) return;
    const label = buttonEl.textContent;
    buttonEl.textContent = gettext("Copied");
    window.setTimeout(() => { buttonEl.textContent = label; }, 1500);
  }
  function fallback() {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "sc-visually-hidden";
    document.body.append(area);
    area.select();
    try { document.execCommand("copy"); done(); } catch (e) { /* nothing more to try */ }
    area.remove();
  }
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
  else fallback();
}

function onThreadClick(event) {
  const anchor = event.target.closest("a[href^='#']");
  if (anchor) {
    // A footnote (or any #link in a reply) goes to that id within the same message, never to
    // another message's element or the page's; the URL stays as it is.
    event.preventDefault();
    let id = null;
    try { id = decodeURIComponent(anchor.getAttribute("href").slice(1)); } catch (e) { return; }
    const article = anchor.closest("article");
    const found = article && Array.from(article.querySelectorAll("[id]")).find((el) => el.id === id);
    if (found) {
      found.setAttribute("tabindex", "-1");
      found.scrollIntoView({ block: "center" });
      found.focus({ preventScroll: true });
    }
    return;
  }
  const target = event.target.closest("button");
  if (!target) return;
  if (target.classList.contains("sc-code-copy")) {
    const code = target.closest(".sc-code").querySelector("code, pre");
    copyText(code ? code.textContent : "", target);
    return;
  }
  const action = target.getAttribute("data-action");
  const article = target.closest("article");
  if (!action || !article) return;
  if (article.hasAttribute("data-client-id")) {
    const pending = state.pending.get(article.getAttribute("data-client-id"));
    if (!pending) return;
    if (action === "retry") retryPending(pending);
    if (action === "edit-pending") editPending(pending);
    return;
  }
  const message = state.messages.get(Number(article.getAttribute("data-id")));
  if (!message) return;
  if (action === "copy") copyText(message.text, target);
  else if (action === "regenerate") regenerate(message);
  else if (action === "edit") startEdit(message);
  else if (action === "prev" || action === "next") {
    const siblings = state.children.get(keyOf(message.parent)) || [];
    const index = siblings.indexOf(message.id) + (action === "prev" ? -1 : 1);
    if (index < 0 || index >= siblings.length) return;
    state.chosen.set(keyOf(message.parent), siblings[index]);
    renderThread();
    const shown = state.messages.get(siblings[index]);
    const again = shown && shown.parts && shown.parts.siblings.querySelector('[data-action="' + action + '"]');
    if (again && !again.disabled) again.focus();
    else if (shown && shown.parts) shown.parts.siblings.querySelector("button:not(:disabled)")?.focus();
  }
}

export function wireThread() {
  els.messages.addEventListener("click", onThreadClick);
  els.messages.addEventListener("scroll", refreshJump, { passive: true });
  if (els.jump) els.jump.addEventListener("click", () => { scrollToBottom(); els.input.focus(); });
}
