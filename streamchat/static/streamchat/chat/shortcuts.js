/* Keyboard shortcuts and their help dialog (docs/ui.md), and the "Skip to composer" link.
 *
 * Ctrl/⌘+Shift+O a new chat; Shift+Esc or "/" the message box; Esc stops a streaming reply;
 * "?" this list. "/" and "?" only outside a text field (there they are text); Esc first closes
 * what is open (a dialog, the drawer, an edit box), whose own handlers take it. */
import { els, showComposerError } from "./page.js";
import { stopReply } from "./composer.js";
import { newChat } from "./conversations.js";
import { closeSidebar } from "./sidebar.js";
import { liveReply } from "./tree.js";

// Optional: a host's template may leave them out.
const help = document.getElementById("sc-help-dialog");
const helpButton = document.getElementById("sc-help-open");
const skip = document.getElementById("sc-skip");

function inTextField(target) {
  return !!(target.closest && target.closest("input, textarea, select, [contenteditable]"));
}

function openHelp() {
  if (help && !help.open) help.showModal();
}

function onKeydown(event) {
  if (event.defaultPrevented || event.isComposing) return;
  const mod = event.ctrlKey || event.metaKey;
  const dialogOpen = !!document.querySelector("dialog[open]");
  if (mod && event.shiftKey && !event.altKey && event.code === "KeyO") {
    if (dialogOpen) return;
    event.preventDefault();
    showComposerError("");
    closeSidebar();
    newChat(false);
    return;
  }
  if (event.key === "Escape" && !mod && !event.altKey) {
    if (dialogOpen) return; // the dialog closes
    if (event.shiftKey) {
      event.preventDefault();
      closeSidebar();
      els.input.focus();
    } else if (liveReply()) {
      event.preventDefault();
      stopReply();
    }
    return;
  }
  if (mod || event.altKey || dialogOpen || inTextField(event.target)) return;
  if (event.key === "?") {
    event.preventDefault();
    openHelp();
  } else if (event.key === "/") {
    event.preventDefault();
    els.input.focus();
  }
}

export function wireShortcuts() {
  // Focus the box without following the link: the address keeps no "#sc-input".
  if (skip) skip.addEventListener("click", (event) => { event.preventDefault(); els.input.focus(); });
  if (helpButton) helpButton.addEventListener("click", openHelp);
  document.addEventListener("keydown", onKeydown);
}
