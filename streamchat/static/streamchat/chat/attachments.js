/* Attachments (docs/ui.md#attachments): the composer's tray of images and PDFs, filled from the
 * file button, a paste or a drop; each file is uploaded at once over HTTP (docs/http.md, one
 * request per file, so each gets its own progress and its own refusal), shown as a thumbnail or
 * a PDF chip once stored, and can be removed (DELETE) before it is sent. The stored ones' ids go
 * with the next send; they leave the tray when that send is acknowledged, and stay in it when it
 * is refused (a model that cannot read them: pick another and send again). Also the attachments
 * shown with a message in the thread.
 *
 * Thumbnails are the server's URL of the stored, re-encoded file, never a blob: URL, so the
 * page's CSP (img-src 'self' data:) needs nothing more. File names are set as text only. */
import { gettext, ngettext, interpolate } from "./i18n.js";
import { announce, clone, config, els } from "./page.js";
import { state } from "./tree.js";

const $ = (id) => document.getElementById(id);
const limits = config.attachments || null;
const uploadUrl = config.urls && config.urls.attachments;
const tray = $("sc-attachments");
const fileButton = $("sc-attach");
const fileInput = $("sc-file");
// A host's template without the tray (or a server without uploads): no attachments, no errors.
const enabled = !!(limits && uploadUrl && tray && $("sc-tpl-attachment"));

const locale = document.documentElement.lang || undefined;
const percent = new Intl.NumberFormat(locale, { style: "percent" });
const items = []; // in the tray, in order (see refresh() for an item's fields)

// --- text -----------------------------------------------------------------------------------

/** 48 kB, 2.5 MB: in the page's language (the units are Intl's own). */
export function formatSize(bytes) {
  const [value, unit] = bytes >= 1024 * 1024 ? [bytes / (1024 * 1024), "megabyte"]
    : bytes >= 1024 ? [bytes / 1024, "kilobyte"] : [bytes, "byte"];
  try {
    return new Intl.NumberFormat(locale, {
      style: "unit", unit: unit, maximumFractionDigits: 1, unitDisplay: unit === "byte" ? "narrow" : "short",
    }).format(value);
  } catch (e) {
    return Math.round(value * 10) / 10 + " " + { megabyte: "MB", kilobyte: "kB", byte: "B" }[unit];
  }
}

function isImage(data) { return /^image\//.test(data.content_type || ""); }

/** "PNG · 64×48 · 12 kB", "PDF · 2 pages · 34 kB". */
function describe(data) {
  const bits = [(data.content_type || "").split("/").pop().toUpperCase()];
  if (isImage(data) && data.width && data.height) bits.push(data.width + "×" + data.height);
  if (data.pages) bits.push(interpolate(ngettext("%s page", "%s pages", data.pages), [data.pages]));
  if (data.size != null) bits.push(formatSize(data.size));
  return bits.join(" · ");
}

/** The server's own message (too large, wrong type, too many…), or one for what sent no JSON
 * (a proxy's 413 page, a dropped connection). */
function refusalText(status, data) {
  if (data && typeof data.message === "string" && data.message) return data.message;
  if (status === 413) return interpolate(gettext("An attachment may be at most %s."), [formatSize(limits.max_bytes)]);
  if (status === 0) return gettext("The upload failed: check the connection and try again.");
  return interpolate(gettext("The upload failed (%s)."), [status]);
}

// --- the tray -------------------------------------------------------------------------------

/* An item: {name, size, status: "uploading" | "ready" | "refused", progress (0…1), error,
 * data (the server's JSON once stored), xhr, bodySent, removed, sending (with a send not
 * acknowledged yet: not removable), el}. */

function refresh(item) {
  if (!item.el) {
    item.el = clone("attachment");
    item.parts = {
      thumb: item.el.querySelector(".sc-attachment-thumb"),
      icon: item.el.querySelector(".sc-attachment-icon"),
      name: item.el.querySelector(".sc-attachment-name"),
      meta: item.el.querySelector(".sc-attachment-meta"),
      error: item.el.querySelector(".sc-attachment-error"),
      progress: item.el.querySelector(".sc-attachment-progress"),
      remove: item.el.querySelector(".sc-attachment-remove"),
    };
    item.parts.remove.addEventListener("click", () => { removeItem(item); });
  }
  const p = item.parts;
  const data = item.data;
  item.el.setAttribute("data-status", item.status);
  if (data) item.el.setAttribute("data-id", data.id);
  p.name.textContent = item.name;
  p.name.title = item.name;
  const image = data && isImage(data);
  if (image && p.thumb.getAttribute("src") !== data.url) {
    p.thumb.src = data.url;
    if (data.width && data.height) { p.thumb.width = data.width; p.thumb.height = data.height; }
  }
  p.thumb.hidden = !image;
  p.icon.hidden = !(data && !image);
  p.progress.hidden = item.status !== "uploading";
  p.progress.value = item.progress || 0;
  p.progress.setAttribute("aria-label", interpolate(gettext("Uploading %s"), [item.name]));
  p.meta.textContent = item.status === "uploading"
    ? interpolate(gettext("Uploading… %s"), [percent.format(item.progress || 0)])
    : data ? describe(data) : "";
  p.meta.hidden = !p.meta.textContent;
  p.error.textContent = item.error || "";
  p.error.hidden = !item.error;
  p.remove.disabled = !!item.sending;
  p.remove.setAttribute("aria-label", interpolate(
    item.status === "uploading" ? gettext("Cancel the upload of %s") : gettext("Remove %s"), [item.name]));
  return item.el;
}

function renderTray() {
  if (!enabled) return;
  tray.replaceChildren(...items.map(refresh));
  tray.hidden = items.length === 0;
}

function refuse(item, text) {
  item.status = "refused";
  item.error = text;
  item.xhr = null;
  refresh(item);
  announce(interpolate(gettext("%(name)s was not attached: %(reason)s"), { name: item.name, reason: text }, true));
}

/** Files from the button, a paste or a drop: each goes into the tray and uploads at once. The
 * size and the count are checked here first, so a file the server would refuse is not sent. */
export function addFiles(files) {
  if (!enabled) return;
  Array.from(files || []).forEach((file) => {
    const item = { name: file.name || gettext("Pasted image"), size: file.size, status: "uploading", progress: 0, error: "", data: null };
    items.push(item);
    const kept = items.filter((i) => i.status !== "refused").length;
    if (file.size > limits.max_bytes) {
      refuse(item, interpolate(gettext("An attachment may be at most %s."), [formatSize(limits.max_bytes)]));
    } else if (kept > limits.per_message) {
      refuse(item, interpolate(ngettext("A message may have at most %s attachment.", "A message may have at most %s attachments.", limits.per_message), [limits.per_message]));
    } else {
      upload(item, file);
    }
  });
  renderTray();
}

function upload(item, file) {
  const body = new FormData();
  body.append("file", file, item.name);
  // XMLHttpRequest, not fetch: only it reports the progress of a request's body.
  const xhr = new XMLHttpRequest();
  item.xhr = xhr;
  xhr.open("POST", uploadUrl);
  xhr.responseType = "json";
  xhr.setRequestHeader("Accept", "application/json");
  xhr.setRequestHeader("X-CSRFToken", config.csrf_token);
  xhr.upload.addEventListener("progress", (event) => {
    if (!event.lengthComputable || item.removed) return;
    item.progress = event.loaded / event.total;
    refresh(item);
  });
  xhr.upload.addEventListener("load", () => { item.bodySent = true; });
  xhr.addEventListener("load", () => {
    item.xhr = null;
    const data = xhr.response;
    const stored = xhr.status === 201 && data && data.attachments && data.attachments[0];
    if (item.removed) {
      // Removed while the server was storing it: remove the stored file too.
      if (stored) deleteUpload(stored);
      return;
    }
    if (!stored) { refuse(item, refusalText(xhr.status, data)); return; }
    item.status = "ready";
    item.data = stored;
    item.progress = 1;
    refresh(item);
    announce(interpolate(gettext("%s attached"), [item.name]));
  });
  xhr.addEventListener("error", () => { if (!item.removed) refuse(item, refusalText(0, null)); });
  xhr.send(body);
}

function deleteUpload(data) {
  return fetch(data.url, {
    method: "DELETE",
    credentials: "same-origin",
    headers: { Accept: "application/json", "X-CSRFToken": config.csrf_token },
  }).catch(() => { /* the upload stays unsent on the server: nothing to show */ });
}

function removeItem(item) {
  const index = items.indexOf(item);
  if (index < 0 || item.sending) return;
  items.splice(index, 1);
  item.removed = true;
  if (item.xhr && !item.bodySent) item.xhr.abort(); // not all sent: the server stores nothing
  if (item.data) deleteUpload(item.data);
  const hadFocus = item.el && item.el.contains(document.activeElement);
  renderTray();
  announce(interpolate(gettext("%s removed"), [item.name]));
  if (hadFocus) {
    // The focus goes to the next attachment's remove button, else the one before, else the
    // file button: never lost to the page's body.
    const next = items[index] || items[index - 1];
    const button = next && next.parts.remove;
    if (button && !button.disabled) button.focus();
    else (fileButton || els.input).focus();
  }
}

/** What the next send takes: the stored attachments' JSON, and whether any still uploads. */
export function attachmentsToSend() {
  return {
    ready: items.filter((i) => i.status === "ready").map((i) => i.data),
    uploading: items.some((i) => i.status === "uploading"),
  };
}

/** A send naming these ids went: they are not removable until it is acknowledged or refused. */
export function markSending(ids) {
  items.forEach((i) => { if (i.data && ids.indexOf(i.data.id) >= 0) { i.sending = true; refresh(i); } });
}

/** Every frame, before replies.js handles it (the pending send is still known then): an ack of
 * a send with attachments empties them from the tray, with the refused files' chips; a refusal
 * makes them removable again (they stay for another model). */
export function noteFrame(frame) {
  if (!enabled || frame.client_id == null || (frame.type !== "ack" && frame.type !== "error")) return;
  const pending = state.pending.get(frame.client_id);
  const ids = pending && pending.frame && pending.frame.attachments;
  if (!ids || !ids.length) return;
  const named = (i) => i.data && ids.indexOf(i.data.id) >= 0;
  if (frame.type === "ack") {
    for (let k = items.length - 1; k >= 0; k--) {
      if (named(items[k]) || items[k].status === "refused") items.splice(k, 1);
    }
    renderTray();
  } else {
    items.forEach((i) => { if (named(i)) { i.sending = false; refresh(i); } });
  }
}

// --- paste, drop, the file button -----------------------------------------------------------

function hasFiles(dataTransfer) {
  return !!dataTransfer && Array.from(dataTransfer.types || []).indexOf("Files") >= 0;
}

export function wireAttachments() {
  if (!enabled) {
    if (fileButton) fileButton.hidden = true;
    return;
  }
  if (fileInput) {
    fileInput.accept = (limits.types || []).join(",");
    fileInput.addEventListener("change", () => {
      addFiles(fileInput.files);
      fileInput.value = ""; // the same file again is a change too
    });
    if (fileButton) fileButton.addEventListener("click", () => { fileInput.click(); });
  }
  els.input.addEventListener("paste", (event) => {
    const data = event.clipboardData;
    // Files alone (a screenshot): attach them. With text as well (cells copied from a
    // spreadsheet carry a picture of themselves too), the text is what was meant.
    if (!data || !data.files || !data.files.length || data.types.indexOf("text/plain") >= 0) return;
    event.preventDefault();
    addFiles(data.files);
  });
  const zones = [els.composer, els.messages];
  let depth = 0; // dragenter/dragleave pairs of the zones' children
  function dropping(on) { els.composer.toggleAttribute("data-dropping", on); }
  zones.forEach((zone) => {
    zone.addEventListener("dragenter", (event) => { if (hasFiles(event.dataTransfer)) { depth += 1; dropping(true); } });
    zone.addEventListener("dragleave", (event) => {
      if (!hasFiles(event.dataTransfer)) return;
      depth = Math.max(0, depth - 1);
      if (!depth) dropping(false);
    });
    zone.addEventListener("dragover", (event) => {
      if (!hasFiles(event.dataTransfer)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    zone.addEventListener("drop", (event) => {
      if (!hasFiles(event.dataTransfer)) return;
      event.preventDefault();
      event.stopPropagation();
      depth = 0;
      dropping(false);
      addFiles(event.dataTransfer.files);
      els.input.focus({ preventScroll: true });
    });
  });
  // A file dropped anywhere else would make the browser leave the page to show it.
  window.addEventListener("dragover", (event) => { if (hasFiles(event.dataTransfer)) event.preventDefault(); });
  window.addEventListener("drop", (event) => {
    if (!hasFiles(event.dataTransfer)) return;
    event.preventDefault();
    depth = 0;
    dropping(false);
  });
}

// --- in the thread --------------------------------------------------------------------------

/** A message's attachments after its text: thumbnails linking to the full image, PDF chips
 * linking to the file. Nothing when it has none. */
export function showAttachments(body, list) {
  if (!list || !list.length || !$("sc-tpl-message-attachments")) return;
  const gallery = clone("message-attachments");
  list.forEach((data) => {
    const li = clone("message-attachment");
    const link = li.querySelector("a");
    const thumb = li.querySelector(".sc-attachment-thumb");
    link.href = data.url;
    link.title = data.filename;
    li.querySelector(".sc-attachment-name").textContent = data.filename;
    li.querySelector(".sc-attachment-meta").textContent = describe(data);
    if (isImage(data)) {
      thumb.src = data.url;
      thumb.alt = data.filename;
      if (data.width && data.height) { thumb.width = data.width; thumb.height = data.height; }
      li.querySelector(".sc-attachment-icon").remove();
      li.querySelector(".sc-attachment-text").remove();
    } else {
      thumb.remove();
      link.setAttribute("download", data.filename); // served as a download anyway
      link.removeAttribute("target");
    }
    gallery.append(li);
  });
  body.after(gallery);
}
