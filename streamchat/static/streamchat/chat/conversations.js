/* Conversations: the JSON API (docs/ui.md), the sidebar list (search, rename, delete), opening
 * one (and the address that names it), a new chat. */
import { gettext, interpolate } from "./i18n.js";
import { announce, clone, config, els, showComposerError } from "./page.js";
import { plainText } from "./render.js";
import { renderThread, scrollToBottom } from "./messages.js";
import { closeSidebar } from "./sidebar.js";
import { askResume, markLoggedOut, sendFrame } from "./socket.js";
import { addMessage, choosePathTo, clearTree, isLive, makeMessage, state } from "./tree.js";

export function api(path, options) {
  options = options || {};
  const headers = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (options.method && options.method !== "GET") headers["X-CSRFToken"] = config.csrf_token;
  return fetch(path, {
    method: options.method || "GET",
    headers: headers,
    credentials: "same-origin",
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
  }).then((response) => {
    if (response.status === 204) return null;
    return response.json().catch(() => ({})).then((data) => {
      if (!response.ok) {
        if (response.status === 401) markLoggedOut();
        const error = new Error(data.message || response.statusText);
        error.code = data.code || "http_" + response.status;
        throw error;
      }
      return data;
    });
  });
}

export function conversationUrl(id) { return config.urls.chat + "c/" + id + "/"; }
function conversationApi(id) { return config.urls.conversations + id + "/"; }

/** A title as shown: plain text, since a title taken from a first message is its Markdown. */
function shownTitle(title) { return plainText(title) || title; }

export function setTitle(title) {
  state.title = title;
  els.title.textContent = title ? shownTitle(title) : gettext("New chat");
}

// --- the list -------------------------------------------------------------------------------

let listSeq = 0;
let listTimer = null;

/** Reload the list soon (several events in a row cost one request). */
export function refreshList() {
  window.clearTimeout(listTimer);
  listTimer = window.setTimeout(loadList, 150);
}

export function loadList() {
  const seq = ++listSeq;
  const q = els.search.value.trim();
  const url = config.urls.conversations + (q ? "?q=" + encodeURIComponent(q) : "");
  return api(url).then((data) => {
    if (seq !== listSeq) return;
    state.conversations = data.conversations;
    renderList();
  }, () => { /* the list stays as it was */ });
}

export function markListStreaming(id, on) {
  const item = id != null && state.conversations.find((c) => c.id === id);
  if (item) { item.streaming = on; renderList(); }
}

/** The conversation was just written to: first in the list, as the server orders it. */
export function touchListItem(id) {
  const index = state.conversations.findIndex((c) => c.id === id);
  if (index > 0) {
    state.conversations.unshift(state.conversations.splice(index, 1)[0]);
    renderList();
  }
}

/** A title changed (a rename in another tab, or a generated title): ``title`` is a string. */
export function retitle(id, title) {
  const item = state.conversations.find((c) => c.id === id);
  if (typeof title === "string") {
    if (item) { item.title = title; renderList(); }
    if (id === state.conversationId) setTitle(title);
  }
  if (!item) refreshList();
}

// The list is one Tab stop (a roving tabindex): only the row last moved to, else the open
// conversation, else the first, has its link in the Tab order; arrow keys move between rows and
// to a row's buttons.
let rovingId = null;

function tabbableId() {
  const ids = state.conversations.map((c) => c.id);
  if (ids.indexOf(rovingId) >= 0) return rovingId;
  if (ids.indexOf(state.conversationId) >= 0) return state.conversationId;
  return ids.length ? ids[0] : null;
}

export function renderList() {
  if (state.renaming) return; // redrawn when the rename ends
  // Redrawing must not lose the focus of a keyboard user moving in the list.
  const active = els.list.contains(document.activeElement) ? document.activeElement : null;
  const focusAgain = active && {
    id: Number(active.closest("li").getAttribute("data-id")),
    action: active.getAttribute("data-action"),
  };
  const tabbable = tabbableId();
  const help = document.getElementById("sc-list-help");
  const items = state.conversations.map((c) => {
    // <li><a><span class="sc-live-dot"></span>title</a><span class="sc-conversation-actions">✎ ✕
    const li = clone("conversation");
    li.setAttribute("data-id", c.id);
    const link = li.querySelector("a");
    link.href = conversationUrl(c.id);
    if (!c.streaming) link.querySelector(".sc-live-dot").remove();
    const title = shownTitle(c.title);
    link.append(title);
    link.title = title;
    if (c.id === state.conversationId) {
      link.setAttribute("aria-current", "page");
      li.setAttribute("data-current", "");
    }
    // The buttons lie over the end of the title while the row is hovered or focused, so the
    // title has the whole row to itself the rest of the time.
    li.querySelector('[data-action="rename"]').setAttribute("aria-label", interpolate(gettext("Rename %s"), [title]));
    li.querySelector('[data-action="delete"]').setAttribute("aria-label", interpolate(gettext("Delete %s"), [title]));
    link.tabIndex = c.id === tabbable ? 0 : -1;
    li.querySelectorAll("button").forEach((b) => { b.tabIndex = -1; });
    if (help) link.setAttribute("aria-describedby", help.id);
    return li;
  });
  els.list.replaceChildren(...items);
  if (focusAgain) {
    const li = els.list.querySelector('li[data-id="' + focusAgain.id + '"]');
    const again = li && (focusAgain.action ? li.querySelector('[data-action="' + focusAgain.action + '"]') : li.querySelector("a"));
    if (again) again.focus({ preventScroll: true });
  }
  const q = els.search.value.trim();
  els.listEmpty.hidden = items.length > 0;
  els.listEmpty.textContent = q ? interpolate(gettext("No conversation matches “%s”."), [q]) : gettext("No conversations yet.");
}

function onListClick(event) {
  const li = event.target.closest("li");
  if (!li) return;
  const id = Number(li.getAttribute("data-id"));
  const target = event.target.closest("a, button");
  if (!target) return;
  if (target.tagName === "A") {
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    rovingId = id;
    openConversation(id, { push: true });
    closeSidebar();
  } else if (target.getAttribute("data-action") === "rename") {
    startRename(li, id);
  } else if (target.getAttribute("data-action") === "delete") {
    confirmDelete(id);
  }
}

/** Arrow keys in the list: ↑ ↓ Home End between rows, → ← across a row's link and buttons;
 * F2 renames, Delete deletes. */
function onListKeydown(event) {
  if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
  const li = event.target.closest("li");
  if (!li || event.target.tagName === "INPUT") return;
  const rows = Array.from(els.list.querySelectorAll("li"));
  const index = rows.indexOf(li);
  const across = Array.from(li.querySelectorAll("a, button"));
  const at = across.indexOf(event.target);
  let next = null;
  if (event.key === "ArrowDown") next = rows[Math.min(index + 1, rows.length - 1)];
  else if (event.key === "ArrowUp") next = rows[Math.max(index - 1, 0)];
  else if (event.key === "Home") next = rows[0];
  else if (event.key === "End") next = rows[rows.length - 1];
  else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
    const step = event.key === "ArrowRight" ? 1 : -1;
    const target = across[Math.min(Math.max(at + step, 0), across.length - 1)];
    event.preventDefault();
    if (target) target.focus();
    return;
  } else if (event.key === "F2" || event.key === "Delete") {
    event.preventDefault();
    const id = Number(li.getAttribute("data-id"));
    if (event.key === "F2") startRename(li, id); else confirmDelete(id);
    return;
  } else return;
  event.preventDefault();
  if (!next) return;
  const link = next.querySelector("a");
  rows.forEach((row) => { row.querySelector("a").tabIndex = row === next ? 0 : -1; });
  rovingId = Number(next.getAttribute("data-id"));
  link.focus();
  link.scrollIntoView({ block: "nearest" });
}

/** A conversation (or a new chat) was opened: the message box takes the focus, to type at once.
 * On a touch screen its title does instead: a focused text box would pop the keyboard up over
 * the conversation. */
export function focusOpened() {
  const touch = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
  if (touch) els.title.focus({ preventScroll: true }); else els.input.focus({ preventScroll: true });
}

function startRename(li, id) {
  const item = state.conversations.find((c) => c.id === id);
  if (!item) return;
  const input = clone("rename");
  input.value = item.title;
  li.replaceChildren(input);
  state.renaming = true;
  input.focus();
  input.select();
  let finished = false;
  function finish(save) {
    if (finished) return;
    finished = true;
    state.renaming = false;
    const title = input.value.trim();
    if (!save || !title || title === item.title) { renderList(); return; }
    api(conversationApi(id), { method: "PATCH", body: { title: title } }).then((data) => {
      item.title = data.title;
      if (id === state.conversationId) setTitle(data.title);
      renderList();
      announce(gettext("Renamed"));
    }, (error) => { renderList(); showComposerError(error.message); });
  }
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); finish(true); }
    if (event.key === "Escape") { event.preventDefault(); finish(false); }
  });
  input.addEventListener("blur", () => { finish(true); });
}

function confirmDelete(id) {
  const item = state.conversations.find((c) => c.id === id);
  if (!item) return;
  els.deleteName.textContent = shownTitle(item.title);
  els.deleteDialog.returnValue = "";
  els.deleteDialog.showModal();
  els.deleteDialog.addEventListener("close", function onClose() {
    els.deleteDialog.removeEventListener("close", onClose);
    if (els.deleteDialog.returnValue !== "delete") return;
    api(conversationApi(id), { method: "DELETE" }).then(() => {
      state.conversations = state.conversations.filter((c) => c.id !== id);
      renderList();
      if (id === state.conversationId) newChat(true);
      announce(gettext("Conversation deleted"));
    }, (error) => { showComposerError(error.message); });
  });
}

// --- the open conversation ------------------------------------------------------------------

/** Show one conversation. ``keep``: a reload of the open one, keeping text this page holds. */
export function openConversation(id, options) {
  options = options || {};
  const seq = ++state.loadSeq;
  if (options.push) history.pushState({ conversation: id }, "", conversationUrl(id));
  return api(conversationApi(id)).then((data) => {
    if (seq !== state.loadSeq) return;
    const previous = options.keep && id === state.conversationId ? state.messages : new Map();
    const chosen = options.keep && id === state.conversationId ? state.chosen : new Map();
    const switching = id !== state.conversationId;
    state.conversationId = id;
    clearTree();
    data.messages.forEach((item) => {
      const message = makeMessage(item);
      const old = previous.get(message.id);
      if (old && old.cp > message.cp && isLive(message)) {
        message.text = old.text; // the saved checkpoint is older than what this page holds
        message.cp = old.cp;
      }
      addMessage(message);
    });
    if (data.current != null) choosePathTo(data.current);
    chosen.forEach((child, parent) => { if (state.messages.has(child)) state.chosen.set(parent, child); });
    setTitle(data.title);
    if (switching) selectModel(data.model);
    renderThread();
    renderList();
    sendFrame({ type: "subscribe", conversation: id });
    state.messages.forEach((m) => { if (isLive(m)) askResume(m, true); });
    if (switching) scrollToBottom();
    if (switching && !options.keep) focusOpened();
  }, (error) => {
    if (seq !== state.loadSeq) return;
    if (error.code === "not_found") {
      newChat(true);
      showComposerError(gettext("That conversation no longer exists."));
    } else {
      showComposerError(interpolate(gettext("Could not load the conversation: %s"), [error.message]));
    }
  });
}

function selectModel(modelId) {
  if (!modelId) return;
  for (let i = 0; i < els.model.options.length; i++) {
    if (els.model.options[i].value === modelId) { els.model.selectedIndex = i; return; }
  }
}

export function newChat(replace) {
  state.loadSeq += 1;
  state.conversationId = null;
  clearTree();
  setTitle("");
  const url = config.urls.chat;
  if (replace) history.replaceState({ conversation: null }, "", url);
  else history.pushState({ conversation: null }, "", url);
  renderThread();
  renderList();
  els.input.focus();
}

function conversationFromUrl() {
  const rest = location.pathname.slice(config.urls.chat.length);
  const match = /^c\/(\d+)\/?$/.exec(rest);
  return match ? Number(match[1]) : null;
}

/** A new conversation got its id (its first message was acknowledged): the address names it. */
export function adoptConversation(id) {
  state.conversationId = id;
  history.replaceState({ conversation: id }, "", conversationUrl(id));
  sendFrame({ type: "subscribe", conversation: id });
}

export function wireConversations() {
  els.list.addEventListener("click", onListClick);
  els.list.addEventListener("keydown", onListKeydown);
  let searchTimer = null;
  els.search.addEventListener("input", () => {
    window.clearTimeout(searchTimer);
    searchTimer = window.setTimeout(loadList, 250);
  });
  els.searchForm.addEventListener("submit", (event) => { event.preventDefault(); loadList(); });
  els.newChat.addEventListener("click", (event) => {
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    showComposerError("");
    newChat(false);
    closeSidebar();
  });
  window.addEventListener("popstate", () => {
    const id = conversationFromUrl();
    if (id == null) newChat(true); else openConversation(id);
  });
}
