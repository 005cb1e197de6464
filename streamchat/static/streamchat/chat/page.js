/* The page itself: its JSON config (a json_script data block), its elements by id, the
 * <template> elements that modules clone, and the small shared status areas. */

export const config = JSON.parse(document.getElementById("streamchat-config").textContent);

const $ = (id) => document.getElementById(id);

export const els = {
  app: $("streamchat"),
  list: $("sc-conversations"),
  listEmpty: $("sc-list-empty"),
  search: $("sc-search"),
  searchForm: $("sc-search-form"),
  newChat: $("sc-new"),
  openSidebar: $("sc-open-sidebar"),
  closeSidebar: $("sc-close-sidebar"),
  title: $("sc-title"),
  model: $("sc-model"),
  connection: $("sc-connection"),
  messages: $("sc-messages"),
  empty: $("sc-empty"),
  announce: $("sc-announce"),
  composer: $("sc-composer"),
  composerError: $("sc-composer-error"),
  input: $("sc-input"),
  send: $("sc-send"),
  stop: $("sc-stop"),
  deleteDialog: $("sc-delete-dialog"),
  deleteName: $("sc-delete-name"),
  jump: $("sc-jump"), // optional: a host's template may leave it out
};

/** The first element of <template id="sc-tpl-…">, copied. Its text is the template's, so it is
 * translated by Django like the rest of the page. */
export function clone(name) {
  return $("sc-tpl-" + name).content.firstElementChild.cloneNode(true);
}

export function announce(text) {
  els.announce.textContent = "";
  // A fresh text node each time so repeated messages are announced again.
  window.setTimeout(() => { els.announce.textContent = text; }, 30);
}

export function showComposerError(text) {
  els.composerError.textContent = text;
  els.composerError.hidden = !text;
}

export function showConnection(text, kind) {
  els.connection.textContent = text || "";
  els.connection.hidden = !text;
  if (kind) els.connection.setAttribute("data-kind", kind); else els.connection.removeAttribute("data-kind");
}
