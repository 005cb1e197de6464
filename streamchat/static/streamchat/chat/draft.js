/* The message box's text survives a reload until the server acknowledges it: it is kept in
 * localStorage, per user. */
import { config, els } from "./page.js";

const draftKey = "streamchat:" + config.user + ":draft";

export function saveDraft(text) {
  try { if (text) localStorage.setItem(draftKey, text); else localStorage.removeItem(draftKey); } catch (e) { /* private mode */ }
}

export function loadDraft() {
  try { return localStorage.getItem(draftKey) || ""; } catch (e) { return ""; }
}

/** The box grows with its text, up to 40% of the window. */
export function autosize() {
  els.input.style.height = "auto";
  els.input.style.height = Math.min(els.input.scrollHeight + 2, window.innerHeight * 0.4) + "px";
}
